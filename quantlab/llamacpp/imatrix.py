"""The importance matrix llama.cpp's k-quants and IQ types weigh their rounding error with, computed by llama.cpp's
own `llama-imatrix` on the F16 GGUF, over the calibration windows every other calibrated backend gets.

llama-imatrix reads text (`-f`), tokenizes it with the model's vocabulary and cuts the token stream into chunks
of `-c` tokens (each chunk a fresh context). quantlab writes the windows one after the other, each decoded by the
HF tokenizer, and first checks with llama.cpp's own tokenizer (the libllama of the same build, through
llama-cpp-python) that this text tokenizes back to exactly the windows' ids: then chunk i *is* window i.
Where a join between two windows would tokenize differently (a word cut at a window's edge), the windows go in
another order (the sums do not depend on it); a text that still does not round-trip is refused, never silently
re-tokenized.
A vocabulary that adds BOS (Llama 3, ...) makes llama.cpp start the stream and every chunk with BOS; the
windows are then the chunks' tokens after it, and the record says so.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

from quantlab.errors import QuantizationError
from quantlab.llamacpp import build
from quantlab.results.gguf import ImatrixRecord


class Vocab:
    """llama.cpp's own tokenizer for a GGUF (vocab only, no weights): what llama-imatrix tokenizes text with."""

    def __init__(self, model_gguf: Path) -> None:
        llama_cpp = build.llama_cpp()
        self._llm = llama_cpp.Llama(model_path=str(model_gguf), vocab_only=True, verbose=False)
        self.adds_bos = bool(self._llm._model.add_bos_token())

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        """With `special`, as llama-imatrix does (`common_tokenize(..., add_special=true, parse_special=false)`)."""
        return self._llm.tokenize(text.encode(), add_bos=special, special=False)

    def close(self) -> None:
        self._llm.close()


def llama_tokens(model_gguf: Path, text: str) -> tuple[list[int], bool]:
    """`text` as llama-imatrix tokenizes it, and whether the vocabulary adds BOS."""
    vocab = Vocab(model_gguf)
    try:
        return vocab.tokenize(text), vocab.adds_bos
    finally:
        vocab.close()


def order_windows(vocab: Vocab, texts: list[str], samples: np.ndarray) -> list[int]:
    """An order of the windows in which llama.cpp tokenizes every join back to the two windows' ids.

    Writing windows one after the other can merge the last token of one with the first of the next into a
    different split (a BPE word cut at a window edge). llama-imatrix's sums do not depend on the order of its
    chunks, so a join that does not round-trip is avoided by putting another window next; the windows stay
    exactly the calibration windows. Depth-first, trying the calibration order first."""
    n = len(texts)
    checked: dict[tuple[int, int], bool] = {}
    budget = [20 * n * n]

    def joins(a: int, b: int) -> bool:
        if (a, b) not in checked:
            budget[0] -= 1
            pair = vocab.tokenize(texts[a] + texts[b], special=False)
            checked[a, b] = pair == samples[a].tolist() + samples[b].tolist()
        return checked[a, b]

    def extend(path: list[int], left: list[int]) -> list[int] | None:
        if not left:
            return path
        for nxt in left:
            if budget[0] > 0 and joins(path[-1], nxt):
                found = extend([*path, nxt], [w for w in left if w != nxt])
                if found:
                    return found
        return None

    for start in range(n):
        found = extend([start], [w for w in range(n) if w != start])
        if found:
            return found
    raise QuantizationError(
        "llama.cpp re-tokenizes the joins between calibration windows differently in every order tried, so "
        "llama-imatrix would not see the calibration windows; try another calibration seed or dataset"
    )


def _check_round_trip(vocab: Vocab, text: str, samples: np.ndarray) -> bool:
    """Raise unless llama.cpp's tokens of `text` are the windows' ids (after BOS where it adds one)."""
    ids, adds_bos = vocab.tokenize(text), vocab.adds_bos
    got = np.asarray(ids[1:] if adds_bos else ids, dtype=np.int64)
    want = samples.reshape(-1)
    if got.shape == want.shape and (got == want).all():
        return adds_bos
    n = min(len(got), len(want))
    first = int(np.argmax(got[:n] != want[:n])) if (got[:n] != want[:n]).any() else n
    window, offset = divmod(first, samples.shape[1])
    raise QuantizationError(
        f"llama.cpp tokenizes the calibration text differently from the HF tokenizer (window {window}, token "
        f"{offset}: {len(got)} vs {len(want)} tokens), so llama-imatrix would not see the calibration windows; "
        "try another calibration seed or dataset"
    )


def compute(model_gguf: Path, tokenizer, samples: np.ndarray, out: Path, log) -> ImatrixRecord:
    """Run llama-imatrix over the windows; `out` is the imatrix GGUF llama-quantize reads."""
    n_samples, seq_len = samples.shape
    if n_samples < 2:
        raise QuantizationError("llama-imatrix needs at least 2 calibration windows (--calib-samples ≥ 2)")
    texts = [tokenizer.decode(row.tolist(), clean_up_tokenization_spaces=False) for row in samples]
    tools = build.ensure(log)
    vocab = Vocab(model_gguf)
    try:
        order = order_windows(vocab, texts, samples)
        text = "".join(texts[i] for i in order)
        adds_bos = _check_round_trip(vocab, text, samples[order])
    finally:
        vocab.close()
    text_file = out.with_suffix(".txt")
    text_file.write_text(text)
    threads = str(os.cpu_count() or 1)
    command = [
        str(tools.tool("llama-imatrix")),
        "--model", str(model_gguf),
        "--file", str(text_file),
        "--output-file", str(out),
        "--ctx-size", str(seq_len),
        "--batch-size", str(seq_len),
        "--chunks", str(n_samples),
        "--threads", str(threads),
        "--no-ppl",
        "--output-frequency", str(n_samples),
    ]  # fmt: skip
    log(f"importance matrix: llama-imatrix over {n_samples} windows of {seq_len} tokens")
    try:
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        text_file.unlink(missing_ok=True)
    if proc.returncode != 0 or not out.is_file():
        raise QuantizationError(f"llama-imatrix failed: {last_error(proc.stderr + proc.stdout)}")
    bos = (
        ", each chunk starting with the BOS llama.cpp adds (the window's last token then falls outside)"
        if adds_bos
        else ""
    )
    arranged = (
        "in calibration order"
        if order == sorted(order)
        else "reordered so that every join between windows tokenizes back exactly"
    )
    return ImatrixRecord(
        file=out.name,
        entries=0,  # filled in from the file by the caller
        tokens=n_samples * seq_len,
        how=f"llama-imatrix ({tools.label}) on the F16 GGUF over the {n_samples} calibration windows of "
        f"{seq_len} tokens, one chunk per window ({arranged}); "
        f"llama.cpp's tokenizer checked to give back the windows' ids{bos}",
    )


def last_error(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or "failed" in ln.lower()]
    return (errors or lines or ["no output"])[-1][:300]
