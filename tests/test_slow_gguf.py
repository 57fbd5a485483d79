"""GGUF on the real default model (SmolLM2-135M, hidden 576: k-quants fall back per tensor here).

Evaluation: the first 2048 tokens of WikiText-2 test at ctx 512, identical ids for both runtimes; the imatrix
uses 16 × 256 calibration tokens of WikiText-2 valid. Artifacts and scores come from the session cache
(conftest.SmolCache).
"""

from __future__ import annotations

import itertools

import pytest

from quantlab.report.notes import gguf_ordering_notes
from quantlab.spec import Calibration, MethodSpec

pytestmark = pytest.mark.slow

LADDER = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"]


SPECS = {
    "fp32": MethodSpec(method="none", dtype="fp32"),
    **{name: MethodSpec(method="gguf", scheme=name) for name in ["F16", *LADDER]},
    "Q4_K_M-imatrix": MethodSpec(
        method="gguf", scheme="Q4_K_M", calibration=Calibration(dataset="embedded", n_samples=16, seq_len=256)
    ),
}


@pytest.fixture(scope="module")
def made(smol):
    return smol.artifacts(SPECS)


@pytest.fixture(scope="module")
def results(smol):
    return smol.quality(SPECS)


def test_f16_gguf_equals_hf_fp32_on_identical_ids(results):
    vs = results["F16"].quality.vs_baseline
    assert abs(vs.delta_ppl_pct) <= 0.1, vs
    assert vs.kld_mean <= 1e-3, vs


def test_file_sizes_strictly_fall_along_the_ladder(made):
    sizes = [made[name].manifest.weight_bytes for name in LADDER]
    assert all(a > b for a, b in itertools.pairwise(sizes)), dict(zip(LADDER, sizes, strict=True))


def test_fallbacks_on_hidden_576_are_recorded(made):
    g = made["Q4_K_M"].manifest.gguf
    assert g.fallbacks, "hidden 576 is not a multiple of 256: llama.cpp must have fallen back somewhere"
    assert any("not a multiple of 256" in f for f in g.fallbacks)


def test_imatrix_does_not_hurt_q4_k_m(results):
    with_imatrix = results["Q4_K_M-imatrix"].quality.vs_baseline.kld_mean
    assert with_imatrix <= results["Q4_K_M"].quality.vs_baseline.kld_mean


def test_every_broken_neighbour_pair_is_explained_in_the_report(results):
    ladder = [results[name] for name in LADDER]
    notes = gguf_ordering_notes(list(results.values()))
    for big, small in itertools.pairwise(ladder):
        if small.quality.vs_baseline.kld_mean < big.quality.vs_baseline.kld_mean:
            assert any(small.artifact.label in n and big.artifact.label in n and "Written:" in n for n in notes), (
                big.artifact.label,
                small.artifact.label,
                notes,
            )
