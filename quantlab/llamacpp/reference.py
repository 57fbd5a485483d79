"""llama.cpp's own measuring tools as reference points for quantlab's figures on the same GGUF files.

quantlab scores GGUFs in-process (llama-cpp-python on the library `build.py` compiles) with its own harness;
llama.cpp ships `llama-perplexity` (ppl, and KLD against a base model's saved log-probs) and `llama-bench`
(decode tok/s), built from the same tree. Running them on the same file, text, ctx and threads says whether
quantlab's numbers are llama.cpp's numbers, so a reader can set quantlab's tables next to published ones.
The cross-check test (tests/test_slow_gguf.py), benchmarks/crosschecks/gguf_decode_vs_llama_bench.py and
benchmarks/crosschecks/kld_vs_llama_perplexity.py (quantlab's KLD on llama.cpp's own base rows) use this module.

llama-perplexity's protocol (tools/perplexity/perplexity.cpp of the tree), which differs from quantlab's:
- It tokenizes the text file itself (special tokens added: a BOS only where the GGUF says add_bos_token), cuts
  the tokens into `tokens // ctx` windows (`--chunks` caps the count), replaces each window's first token with
  BOS where add_bos_token, and scores only the second half of each window: positions ctx/2 … ctx-2, i.e.
  `ctx - 1 - ctx // 2` predictions per window (quantlab scores positions 0 … ctx-2, all `ctx - 1`).
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
- `--kl-divergence-base FILE --kl-divergence` reads the tokens back from FILE (no tokenization) and prints
  `Mean    KLD: x ± y`, `Mean PPL(Q)`, `Mean PPL(base)` and `Same top p: x ± y %`.
- It exits 0 after several of its errors (it logs and returns), so a run whose summary is missing has failed.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantlab.errors import BenchError, exception_line
from quantlab.llamacpp import build

TIMEOUT_S = 1800.0
FLASH_ATTN = {"0": "off", "1": "on", "-1": "auto"}  # llama-bench's JSON gives llama_flash_attn_type as a number
_PREFIX = re.compile(r"^\d+\.\d+\.\d+\.\d+ [A-Z] ")  # llama.cpp's log prefix: elapsed time and level
_ERROR = re.compile(r"error|failed|unable|cannot|invalid|not enough|you need", re.I)


def tools(log=print) -> build.ToolsBuild:
    """The tools of the build the in-process runtime links, so both sides run one llama.cpp commit."""
    return build.ensure(log)


def last_error_line(output: str) -> str:
    """The tool's last line that reads like an error (else its last line): enough for a one-line BenchError."""
    lines = [_PREFIX.sub("", ln.strip()) for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if _ERROR.search(ln)]
    return ((errors or lines or ["no output"])[-1])[:300]


def run_tool(tool: Path, args: list[str], what: str, timeout: float = TIMEOUT_S) -> str:
    """Run one llama.cpp tool; its stdout + stderr (llama.cpp logs its results to both), or a one-line
    BenchError naming what was being measured and the tool's last error line."""
    command = [str(tool), *args]
    try:
        proc = subprocess.run(
            command, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what}: {tool.name} ran past {timeout:.0f} s") from exc
    except OSError as exc:
        raise BenchError(f"{what}: cannot run {tool}: {exc}") from exc
    output = f"{proc.stdout}\n{proc.stderr}"
    if proc.returncode != 0:
        raise BenchError(f"{what}: {tool.name} exited {proc.returncode}: {last_error_line(output)}")
    return output


def write_eval_text(tokenizer, ids: np.ndarray, path: Path) -> Path:
    """The text of exactly the ids quantlab scores, decoded with the source model's HF tokenizer: the only
    way to hand llama-perplexity quantlab's token stream (it takes text, not ids). `read_kld_base` then
    shows which ids llama.cpp's tokenizer made of it."""
    text = tokenizer.decode([int(t) for t in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    path.write_text(text, encoding="utf-8")
    return path


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


def _common_args(gguf: Path, ctx: int, threads: int) -> list[str]:
    # One window per decode (-b ctx, as quantlab evaluates a window), no GPU layers and no flash attention:
    # the llamacpp runtime's settings (CPU only, llama-cpp-python's flash_attn=False).
    return ["-m", str(gguf), "-c", str(ctx), "-b", str(ctx), "-t", str(threads), "-ngl", "0", "-fa", "off"]


def save_kld_base(
    gguf: Path,
    text_file: Path,
    base_file: Path,
    *,
    ctx: int,
    chunks: int,
    threads: int,
    tools_build: build.ToolsBuild | None = None,
) -> float:
    """Run the base model over the text, saving its log-probs to `base_file`; its perplexity (second halves
    of the windows). `chunks` caps the windows, so both sides score the same count."""
    tool = (tools_build or tools()).tool("llama-perplexity")
    args = [*_common_args(gguf, ctx, threads), "-f", str(text_file), "--chunks", str(chunks)]
    output = run_tool(tool, [*args, "--kl-divergence-base", str(base_file)], f"llama-perplexity on {gguf.name}")
    found = re.search(r"Final estimate: PPL = ([0-9.]+)", output)
    if found is None or not base_file.is_file():
        raise BenchError(f"llama-perplexity on {gguf.name} printed no final PPL: {last_error_line(output)}")
    return float(found.group(1))


@dataclass(frozen=True)
class KldStats:
    """llama-perplexity's KL-divergence summary, in its own definitions."""

    kld_mean: float  # mean over scored positions of KL(P_base ‖ P_q), nats
    kld_mean_err: float  # its standard error as printed
    ppl: float  # PPL(Q) on the scored positions
    ppl_base: float
    top1: float  # "Same top p" as a fraction
    tokens_scored: int


def parse_kld(output: str, what: str) -> KldStats:
    """The summary block of a `--kl-divergence` run (printed only when ≥ 100 positions were scored)."""
    number = r"(-?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|-?nan|-?inf)"  # C's %f/%e, NaN and inf included
    patterns = {
        "kld": rf"Mean\s+KLD:\s*{number}\s*±\s*{number}",
        "ppl": rf"Mean PPL\(Q\)\s*:\s*{number}",
        "base": rf"Mean PPL\(base\)\s*:\s*{number}",
        "top": rf"Same top p:\s*{number}",
        "chunks": r"computing over (\d+) chunks, n_ctx=(\d+)",
    }
    found = {key: re.search(p, output) for key, p in patterns.items()}
    missing = [key for key, m in found.items() if m is None]
    if missing:
        raise BenchError(f"{what}: no KLD summary ({', '.join(missing)} missing): {last_error_line(output)}")
    try:
        n_chunk, n_ctx = int(found["chunks"].group(1)), int(found["chunks"].group(2))
    except ValueError as exc:  # digits past Python's 4300
        raise BenchError(f"{what}: its chunk count or n_ctx is out of range") from exc
    return KldStats(
        kld_mean=float(found["kld"].group(1)),
        kld_mean_err=float(found["kld"].group(2)),
        ppl=float(found["ppl"].group(1)),
        ppl_base=float(found["base"].group(1)),
        top1=float(found["top"].group(1)) / 100,
        tokens_scored=n_chunk * max(n_ctx - 1 - n_ctx // 2, 0),
    )


def kl_divergence(
    gguf: Path, base_file: Path, *, ctx: int, threads: int, tools_build: build.ToolsBuild | None = None
) -> KldStats:
    """KLD of `gguf` against the saved base log-probs, on the windows stored in `base_file`."""
    tool = (tools_build or tools()).tool("llama-perplexity")
    args = [*_common_args(gguf, ctx, threads), "--kl-divergence-base", str(base_file), "--kl-divergence"]
    what = f"llama-perplexity --kl-divergence on {gguf.name}"
    return parse_kld(run_tool(tool, args, what), what)


@dataclass(frozen=True)
class TgRun:
    """One llama-bench text-generation test: decode tok/s over its repetitions."""

    tok_s: float  # llama-bench's avg_ts: mean over repetitions of n_gen / time
    tok_s_stddev: float
    samples: list[float]
    n_gen: int
    n_depth: int
    threads: int
    flash_attn: str


def parse_llama_bench(output: str, what: str) -> list[TgRun]:
    """llama-bench's `-o json` array (printed first, on stdout; its logs follow on stderr), tg tests only."""
    start = output.find("[")
    try:
        records = json.JSONDecoder().raw_decode(output, start)[0] if start >= 0 else None
    except (ValueError, RecursionError):
        records = None
    if not isinstance(records, list):
        raise BenchError(f"{what}: llama-bench printed no JSON results: {last_error_line(output)}")
    try:
        return [
            TgRun(
                tok_s=float(r["avg_ts"]),
                tok_s_stddev=float(r["stddev_ts"]),
                samples=[float(s) for s in r.get("samples_ts", [])],
                n_gen=int(r["n_gen"]),
                n_depth=int(r.get("n_depth", 0)),
                threads=int(r["n_threads"]),
                flash_attn=FLASH_ATTN.get(str(r.get("flash_attn")), str(r.get("flash_attn"))),
            )
            for r in records
            if int(r.get("n_gen", 0)) > 0 and int(r.get("n_prompt", 0)) == 0
        ]
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:  # another llama-bench's, or damaged
        raise BenchError(
            f"{what}: llama-bench's JSON is not the one this quantlab reads ({exception_line(exc)})"
        ) from exc


def llama_bench_tg(
    gguf: Path,
    *,
    n_gen: int,
    threads: int,
    repeats: int,
    depth: int = 0,
    flash_attn: str = "off",
    tools_build: build.ToolsBuild | None = None,
) -> list[TgRun]:
    """`llama-bench -p 0 -n N` on one file: batch-1 decode of N tokens after `depth` cached tokens, one
    TgRun per flash-attention setting (`flash_attn` may list several, comma-separated)."""
    tool = (tools_build or tools()).tool("llama-bench")
    args = ["-m", str(gguf), "-p", "0", "-n", str(n_gen), "-d", str(depth), "-t", str(threads)]
    args += ["-r", str(repeats), "-ngl", "0", "-fa", flash_attn, "-o", "json"]
    what = f"llama-bench on {gguf.name}"
    runs = parse_llama_bench(run_tool(tool, args, what), what)
    if not runs:
        raise BenchError(f"{what}: its JSON holds no text-generation test")
    return runs


@dataclass(frozen=True)
class BatchedRun:
    """One row of `llama-batched-bench`: `parallel` sequences, each `prompt` tokens prefilled then `gen` decoded
    together (the prompts are not shared), timed by llama.cpp itself."""

    prompt: int
    gen: int
    parallel: int
    prefill_s: float
    decode_s: float
    total_s: float

    @property
    def output_tok_s(self) -> float:
        return self.parallel * self.gen / self.total_s


def llama_batched_bench(
    gguf: Path, *, prompt: int, gen: int, parallel: list[int], threads: int, ctx: int, tools_build=None
) -> list[BatchedRun]:
    """`llama-batched-bench` on one file: what llama.cpp's engine does with `parallel` requests batched ideally
    (all arrive at once, no HTTP, no scheduling), the ceiling a server's concurrency sweep can approach."""
    tool = (tools_build or tools()).tool("llama-batched-bench")
    args = ["-m", str(gguf), "-c", str(ctx), "-npp", str(prompt), "-ntg", str(gen)]
    args += ["-npl", ",".join(map(str, parallel)), "-t", str(threads), "-tb", str(threads), "-ngl", "0"]
    what = f"llama-batched-bench on {gguf.name}"
    return parse_batched_bench(run_tool(tool, [*args, "--output-format", "jsonl"], what), what, len(parallel))


def parse_batched_bench(output: str, what: str, expected: int) -> list[BatchedRun]:
    """llama-batched-bench's `--output-format jsonl` rows (one per batch size, among its logs): `expected` of them."""
    try:
        rows = [json.loads(ln) for ln in output.splitlines() if ln.startswith('{"n_kv_max"')]
        runs = [
            BatchedRun(
                prompt=int(r["pp"]),
                gen=int(r["tg"]),
                parallel=int(r["pl"]),
                prefill_s=float(r["t_pp"]),
                decode_s=float(r["t_tg"]),
                total_s=float(r["t"]),
            )
            for r in rows
        ]
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:  # inf → int()
        raise BenchError(f"{what}: a result row is not the one this quantlab reads ({exception_line(exc)})") from exc
    if len(runs) != expected:
        raise BenchError(f"{what}: {len(runs)} result rows for {expected} batch sizes")
    return runs
