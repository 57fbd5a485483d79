"""llama-perplexity's `--kl-divergence-base` file, read and decoded as its `--kl-divergence` reads it, so quantlab's
KLD can be computed on llama.cpp's own base rows (benchmarks/crosschecks/kld_vs_llama_perplexity.py) and a base
file's tokens checked against quantlab's stream.

From tools/perplexity/perplexity.cpp of the tree the runtime links:
- `--kl-divergence-base FILE` alone writes the reference: "_logits_", n_ctx (u32), n_vocab and n_chunk (i32),
  the window tokens (i32), then per scored position one row of `row_width(n_vocab)` uint16 (`KldBaseFile`
  reads and decodes them): two float32, `scale` and `minimum`, then one level per vocabulary entry (padded to
  an even count). With max/min the row's largest/smallest logit, min raised to max − 16: scale = (max − min) /
  65535, minimum = min − max − log Σexp(logit − max) (the log-prob of a logit at min), level = round((logit −
  min) / scale) for logits above min, else 0. The reference is thus quantized in steps of ≤ 16/65535 nats.
- `--kl-divergence` decodes each entry in float32 as scale·level + minimum and sums (in double) KL terms only
  over entries whose decoded log-prob is above −16 (an entry stored as 0 sits at `minimum` ≤ −16 whenever the
  row spans 16 nats, so clipped entries drop out; so do low ones that were stored). The base's NLL of the right
  token uses its decoded value whether kept or not. "Same top p" counts rows where the first largest decoded
  entry is the model's first largest logit. The model's log-probs are logit − max − log Σexp (exps summed in
  double, the rest float32); each KL term is float32, the sums over entries and rows double.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantlab.errors import BenchError


@dataclass(frozen=True)
class KldBase:
    """The header of a `--kl-divergence-base` file: what the reference was computed on."""

    n_ctx: int
    n_vocab: int
    n_chunk: int
    tokens: np.ndarray  # int32, n_chunk × n_ctx, the windows as llama.cpp tokenized them


def read_kld_base(path: Path) -> KldBase:
    """Parse the header llama-perplexity wrote (layout in the module docstring), to check the token ids."""
    with open(path, "rb") as f:
        head = f.read(20)
        if len(head) < 20 or head[:8] != b"_logits_":
            raise BenchError(f"{path} is not a llama-perplexity --kl-divergence-base file")
        n_ctx, n_vocab, n_chunk = struct.unpack("<Iii", head[8:])
        if n_vocab <= 0 or n_chunk < 0:  # a damaged header; checked before its counts size a read
            raise BenchError(f"{path}: header says n_vocab {n_vocab}, n_chunk {n_chunk}: not a file llama.cpp wrote")
        data = f.read(min(4 * n_ctx * n_chunk, path.stat().st_size))
    tokens = np.frombuffer(data[: len(data) // 4 * 4], dtype="<i4")
    if tokens.size != n_ctx * n_chunk:
        raise BenchError(f"{path} is truncated: {tokens.size} of {n_ctx * n_chunk} tokens")
    return KldBase(n_ctx=n_ctx, n_vocab=n_vocab, n_chunk=n_chunk, tokens=tokens.reshape(n_chunk, n_ctx))


LEVELS = 65535  # uint16 steps between a row's minimum and its top
SPAN = 16.0  # nats below the top a row's levels cover
KEEP_ABOVE = np.float32(-SPAN)  # llama.cpp's KL sum skips decoded log-probs at or below this
_HEAD_BYTES = 20  # "_logits_", n_ctx, n_vocab, n_chunk


def row_width(n_vocab: int) -> int:
    """uint16 per stored row: scale and minimum (two float32), then the levels padded to an even count."""
    return 2 * ((n_vocab + 1) // 2) + 4


def scored_per_window(n_ctx: int) -> int:
    """Positions llama-perplexity scores in each window: n_ctx/2 … n_ctx − 2 (each predicts the next token)."""
    return n_ctx - 1 - n_ctx // 2


@dataclass(frozen=True)
class KldRows:
    """One window's base rows, decoded as `llama-perplexity --kl-divergence` uses them (module docstring).
    Row r is window position n_ctx/2 + r, predicting the token after it."""

    log_probs: np.ndarray  # float32 [rows, n_vocab]: scale·level + minimum, each step rounded to float32
    kept: np.ndarray  # bool [rows, n_vocab]: log_probs > −16, the entries its KL sum includes
    scale: np.ndarray  # float32 [rows]
    minimum: np.ndarray  # float32 [rows]

    def top(self) -> np.ndarray:
        """The base's top token per row as llama.cpp picks it: the first largest decoded entry."""
        return self.log_probs.argmax(axis=1)


class KldBaseFile:
    """A whole `--kl-divergence-base` file: its header and tokens checked at once, the file's length checked
    against them, each window's rows read (and checked) on demand, so 16 windows of a 49k vocabulary (400 MB)
    never sit in memory together."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.header = read_kld_base(self.path)
        h = self.header
        self.rows_per_window = scored_per_window(h.n_ctx)
        if self.rows_per_window < 1 or h.n_chunk < 1:
            raise BenchError(f"{self.path}: n_ctx {h.n_ctx}, {h.n_chunk} windows: no scored rows to read")
        self.width = row_width(h.n_vocab)
        self.window_bytes = self.rows_per_window * self.width * 2
        self._rows_start = _HEAD_BYTES + 4 * h.n_ctx * h.n_chunk
        expected = self._rows_start + h.n_chunk * self.window_bytes
        size = self.path.stat().st_size
        if size != expected:
            what = "truncated" if size < expected else "longer than its header says"
            raise BenchError(f"{self.path} is {what}: {size} bytes where {h.n_chunk} windows of rows take {expected}")

    def rows(self, window: int) -> KldRows:
        """Window `window`'s rows, decoded; a one-line BenchError if they cannot be rows llama.cpp wrote."""
        h = self.header
        if not 0 <= window < h.n_chunk:
            raise BenchError(f"{self.path} holds windows 0…{h.n_chunk - 1}, not {window}")
        count = self.rows_per_window * self.width
        raw = np.fromfile(self.path, dtype="<u2", count=count, offset=self._rows_start + window * self.window_bytes)
        if raw.size != count:  # the file changed since it was opened
            raise BenchError(f"{self.path} is truncated inside window {window}'s rows")
        raw = raw.reshape(self.rows_per_window, self.width)
        head = np.ascontiguousarray(raw[:, :4]).view("<f4")
        scale, minimum = head[:, 0].astype(np.float32), head[:, 1].astype(np.float32)
        levels = raw[:, 4 : 4 + h.n_vocab]
        _check_rows(self.path, window, scale, minimum, levels, h.n_vocab)
        # Two float32 roundings (product, then sum) as llama.cpp's build computes them: no fused multiply-add.
        log_probs = scale[:, None] * levels.astype(np.float32) + minimum[:, None]
        return KldRows(log_probs=log_probs, kept=log_probs > KEEP_ABOVE, scale=scale, minimum=minimum)


def _check_rows(path: Path, window: int, scale, minimum, levels, n_vocab: int) -> None:
    """What every row llama.cpp writes satisfies: 0 ≤ scale ≤ 16/65535 (a little float slack), a minimum between
    −16 − ln(n_vocab) and 0, the top logit at level 65535, or all levels 0 where the logits were all equal."""
    with np.errstate(invalid="ignore"):
        bad_scale = ~(np.isfinite(scale) & (scale >= 0) & (scale <= (SPAN + 0.01) / LEVELS))
        floor = -SPAN - float(np.log(n_vocab)) - 0.01
        bad_min = ~(np.isfinite(minimum) & (minimum <= 0) & (minimum >= floor))
    top = levels.max(axis=1)
    bad_top = np.where(scale > 0, top != LEVELS, top != 0)
    bad = bad_scale | bad_min | bad_top
    if bad.any():
        r = int(np.argmax(bad))
        raise BenchError(
            f"{path}: window {window} row {r} is not a row llama-perplexity wrote "
            f"(scale {float(scale[r])!r}, minimum {float(minimum[r])!r}, top level {int(top[r])})"
        )
