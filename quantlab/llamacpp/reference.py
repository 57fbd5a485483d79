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
- `--kl-divergence-base FILE` alone writes the reference (its layout and how `--kl-divergence` decodes it: the
  module `kld_base`).
- `--kl-divergence-base FILE --kl-divergence` reads the tokens back from FILE (no tokenization) and prints
  `Mean    KLD: x ± y`, `Mean PPL(Q)`, `Mean PPL(base)` and `Same top p: x ± y %`.
- It exits 0 after several of its errors (it logs and returns), so a run whose summary is missing has failed.
"""

from __future__ import annotations

import json
import re
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
