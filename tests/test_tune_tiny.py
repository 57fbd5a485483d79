"""`quantlab tune` end to end on a tiny random Llama whose widths take every k-quant: the artifact stays under its
budget, is an ordinary GGUF artifact whose manifest records the allocation, the measurements resume after a kill,
and impossible requests are refused before any work."""

from __future__ import annotations

import json

import pytest

from quantlab.errors import QuantizationError, SpecError
from quantlab.llamacpp import ops
from quantlab.methods import gguf
from quantlab.methods.gguf import check_tensor_types
from quantlab.spec import Calibration
from quantlab.tune.tuner import TuneRequest, tune

from .conftest import run_cli

pytestmark = pytest.mark.slow  # the real default model's tokenizer (llama.cpp's converter knows its hash)

CALIB = Calibration(dataset="embedded", n_samples=4, seq_len=128)
SEARCH = {"types": ["Q2_K", "Q4_K", "Q6_K", "Q8_0"], "bands": 1, "windows": 1, "ctx": 128}


@pytest.fixture(scope="module")
def tuned(gguf_tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    lines: list[str] = []
    request = TuneRequest(budget="12MB", **SEARCH)
    artifact = tune(str(gguf_tiny_model), root / "a", request, CALIB, lines.append, root=root / "work")
    return artifact, lines, root


def test_the_artifact_fits_its_budget_and_records_its_allocation(tuned):
    artifact, lines, _ = tuned
    m = artifact.manifest
    written = (artifact.path / m.gguf.file).stat().st_size
    assert written <= 12_000_000 and m.gguf.tune.max_bytes == 12_000_000
    assert m.gguf.tune.predicted_bytes >= written  # the size model is an upper bound (alignment counted in full)
    tune_record = m.gguf.tune
    assert {g.type for g in tune_record.groups} <= set(SEARCH["types"])
    assert sum(g.tensors for g in tune_record.groups) == len(m.spec.tensor_types)
    # the manifest's census is what the allocation asked for, tensor by tensor
    asked = {}
    for entry in m.spec.tensor_types:
        kind = entry.split("=")[1]
        asked[kind] = asked.get(kind, 0) + 1
    assert {k: v for k, v in m.gguf.tensor_types.items() if k != "F32"} == asked
    assert m.spec.pure and (m.gguf.imatrix is not None) == bool(m.spec.imatrix)
    # with or without the importance matrix per group, as the spec makes the file
    plain = [g for g in tune_record.groups if not g.imatrix]
    assert bool(m.spec.imatrix) == (len(plain) < len(tune_record.groups))
    assert len(m.spec.imatrix_exclude or []) <= sum(g.tensors for g in plain)
    assert tune_record.imatrix.split(":")[0] in {"per group", "all with", "all without"}
    assert any(line.startswith("sensitivity 1/") for line in lines)


def test_a_bigger_budget_buys_lower_predicted_kld_from_the_same_measurements(tuned, gguf_tiny_model):
    artifact, _, root = tuned
    lines: list[str] = []
    request = TuneRequest(budget="20MB", **SEARCH)
    bigger = tune(str(gguf_tiny_model), root / "b", request, CALIB, lines.append, root=root / "work")
    assert not any(line.startswith("sensitivity 1/") for line in lines)  # read back, not measured again
    assert bigger.manifest.gguf.tune.predicted_kld < artifact.manifest.gguf.tune.predicted_kld
    assert bigger.manifest.weight_bytes > artifact.manifest.weight_bytes


def test_a_killed_tune_measures_only_what_it_lacks(tuned, gguf_tiny_model, monkeypatch):
    _, _, root = tuned
    store = next((root / "work").glob("*/sensitivity.ndjson"))
    rows = store.read_text().splitlines()
    kept = rows[: len(rows) // 2]
    store.write_text("\n".join(kept) + '\n{"group": "cut mid-li')  # a line half-written when the kill came
    monkeypatch.setattr(gguf, "_IMATRIX", {})  # a new process: only the work folder remembers
    lines: list[str] = []
    tune(
        str(gguf_tiny_model), root / "c", TuneRequest(budget="12MB", **SEARCH), CALIB, lines.append, root=root / "work"
    )
    assert any(line.startswith("reusing the importance matrix in") for line in lines)
    measured = [line for line in lines if line.startswith(("sensitivity ", "without imatrix ")) and " at " in line]
    after = store.read_text().splitlines()
    assert after[len(kept)] == '{"group": "cut mid-li'  # the cut line stays, on a line of its own
    new = [_key(line) for line in after[len(kept) + 1 :]]
    assert len(measured) == len(new) and not set(new) & {_key(line) for line in kept[1:]}  # nothing measured twice
    # every figure with the matrix is back (those without it are the ones this budget's allocation chose)
    assert {k for k in new if k[2]} == {_key(line) for line in rows[len(kept) :] if _key(line)[2]}
    from quantlab.tune.sensitivity import Store

    key = json.loads(rows[0])["key"]
    back = Store(store, {k: v for k, v in key.items() if k != "protocol"})
    assert len(back.found) + len(back.plain) == len(after) - 2  # the key line and the cut one aside
    logged = (store.parent / "tune.log").read_text()
    assert logged.count("sensitivity 1/") == 1 and "found in" in logged  # both runs' steps, with their times


def _key(line: str) -> tuple[str, str, bool]:
    row = json.loads(line)
    return row["group"], row["type"], row.get("imatrix", True)


def test_impossible_requests_fail_before_work(tuned, gguf_tiny_model, tmp_path):
    _, _, root = tuned
    model, work = str(gguf_tiny_model), root / "work"
    with pytest.raises(QuantizationError, match="smallest allocation"):
        tune(model, tmp_path / "x", TuneRequest(budget="1MB", **SEARCH), CALIB, lambda _: None, root=work)
    with pytest.raises(SpecError, match="unknown ggml types"):
        tune(model, tmp_path / "y", TuneRequest(budget="9MB", types=["Q9_9"]), CALIB, lambda _: None, root=work)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_tensor_types_a_tensor_cannot_take_are_refused():
    info = {"tensors": [{"name": "blk.0.attn_q.weight", "shape": [576, 576]}]}
    check_tensor_types(info, [("blk.0.attn_q.weight", "Q4_0")])
    with pytest.raises(SpecError, match="not a multiple of Q4_K"):
        check_tensor_types(info, [("blk.0.attn_q.weight", "Q4_K")])
    with pytest.raises(SpecError, match="not a weight"):
        check_tensor_types(info, [("blk.9.attn_q.weight", "Q4_0")])


def test_cli_tune_prints_one_line_errors(gguf_tiny_model, tmp_path):
    proc = run_cli("tune", str(gguf_tiny_model), "--out", str(tmp_path / "z"), "--budget", "ten")
    assert proc.returncode == 1 and "--budget 'ten' is not a size" in proc.stderr
    proc = run_cli("tune", str(gguf_tiny_model), "--out", str(tmp_path / "z"))
    assert proc.returncode == 1 and "give one of --budget" in proc.stderr


def test_the_recorded_spec_remakes_the_same_file(tuned, tmp_path):
    from quantlab.quantizer import quantize

    artifact, _, _ = tuned
    # as a user would ask for it: the recorded spec less what the backend filled in (dtype: the converter's)
    asked = artifact.manifest.spec.model_copy(update={"dtype": "auto", "backend": None})
    again = quantize(artifact.manifest.source.path, asked, tmp_path / "again")
    assert (
        ops.inspect(again.path / again.manifest.gguf.file)["tensors"]
        == ops.inspect(artifact.path / artifact.manifest.gguf.file)["tensors"]
    )
    assert again.manifest.spec == artifact.manifest.spec and again.manifest.gguf.tune is None
