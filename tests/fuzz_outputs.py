"""Fuzzing what quantlab reads from llama.cpp's tools (llama-perplexity's KLD summary and base file, llama-bench's
JSON, llama-batched-bench's rows, the KV-cache log line) and the values of its command-line options. Strategies
and properties, shared by the tests and benchmarks/crosschecks/fuzz_inputs.py; imports no pytest.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from hypothesis import strategies as st

from tests.fuzz_properties import ACCEPTED, ERROR, Violation, guarded, one_line
from tests.fuzz_strategies import NASTY, damaged_text, junk

KLD_SUMMARY = """llama_perplexity: computing over 4 chunks, n_ctx=512, batch_size=512, n_seq=1
====== Perplexity statistics ======
Mean PPL(Q)                   :  21.364372 ±   0.591520
Mean PPL(base)                :  20.993310 ±   0.580140
Mean    KLD:   0.012345 ±   0.000456
Same top p:  96.123 ±  0.345 %
"""
LLAMA_BENCH = json.dumps(
    [
        {
            "n_prompt": 0,
            "n_gen": 32,
            "n_depth": 0,
            "n_threads": 2,
            "flash_attn": 0,
            "avg_ts": 41.5,
            "stddev_ts": 0.4,
            "samples_ts": [41.1, 41.9],
        },
        {"n_prompt": 128, "n_gen": 0, "n_threads": 2, "avg_ts": 300.0, "stddev_ts": 3.0},
    ]
)
BATCHED_ROWS = "\n".join(
    json.dumps({"n_kv_max": 4096, "pp": 128, "tg": 32, "pl": pl, "t_pp": 0.5 * pl, "t_tg": 0.8, "t": 0.5 * pl + 0.8})
    for pl in (1, 8)
)
KV_LINE = (
    "llama_kv_cache: size =   83.67 MiB (   224 cells,  30 layers, 32/32 seqs), K (q8_0):   41.84 MiB, "
    "V (q8_0):   41.84 MiB\n"
)
TOOL_OUTPUTS = [KLD_SUMMARY, LLAMA_BENCH, BATCHED_ROWS, KV_LINE]


def _numbers_swapped(text: str, draw) -> str:
    """Each number in `text` maybe replaced by an edge: huge, negative, zero, NaN, malformed, past 4300 digits."""
    import re

    edges = [
        "0",
        "-1",
        "1e999",
        "nan",
        "-nan",
        "inf",
        "1.2.3",
        "9" * 4400,
        "00",
        ".",
        "-",
        "1e",
        "18446744073709551616",
    ]
    return re.sub(r"\d+(?:\.\d+)?", lambda m: draw(st.sampled_from([m.group(0)] * 4 + edges)), text)


@st.composite
def tool_output(draw) -> str:
    """A tool's output near a real one: numbers swapped for edges, damaged, spliced into log noise; or random."""
    kind = draw(st.sampled_from(["numbers", "damaged", "mixed", "json", "random"]))
    base = draw(st.sampled_from(TOOL_OUTPUTS))
    if kind == "numbers":
        return _numbers_swapped(base, draw)
    if kind == "damaged":
        return draw(damaged_text(base))
    if kind == "mixed":  # logs around it, several outputs at once, lines of other tools
        parts = draw(
            st.lists(st.sampled_from([*TOOL_OUTPUTS, "error: failed to load model\n", "\n", *NASTY]), max_size=5)
        )
        return "".join(parts) + _numbers_swapped(base, draw)
    if kind == "json":  # JSON of any shape where llama-bench's array or a batched-bench row should be
        value = draw(junk())
        text = json.dumps(value)
        return draw(
            st.sampled_from([text, '{"n_kv_max": 1, ' + text[1:] if text.startswith("{") else text, "[" + text])
        )
    return draw(st.text(max_size=300))


def reference_outcome(text: str) -> str:
    """Every parser of llama.cpp tool output on `text`: a value of the documented type, or a BenchError line."""
    from quantlab.errors import BenchError
    from quantlab.llamacpp import reference
    from quantlab.llamacpp.kv import kv_allocation
    from quantlab.results.kernels import KvAllocation

    outcomes = []
    line = reference.last_error_line(text)
    if not isinstance(line, str) or len(line.splitlines()) > 1:
        raise Violation(f"last_error_line returned {line!r}")
    for parse, kind in [
        (lambda: reference.parse_kld(text, "kld"), reference.KldStats),
        (lambda: reference.parse_llama_bench(text, "bench"), list),
        (lambda: reference.parse_batched_bench(text, "batched", 2), list),
    ]:
        outcome, value = guarded(parse, expected=BenchError)
        if outcome == ACCEPTED and not isinstance(value, kind):
            raise Violation(f"a parser returned {type(value).__name__}, not {kind.__name__}")
        outcomes.append(outcome)
    kv = guarded(lambda: kv_allocation(text, "log"), expected=BenchError)
    if kv[0] == ACCEPTED and kv[1] is not None:
        if not isinstance(kv[1], KvAllocation) or not kv[1].bytes_per_token >= 0:
            raise Violation(f"kv_allocation returned {kv[1]!r}")
        outcomes.append(ACCEPTED)
    return ACCEPTED if ACCEPTED in outcomes else ERROR


@st.composite
def kld_base_files(draw) -> bytes:
    """A `--kl-divergence-base` file: its header (magic, n_ctx u32, n_vocab i32, n_chunk i32) with edge counts,
    then some tokens; or a damaged one."""
    n_ctx = draw(st.sampled_from([0, 1, 4, 512, 2**31, 2**32 - 1]))
    n_vocab = draw(st.sampled_from([-1, 0, 1, 49152, 2**31 - 1]))
    n_chunk = draw(st.sampled_from([-(2**31), -1, 0, 1, 2, 2**31 - 1]))
    magic = draw(st.sampled_from([b"_logits_", b"_logits_", b"_logit", b"GGUF\x03\x00\x00\x00"]))
    tokens = draw(st.binary(max_size=64))
    data = magic + struct.pack("<Iii", n_ctx, n_vocab, n_chunk) + tokens
    return data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data


def kld_base_outcome(folder: Path, data: bytes) -> str:
    from quantlab.errors import BenchError
    from quantlab.llamacpp.kld_base import KldBase, read_kld_base

    path = folder / "kld-base.bin"
    path.write_bytes(data)
    outcome, value = guarded(lambda: read_kld_base(path), str(path), expected=BenchError)
    if outcome == ACCEPTED and (not isinstance(value, KldBase) or value.tokens.shape != (value.n_chunk, value.n_ctx)):
        raise Violation(f"read_kld_base returned {value!r}")
    return outcome


def encode_kld_base(tokens, logits) -> bytes:
    """A `--kl-divergence-base` file as llama-perplexity writes one, from `tokens` [n_chunk, n_ctx] and the logits
    of each window's scored positions, [n_chunk, n_ctx − 1 − n_ctx // 2, n_vocab]: written here from the layout
    (quantlab.llamacpp.reference's docstring) with llama.cpp's float32 steps, so the reader is tested against an
    encoder of its own rather than against itself."""
    import numpy as np

    tokens = np.asarray(tokens, dtype="<i4")
    logits = np.asarray(logits, dtype=np.float32)
    n_chunk, n_ctx = tokens.shape
    n_vocab = logits.shape[-1]
    width = 2 * ((n_vocab + 1) // 2) + 4
    out = [b"_logits_", struct.pack("<Iii", n_ctx, n_vocab, n_chunk), tokens.tobytes()]
    for row in logits.reshape(-1, n_vocab):
        top, low = row.max(), row.min()
        low = max(low, np.float32(top - np.float32(16)))
        sum_exp = float(np.exp(row - top).astype(np.float64).sum())  # expf per entry, summed in double
        log_sum_exp = np.float32(np.log(sum_exp))
        minimum = np.float32(np.float32(low - top) - log_sum_exp)
        scale = np.float32(np.float32(top - low) / np.float32(65535))
        levels = np.zeros(width - 4, dtype="<u2")
        if scale:
            inv = np.float32(np.float32(1) / scale)
            steps = np.rint(inv * (row - low)).astype(np.int64)  # round half to even, as nearest_int does
            levels[:n_vocab] = np.where(row > low, steps, 0).astype("<u2")
        out += [np.array([scale, minimum], dtype="<f4").tobytes(), levels.tobytes()]
    return b"".join(out)


@st.composite
def kld_base_whole_files(draw) -> bytes:
    """A whole base file, rows included, as llama-perplexity writes it (small n_ctx and vocabularies, logits
    spanning less and more than the 16 nats a row keeps, all equal in some rows), then damaged or not: cut
    short, lengthened, or bytes of a row's scale/minimum/levels overwritten."""
    import numpy as np

    n_ctx = draw(st.sampled_from([3, 4, 6]))
    n_chunk = draw(st.integers(1, 2))
    n_vocab = draw(st.integers(1, 9))
    rows = n_chunk * (n_ctx - 1 - n_ctx // 2)
    spread = draw(st.sampled_from([0.0, 1.0, 15.0, 40.0]))
    seed = draw(st.integers(0, 2**16))
    logits = np.random.default_rng(seed).normal(0, spread or 1, (rows, n_vocab)) * (spread > 0)
    tokens = np.arange(n_chunk * n_ctx).reshape(n_chunk, n_ctx) % max(n_vocab, 1)
    data = encode_kld_base(tokens, logits.reshape(n_chunk, -1, n_vocab))
    damage = draw(st.sampled_from(["none", "none", "cut", "append", "overwrite"]))
    if damage == "cut":
        return data[: draw(st.integers(0, len(data) - 1))]
    if damage == "append":
        return data + draw(st.binary(min_size=1, max_size=8))
    if damage == "overwrite":
        start = 20 + 4 * n_chunk * n_ctx
        at = draw(st.integers(start, len(data) - 1))
        floats = [b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", b"\x00\x00\x80\x3f", b"\xff\xff"]  # NaN, inf, 1.0, 65535
        patch = draw(st.one_of(st.sampled_from(floats), st.binary(min_size=1, max_size=6)))
        return data[:at] + patch[: len(data) - at] + data[at + len(patch) :]
    return data


def kld_rows_outcome(folder: Path, data: bytes) -> str:
    """Open a whole base file and decode every window's rows: a one-line BenchError, or rows that hold what
    KldBaseFile documents."""
    import numpy as np

    from quantlab.errors import BenchError
    from quantlab.llamacpp.kld_base import KldBaseFile

    path = folder / "kld-base-rows.bin"
    path.write_bytes(data)

    def every_window():
        base = KldBaseFile(path)
        return base, [base.rows(k) for k in range(base.header.n_chunk)]

    outcome, value = guarded(every_window, str(path), expected=BenchError)
    if outcome == ACCEPTED:
        base, windows = value
        for rows in windows:
            shape = (base.rows_per_window, base.header.n_vocab)
            if rows.log_probs.shape != shape or rows.log_probs.dtype != np.float32:
                raise Violation(f"rows of shape {rows.log_probs.shape} {rows.log_probs.dtype}, not {shape} float32")
            if not np.isfinite(rows.log_probs).all() or not (rows.kept == (rows.log_probs > -16)).all():
                raise Violation("decoded rows not finite, or kept entries not those above -16")
    return outcome


# --- option values ------------------------------------------------------------------------------------------------

VALUE_TEXT = [
    "1", "8", "0", "-1", "1,8", "1,,8", ",", "", " ", "abc", "1,x", "1.5", "1e3", "nan", "inf", "-inf", "1e999",
    "9" * 30, "9" * 5000, "ttft_ms=500", "ttft_ms=500,tpot_ms=50", "ttft_ms=nan", "ttft_ms=inf", "ttft_ms", "x=1",
    "ttft_ms=1,ttft_ms=2", "=", "q8_0", "f16", "fp8", "auto", "bf16", "[/x]", "a\nb", "\x00", "ü", "all", "true",
    "Q4_K_M", "nf4", "FP8_DYNAMIC", "-1,2", "1_000", "١٢",
]  # fmt: skip


def option_values(names: list[str]) -> st.SearchStrategy[dict[str, str]]:
    """{field: the text a user typed after its flag} for a few of `names`: numbers (most options take one) of
    every size and sign, edge texts, random text."""
    numbers = st.one_of(st.integers(), st.floats(), st.sampled_from([2, 4, 8, 32, 64, 128, -1, 0])).map(str)
    value = st.one_of(numbers, st.sampled_from(VALUE_TEXT), st.text(max_size=10))
    return st.dictionaries(st.sampled_from(names), value, min_size=1, max_size=4)


def _as_typed(model, values: dict[str, str]) -> dict | None:
    """What typer hands the command for these texts (the type of each generated option), or None where click
    itself refuses one (a usage error, exit code 2: the accepted convention); lists stay text, as typer gives them."""
    from quantlab.cli.options import _cli_type

    typed = {}
    for name, text in values.items():
        kind = _cli_type(model.model_fields[name])
        if kind is bool:
            typed[name] = text.strip().lower() in ("1", "true")  # a flag: present or not
            continue
        try:
            typed[name] = kind(text) if kind in (int, float) else text
        except ValueError:
            return None
    return typed


def options_outcome(model, values: dict[str, str], error: type) -> str:
    """The options layer of `quantlab bench`/`run`/`quantize`: typer's types, list parsing, then the model, and for
    a method spec its backend's `normalize` (which `quantize` runs before any work)."""
    from quantlab.cli.options import _is_list, _item_type, build, flag, parse_list

    typed = _as_typed(model, values)
    if typed is None:
        return "usage error (exit 2)"

    def parse():
        chosen = {}
        for name, value in typed.items():
            info = model.model_fields[name]
            chosen[name] = parse_list(value, _item_type(info), flag(name)) if _is_list(info.annotation) else value
        built = build(model, chosen, error)
        if hasattr(built, "method"):
            from quantlab.methods import get_backend

            return get_backend(built.method, built.backend).normalize(built)
        return built

    outcome, value = guarded(parse)
    if outcome == ERROR:
        one_line(value)
    return outcome
