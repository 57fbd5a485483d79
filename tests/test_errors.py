"""Bad input → one clear line on stderr, a non-zero exit code, and nothing written. (Off a terminal, a command
also prints its steps on stderr, one timestamped line each, before the error: those are not part of it.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import error_lines, run_cli


def _one_line_error(proc, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, f"expected one line, got:\n{proc.stderr}"
    assert lines[0].startswith("error:"), lines[0]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_nonexistent_model_path(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("quantize", str(tmp_path / "no" / "such-model"), "--method", "none", "--out", str(out))
    _one_line_error(proc, "not found")
    assert not out.exists()


def test_nonexistent_hub_model(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("quantize", "nobody-xyz/no-such-model", "--method", "none", "--out", str(out))
    _one_line_error(proc, "nobody-xyz/no-such-model", "hub")
    assert not out.exists()


def test_unknown_method(tiny_model, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("quantize", str(tiny_model), "--method", "magic", "--out", str(out))
    _one_line_error(proc, "unknown method 'magic'", "rtn")
    assert not out.exists()


def test_unknown_backend(tiny_model, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("quantize", str(tiny_model), "--method", "rtn", "--backend", "nope", "--out", str(out))
    _one_line_error(proc, "no backend 'nope'")
    assert not out.exists()


def test_unsupported_bits(tiny_model, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("quantize", str(tiny_model), "--method", "rtn", "--bits", "3", "--out", str(out))
    _one_line_error(proc, "--bits 4 or 8", "not 3")
    assert not out.exists()


def test_bits_for_none(tiny_model, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("quantize", str(tiny_model), "--method", "none", "--bits", "4", "--out", str(out))
    _one_line_error(proc, "none/transformers takes no --bits")
    assert not out.exists()


def test_group_size_not_dividing(tiny_model, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("quantize", str(tiny_model), "--method", "rtn", "--group-size", "96", "--out", str(out))
    _one_line_error(proc, "--group-size 96 does not divide layer model.layers.0", "in_features 256")
    assert not out.exists()


def test_bad_dtype(tiny_model, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("quantize", str(tiny_model), "--method", "none", "--dtype", "fp8", "--out", str(out))
    _one_line_error(proc, "dtype")
    assert not out.exists()


def test_existing_out_is_not_overwritten(tiny_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = run_cli("quantize", str(tiny_model), "--method", "none", "--out", str(out))
    _one_line_error(proc, "already exists", "--force")
    assert (out / "keep.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def tiny_artifact(tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("art") / "none"
    proc = run_cli("quantize", str(tiny_model), "--method", "none", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_artifact_without_manifest(tiny_model, tmp_path):
    results = tmp_path / "r.jsonl"
    proc = run_cli("bench", str(tiny_model), "--results", str(results))
    _one_line_error(proc, "no quantlab.json", "not a quantlab artifact")
    assert not results.exists()


def test_corrupted_manifest(tiny_artifact, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_artifact, broken)
    (broken / "quantlab.json").write_text('{"schema_version": 1, "spec": ')
    results = tmp_path / "r.jsonl"
    proc = run_cli("bench", str(broken), "--results", str(results))
    _one_line_error(proc, "corrupted manifest")
    assert not results.exists()


def test_manifest_with_wrong_fields(tiny_artifact, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_artifact, broken)
    data = json.loads((broken / "quantlab.json").read_text())
    data["surprise"] = 1
    (broken / "quantlab.json").write_text(json.dumps(data))
    proc = run_cli("bench", str(broken), "--results", str(tmp_path / "r.jsonl"))
    _one_line_error(proc, "corrupted manifest", "surprise")


def test_artifact_with_missing_file(tiny_artifact, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_artifact, broken)
    (broken / "model.safetensors").unlink()
    proc = run_cli("bench", str(broken), "--results", str(tmp_path / "r.jsonl"))
    _one_line_error(proc, "incomplete", "model.safetensors")


def test_unknown_rig(tiny_artifact, tmp_path):
    results = tmp_path / "r.jsonl"
    proc = run_cli("bench", str(tiny_artifact), "--rig", "moon-cluster", "--results", str(results))
    _one_line_error(proc, "unknown rig 'moon-cluster'", "h100")
    assert not results.exists()


def test_gpu_rig_on_cpu_host(tiny_artifact, tmp_path):
    results = tmp_path / "r.jsonl"
    proc = run_cli("bench", str(tiny_artifact), "--rig", "h100", "--device", "cpu", "--results", str(results))
    _one_line_error(proc, "GPU rig")
    assert not results.exists()


def test_missing_dataset_path(tiny_artifact, tmp_path):
    results = tmp_path / "r.jsonl"
    proc = run_cli("bench", str(tiny_artifact), "--dataset", str(tmp_path / "nope.txt"), "--results", str(results))
    _one_line_error(proc, "does not exist")
    assert not results.exists()


def test_unknown_dataset_name(tiny_artifact, tmp_path):
    proc = run_cli("bench", str(tiny_artifact), "--dataset", "imagenet", "--results", str(tmp_path / "r.jsonl"))
    _one_line_error(proc, "unknown dataset 'imagenet'")


def test_missing_results_file(tmp_path):
    proc = run_cli("report", str(tmp_path / "none.jsonl"))
    _one_line_error(proc, "does not exist")


def test_debug_shows_traceback(tmp_path):
    proc = run_cli("--debug", "quantize", str(tmp_path / "nope"), "--method", "none", "--out", str(tmp_path / "o"))
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_baseline_of_another_model_is_refused_before_any_work(tiny_artifact, tmp_path):
    from quantlab.quantizer import quantize
    from quantlab.spec import MethodSpec
    from tests.conftest import _train_tokenizer, make_tiny_llama

    other_tok = tmp_path / "tok"
    _train_tokenizer(other_tok, vocab_size=768)
    other = make_tiny_llama(tmp_path / "other", other_tok)
    other_art = tmp_path / "other-art"
    quantize(str(other), MethodSpec(method="none"), other_art)
    results = tmp_path / "r.jsonl"
    proc = run_cli("bench", str(tiny_artifact), "--baseline", str(other_art), "--results", str(results))
    _one_line_error(proc, "tokenize the dataset differently")
    assert not results.exists()


def test_a_library_error_is_quoted_in_one_line_even_when_its_message_is_empty_or_a_traceback(monkeypatch):
    """What the hand-trimmed quotes got wrong: an empty message raised IndexError instead of the report."""
    import ray

    from quantlab.errors import exception_line
    from quantlab.sweep import cluster

    assert exception_line(ValueError("")) == "ValueError"
    assert exception_line(RuntimeError("  \n")) == "RuntimeError"
    assert (
        exception_line(RuntimeError("Traceback ...\n  File x\nValueError: bad"), last=True)
        == "RuntimeError: ValueError: bad"
    )

    def refuse(**_):
        raise RuntimeError("")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(cluster.ClusterError, match=r"^ray: cannot join local: RuntimeError$"):
        cluster.connect("local")


def test_a_key_with_a_line_break_is_quoted_and_a_ray_setting_must_be_finite():
    from pydantic import BaseModel, ConfigDict, ValidationError

    from quantlab.errors import describe_validation_error
    from quantlab.sweep.cluster import RaySettings

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    with pytest.raises(ValidationError) as caught:
        Strict.model_validate({"bad\nkey": 1})
    assert describe_validation_error(caught.value).splitlines() == ["'bad\\nkey': Extra inputs are not permitted"]
    with pytest.raises(ValidationError, match="finite"):
        RaySettings(cpus_per_cell=float("inf"))
