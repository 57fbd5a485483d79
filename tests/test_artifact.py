"""The artifact directory is all-or-nothing, and its manifest says what it is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from quantlab.artifact import MANIFEST, TMP_MARK, building, load_artifact, verify_hashes
from quantlab.errors import ArtifactError
from quantlab.quantizer import quantize
from quantlab.spec import MethodSpec


def test_failure_inside_build_leaves_nothing(tmp_path):
    out = tmp_path / "sub" / "art"
    with pytest.raises(RuntimeError), building(out) as tmp:
        (tmp / "weights.safetensors").write_bytes(b"x" * 100)
        raise RuntimeError("backend crashed")
    assert not out.exists()
    assert not (tmp_path / "sub").exists(), "the parent created for --out is removed again"


def test_build_without_manifest_is_refused(tmp_path):
    out = tmp_path / "art"
    with pytest.raises(ArtifactError), building(out) as tmp:
        (tmp / "weights.safetensors").write_bytes(b"x")
    assert not out.exists()


def test_none_artifact_manifest(tiny_model, tmp_path):
    artifact = quantize(str(tiny_model), MethodSpec(method="none", dtype="bf16"), tmp_path / "a")
    m = artifact.manifest
    assert m.spec.method == "none" and m.spec.backend == "transformers" and m.spec.dtype == "bf16"
    assert m.format == "safetensors bf16"
    assert m.source.kind == "local" and len(m.source.content_sha256) == 64
    assert {f.path for f in m.files} >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert m.weight_bytes == (tmp_path / "a" / "model.safetensors").stat().st_size
    assert m.libraries["transformers"] and m.libraries["torch"]
    assert m.quantize_seconds > 0
    assert verify_hashes(artifact) == []
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]
    assert load_artifact(tmp_path / "a").digest == artifact.digest


def test_auto_dtype_records_the_source_dtype(tiny_model, tmp_path):
    artifact = quantize(str(tiny_model), MethodSpec(method="none"), tmp_path / "a")
    assert artifact.manifest.spec.dtype == "fp32"


def test_force_replaces_atomically(tiny_model, tmp_path):
    out = tmp_path / "a"
    first = quantize(str(tiny_model), MethodSpec(method="none", dtype="fp32"), out)
    second = quantize(str(tiny_model), MethodSpec(method="none", dtype="bf16"), out, force=True)
    assert second.manifest.spec.dtype == "bf16" and first.digest != second.digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_hash_verification_finds_tampering(tiny_model, tmp_path):
    artifact = quantize(str(tiny_model), MethodSpec(method="none"), tmp_path / "a")
    config = tmp_path / "a" / "config.json"
    data = bytearray(config.read_bytes())
    data[1] ^= 0x01  # same size, other bytes: only a hash can tell
    config.write_bytes(bytes(data))
    assert verify_hashes(artifact) == ["config.json"]


def _building(parent, name: str, *, writing: bool) -> bool:
    """The temp dir exists (and, if `writing`, already holds some written bytes but no manifest yet)."""
    for tmp in (p for p in parent.iterdir() if p.name.startswith(f".{name}{TMP_MARK}")):
        if not writing:
            return True
        files = [f for f in tmp.rglob("*") if f.is_file()]
        if any(f.stat().st_size > 0 for f in files) and not (tmp / MANIFEST).exists():
            return True
    return False


def _kill_when_building(cmd: list[str], parent, name: str, *, writing: bool = False):
    """SIGKILL as soon as the build is under way: at the temp dir's creation, or once it is half-written. The
    moment is observed, not a fixed delay, which a fast host can outrun."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if _building(parent, name, writing=writing):
            break
        if proc.poll() is not None:
            pytest.fail("quantize finished before it could be killed mid-run")
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc


@pytest.mark.slow  # a whole quantization killed in a fresh process, twice
@pytest.mark.parametrize("writing", [False, True], ids=["at-start", "mid-write"])
def test_sigkill_mid_quantize_leaves_nothing(wide_model, tmp_path, writing):
    out = tmp_path / "art"
    cmd = [sys.executable, "-m", "quantlab.cli", "quantize", str(wide_model), "--method", "none", "--out", str(out)]
    proc = _kill_when_building(cmd, tmp_path, "art", writing=writing)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists(), "a killed quantize must leave nothing at --out"
    leftovers = [p for p in tmp_path.iterdir() if TMP_MARK in p.name]
    assert leftovers, "the killed run's temp dir is where the partial work went"
    # The next run sweeps the dead run's temp dir and completes.
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert (out / MANIFEST).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
