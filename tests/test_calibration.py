from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from quantlab.calibration import calibration_samples
from quantlab.corpus import tokenize
from quantlab.errors import DatasetError, SpecError
from quantlab.methods import get_backend
from quantlab.spec import Calibration, MethodSpec


def test_samples_are_distinct_windows_of_the_validation_stream(tiny_tokenizer):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    samples, record = calibration_samples(tok, Calibration(n_samples=8, seq_len=64, seed=3))
    assert samples.shape == (8, 64) and samples.dtype == np.int64
    assert len({tuple(row) for row in samples}) == 8
    from quantlab.corpus import load_text

    stream = tokenize(tok, load_text("embedded", "validation")[0], None)
    starts = [
        next(i for i in range(0, len(stream) - 63, 64) if np.array_equal(stream[i : i + 64], row)) for row in samples
    ]
    assert starts == sorted(starts), "windows come from the stream, in stream order"
    assert record.n_samples == 8 and record.seq_len == 64 and record.seed == 3
    assert "validation" in record.description


def test_seed_decides_and_fingerprint_tells(tiny_tokenizer):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    a, ra = calibration_samples(tok, Calibration(n_samples=4, seq_len=32, seed=0))
    b, rb = calibration_samples(tok, Calibration(n_samples=4, seq_len=32, seed=0))
    c, rc = calibration_samples(tok, Calibration(n_samples=4, seq_len=32, seed=1))
    assert np.array_equal(a, b) and ra.token_fingerprint == rb.token_fingerprint
    assert not np.array_equal(a, c) and ra.token_fingerprint != rc.token_fingerprint


def test_too_little_calibration_text(tiny_tokenizer, tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("a few words only " * 20)
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    with pytest.raises(DatasetError, match="fewer than the 64 samples"):
        calibration_samples(tok, Calibration(dataset=str(small)))


@pytest.mark.parametrize(
    ("method", "spec", "needle"),
    [
        ("rtn", {"calibration": Calibration()}, "data-free"),
        ("rtn", {"damp": 0.1}, "takes no --damp"),
        ("awq", {"act_order": "group"}, "takes no --act-order"),
        ("gptq", {"n_grid": 10}, "takes no --n-grid"),
        ("awq", {"group_size": -1}, "positive --group-size"),
        ("gptq", {"bits": 2}, "not 2"),
    ],
)
def test_options_a_backend_does_not_take_are_refused(method, spec, needle):
    with pytest.raises(SpecError, match=needle):
        get_backend(method).normalize(MethodSpec(method=method, **spec))


def test_calibrated_defaults_are_recorded():
    gptq = get_backend("gptq").normalize(MethodSpec(method="gptq"))
    assert (gptq.bits, gptq.group_size, gptq.symmetric, gptq.act_order, gptq.damp) == (4, 128, True, "static", 0.01)
    assert gptq.calibration == Calibration()
    awq = get_backend("awq").normalize(MethodSpec(method="awq"))
    assert (awq.symmetric, awq.n_grid) == (False, 20)
