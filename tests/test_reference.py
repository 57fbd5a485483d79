"""Baseline reference files: the metrics read from one equal the in-memory comparison's bit for bit, any
safetensors reader opens one, a damaged or foreign one is refused in one line before anything loads, and a bench
never holds its baseline while a cell is loaded."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from quantlab.bench.quality import log_probs, score, windows
from quantlab.corpus import token_fingerprint
from quantlab.errors import ReferenceFileError
from quantlab.reference import Reference, ReferenceHeader, content_key, reference_name, write_reference
from quantlab.results import read_results
from quantlab.results.metrics import PROTOCOL
from quantlab.results.provenance import TextSource
from tests.conftest import error_lines, run_cli
from tests.test_quality import FixedSession

VOCAB, CTX = 256, 16


def _write(tmp_path, base: FixedSession, ids: np.ndarray, ctx: int = CTX, name: str = "ref.safetensors"):
    scored = np.stack(windows(ids, ctx))
    header = ReferenceHeader(
        protocol=PROTOCOL,
        ctx=ctx,
        windows=len(scored),
        vocab=VOCAB,
        tokens_fingerprint=token_fingerprint(scored.ravel()),
        text=TextSource(name="t", kind="local", split=None, description="test", text_sha256="0" * 64, n_chars=1),
        tokenizer="tok",
        baseline_digest="b" * 16,
        baseline_label="base",
        baseline_load="fixed tables",
        quantlab_version="0",
    )
    rows = (log_probs(base.logits(w)).numpy() for w in scored)
    return Reference.open(write_reference(tmp_path / name, header, scored, rows))


@pytest.fixture
def models():
    torch.manual_seed(0)
    base = torch.randn(VOCAB, VOCAB) * 3
    ids = np.random.default_rng(0).integers(0, VOCAB, size=5 * CTX + 7)
    return FixedSession(base), FixedSession(base + 0.1 * torch.randn(VOCAB, VOCAB)), ids


def test_metrics_from_a_reference_equal_the_in_memory_ones_exactly(tmp_path, models):
    base, cell, ids = models
    ref = _write(tmp_path, base, ids)
    from_file = score(cell, ids, CTX, baseline=ref, baseline_digest="b", baseline_label="base")
    in_memory = score(cell, ids, CTX, baseline=base, baseline_digest="b", baseline_label="base")
    assert from_file.model_dump() == in_memory.model_dump()
    assert from_file.vs_baseline.kld_mean > 0 and from_file.vs_baseline.top1_agreement < 1


def test_any_safetensors_reader_opens_it(tmp_path, models):
    from safetensors.numpy import load_file

    base, _, ids = models
    ref = _write(tmp_path, base, ids)
    tensors = load_file(str(ref.path))
    assert (tensors["ids"] == np.stack(windows(ids, CTX))).all()
    assert tensors["logprobs"].shape == (5 * (CTX - 1), VOCAB)
    assert (tensors["logprobs"][CTX - 1 : 2 * (CTX - 1)] == ref.logprobs(1)).all()
    assert (ref.ids() == tensors["ids"]).all()


def test_its_name_is_what_its_numbers_depend_on(tmp_path, models):
    base, _, ids = models
    header = _write(tmp_path, base, ids).header
    assert reference_name(header.key()) == reference_name(header.key())
    again = header.model_copy(update={"quantlab_version": "9", "baseline_label": "x", "window_sha256": []})
    assert again.key() == header.key()
    assert header.model_copy(update={"baseline_digest": "c" * 16}).key() != header.key()
    assert header.model_copy(update={"baseline_load": "on cuda"}).key() != header.key()
    other_ctx = content_key(PROTOCOL, CTX + 1, header.windows, header.tokens_fingerprint, "b" * 16, "fixed tables")
    assert other_ctx != header.key()


def test_another_stream_ctx_or_protocol_is_refused(tmp_path, models):
    base, _, ids = models
    ref = _write(tmp_path, base, ids)
    ref.check_stream(ids, CTX, PROTOCOL)
    with pytest.raises(ReferenceFileError, match="made at --ctx 16"):
        ref.check_stream(ids, CTX * 2, PROTOCOL)
    with pytest.raises(ReferenceFileError, match="another token stream"):
        ref.check_stream(ids[::-1].copy(), CTX, PROTOCOL)
    with pytest.raises(ReferenceFileError, match="another token stream"):
        ref.check_stream(ids[: 4 * CTX], CTX, PROTOCOL)
    with pytest.raises(ReferenceFileError, match="protocol"):
        ref.check_stream(ids, CTX, "another protocol")


def _damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "cut":
        return bytes(data[: len(data) - 100])
    if how == "padded":
        return bytes(data + b"\0" * 4)
    if how == "header":
        data[8] = ord("x")  # the header's opening brace
        return bytes(data)
    if how == "not-ours":
        text = json.dumps({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
        return struct.pack("<Q", len(text)) + text + b"\0" * 4
    if how == "garbage":
        return b"\xff" * 64
    raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("cut", "cut short or padded"),
        ("padded", "cut short or padded"),
        ("header", "not valid JSON"),
        ("not-ours", "not a quantlab reference"),
        ("garbage", "not a safetensors reference"),
    ],
)
def test_a_damaged_file_is_refused_when_opened(tmp_path, models, how, message):
    base, _, ids = models
    path = _write(tmp_path, base, ids).path
    path.write_bytes(_damage(path, how))
    with pytest.raises(ReferenceFileError, match=message) as caught:
        Reference.open(path)
    assert "\n" not in str(caught.value)


def test_corrupt_rows_are_refused_when_read(tmp_path, models):
    base, cell, ids = models
    path = _write(tmp_path, base, ids).path
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the last window's rows
    path.write_bytes(bytes(data))
    ref = Reference.open(path)
    ref.logprobs(0)
    with pytest.raises(ReferenceFileError, match="window 4's log-probabilities are corrupt"):
        score(cell, ids, CTX, baseline=ref)


def test_blocks_are_the_window_and_a_corrupt_one_raises_after_its_last(tmp_path, models):
    """Scoring streams a window's rows in blocks: together they are the window, and a damaged window is
    refused once its last block is read, before its figures can be used."""
    base, _, ids = models
    ref = _write(tmp_path, base, ids)
    blocks = list(ref.logprob_blocks(2, rows=7))
    assert [len(b) for b in blocks[:-1]] == [7] * (len(blocks) - 1) and 0 < len(blocks[-1]) <= 7
    assert (np.concatenate(blocks) == ref.logprobs(2)).all()
    data = bytearray(ref.path.read_bytes())
    data[-5] ^= 0xFF  # inside the last window's rows
    ref.path.write_bytes(bytes(data))
    damaged = Reference.open(ref.path).logprob_blocks(4, rows=7)
    for _ in range(len(blocks)):
        next(damaged)  # every block is handed out ...
    with pytest.raises(ReferenceFileError, match="window 4's log-probabilities are corrupt"):
        next(damaged)  # ... and the check comes before the window counts as read


def test_a_failed_write_leaves_nothing(tmp_path, models):
    base, _, ids = models
    scored = np.stack(windows(ids, CTX))
    header = _write(tmp_path, base, ids).header.model_copy(update={"window_sha256": []})
    short = (np.zeros((CTX - 1, VOCAB), dtype=np.float32) for _ in range(2))
    with pytest.raises(ReferenceFileError, match="got 2 windows"):
        write_reference(tmp_path / "new.safetensors", header, scored, short)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.safetensors"]


def test_a_window_failing_while_the_last_is_written_leaves_nothing(tmp_path, models):
    """The rows of one window are written on a thread while the next is computed: a failure in that compute
    (here a window of the wrong width, then a raised error) still leaves no file, and the writer is done."""
    import threading

    base, _, ids = models
    scored = np.stack(windows(ids, CTX))
    header = _write(tmp_path, base, ids).header.model_copy(update={"window_sha256": []})

    def wrong_width():
        yield np.zeros((CTX - 1, VOCAB), dtype=np.float32)
        yield np.zeros((CTX - 1, VOCAB + 1), dtype=np.float32)

    def failing():
        yield np.zeros((CTX - 1, VOCAB), dtype=np.float32)
        raise RuntimeError("forward failed")

    with pytest.raises(
        ReferenceFileError, match=f"window 1 has log-probabilities of shape \\({CTX - 1}, {VOCAB + 1}\\)"
    ):
        write_reference(tmp_path / "new.safetensors", header, scored, wrong_width())
    with pytest.raises(RuntimeError, match="forward failed"):
        write_reference(tmp_path / "new.safetensors", header, scored, failing())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.safetensors"]
    assert not [t for t in threading.enumerate() if t.name.startswith("reference-writer")]


SETTINGS = ("--dataset", "embedded", "--ctx", "128", "--max-tokens", "512")


@pytest.fixture
def references(tmp_path, monkeypatch):
    """A references directory of the test's own, so a file made by an earlier run is not found."""
    monkeypatch.setenv("QUANTLAB_REFERENCES", str(tmp_path / "references"))
    return tmp_path / "references"


def test_bench_against_a_reference_file_loads_no_baseline(tiny_benched, tmp_path, references):
    """`quantlab reference` then `quantlab bench --baseline FILE`: the same comparison as the bench against the
    baseline artifact (tiny_benched, same stream and ctx), with no baseline loaded."""
    made, _, records = tiny_benched
    proc = run_cli("reference", str(made["base"].path), *SETTINGS)
    assert proc.returncode == 0, proc.stderr
    path = proc.stdout.strip().splitlines()[-1]
    assert Path(path).parent == references and "reference window 4/4" in proc.stderr
    results = tmp_path / "r.jsonl"
    w8 = str(made["w8"].path)
    proc = run_cli("bench", w8, "--baseline", path, "--no-speed", *SETTINGS, "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    assert "loading baseline" not in proc.stderr
    (record,) = read_results(results)
    assert record.quality.model_dump() == records[1].quality.model_dump()

    proc = run_cli("bench", str(made["w8"].path), "--baseline", path, "--no-speed", *SETTINGS[:2], "--ctx", "64")
    assert proc.returncode == 1 and len(error_lines(proc.stderr)) == 1 and "made at --ctx 128" in proc.stderr
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(Path(path).read_bytes()[:-1])
    proc = run_cli("bench", str(made["w8"].path), "--baseline", str(cut), "--no-speed", *SETTINGS)
    assert proc.returncode == 1 and len(error_lines(proc.stderr)) == 1 and "cut short" in proc.stderr


def test_a_bench_unloads_its_baseline_before_any_cell_loads(tiny_benched, references):
    """The order of what the bench says it does: the baseline's reference is written (or found) and the baseline
    unloaded before the first artifact loads; a second bench finds the file and loads no baseline at all."""
    from quantlab.bench import BenchConfig, bench

    made, _, _ = tiny_benched
    config = BenchConfig(dataset="embedded", ctx=128, max_tokens=384, speed=False)
    for expect_made in (True, False):
        said: list[str] = []
        bench([made["w4"].path, made["w8"].path], baseline=made["base"].path, config=config, progress=said.append)
        first_cell = next(i for i, line in enumerate(said) if "loading for quality" in line)
        ready = next(i for i, line in enumerate(said) if "baseline unloaded" in line or "made already" in line)
        assert ready < first_cell
        assert any("loading baseline" in line for line in said) == expect_made
