"""The serving levers besides quantization and batching: SLO goodput, the engine's own prefill and draft
counters, KV-cache types and prefix caching, and the refusals a user meets before any server starts.

The pure parts run on hand-made outcomes and log lines; the llama.cpp parts on a tiny random Llama GGUF (widths
multiples of 256, so every KV row is whole ggml blocks) in-process and behind llama-server."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from quantlab.bench.loadgen import Outcome, summarize
from quantlab.errors import ServeError
from quantlab.results.serving import ServingOptions
from quantlab.results.slo import Slo
from quantlab.serve.engines import ENGINES

from .conftest import error_lines, run_cli

# llama.cpp's block sizes: q8_0 stores 32 values in 34 bytes, q4_0 in 18; f16 in 64.
BLOCK_BYTES = {"f16": 64, "q8_0": 34, "q4_0": 18}


def _outcome(ttft_ms: float, e2e_ms: float, tokens: int = 9, timings: dict | None = None) -> Outcome:
    return Outcome(
        ok=True,
        ttft_s=ttft_ms / 1e3,
        e2e_s=e2e_ms / 1e3,
        chunk_times=[ttft_ms / 1e3, e2e_ms / 1e3],
        output_tokens=tokens,
        prompt_tokens=16,
        timings=timings or {},
    )


def test_slo_reads_the_cli_spelling_and_a_recipe_mapping():
    assert Slo.model_validate("ttft_ms=500, tpot_ms=50") == Slo(ttft_ms=500, tpot_ms=50)
    assert Slo.model_validate({"e2e_ms": 2000}).label() == "E2E ≤ 2000 ms"
    for bad in ("ttfb_ms=5", "ttft_ms", "", "ttft_ms=-1", "ttft_ms=fast"):
        with pytest.raises(ValidationError):
            Slo.model_validate(bad)


def test_goodput_counts_requests_meeting_every_bound_over_the_level_wall_time():
    # TPOT = (e2e − ttft) / 8: 100 ms, 50 ms, 100 ms, 25 ms
    outcomes = [_outcome(100, 900), _outcome(400, 800), _outcome(600, 1400), _outcome(50, 250)]
    outcomes.append(Outcome(ok=False, error="HTTP 500"))  # a failed request is never good
    level = summarize(outcomes, 2.0, concurrency=2, request_rate=None, slo=Slo(ttft_ms=500, tpot_ms=60))
    assert (level.slo_met, level.goodput_rps) == (2, 1.0)
    level = summarize(outcomes, 2.0, concurrency=2, request_rate=None, slo=Slo(e2e_ms=900))
    assert level.slo_met == 3
    assert summarize(outcomes, 2.0, concurrency=2, request_rate=None).goodput_rps is None  # no SLO, no column
    one_token = summarize([_outcome(100, 100, tokens=1)], 1.0, concurrency=1, request_rate=None, slo=Slo(tpot_ms=1))
    assert one_token.slo_met == 1  # no TPOT to miss, as in vLLM


def test_engine_counters_are_summed_only_when_every_request_reports_them():
    timed = [
        _outcome(100, 900, timings={"prompt_n": 80, "cache_n": 1024, "draft_n": 10, "draft_n_accepted": 7}),
        _outcome(100, 900, timings={"prompt_n": 1104, "cache_n": 0, "draft_n": 6, "draft_n_accepted": 3}),
    ]
    counters = summarize(timed, 1.0, concurrency=2, request_rate=None).engine_counters
    assert (counters.prompt_tokens_computed, counters.prompt_tokens_cached) == (1184, 1024)
    assert (counters.draft_tokens, counters.draft_tokens_accepted, counters.acceptance) == (16, 10, 10 / 16)
    untimed = [*timed, _outcome(100, 900)]
    assert summarize(untimed, 1.0, concurrency=3, request_rate=None).engine_counters is None


def test_kv_allocation_is_read_from_llama_servers_own_log():
    log = (
        "llama_context: n_ctx = 7168\n"
        "llama_kv_cache:        CPU KV buffer size =    84.00 MiB\n"
        "llama_kv_cache: size =   83.67 MiB (   224 cells,  30 layers, 32/32 seqs), K (q8_0):   41.84 MiB, "
        "V (q8_0):   41.84 MiB\n"
    )
    kv = ENGINES["llamacpp"].kv_allocation(log)
    assert (kv.type_k, kv.type_v, kv.cells) == ("q8_0", "q8_0", 7168)  # 224 cells in each of 32 streams
    assert kv.bytes_per_token == pytest.approx(83.67 * 2**20 / 7168)
    unified = ENGINES["llamacpp"].kv_allocation(log.replace("   224 cells", "  7168 cells").replace("32/32", "32/1"))
    assert unified.cells == 7168
    assert ENGINES["llamacpp"].kv_allocation("no cache line") is None


def test_engines_refuse_levers_they_lack_before_starting():
    with pytest.raises(ServeError, match=r"no KV-cache type 'fp8'.*q8_0"):
        ENGINES["llamacpp"].check_options(ServingOptions(kv_cache_dtype="fp8"))
    with pytest.raises(ServeError, match="it has none"):
        ENGINES["transformers"].check_options(ServingOptions(kv_cache_dtype="q8_0"))
    with pytest.raises(ServeError, match="no prefix cache"):
        ENGINES["transformers"].check_options(ServingOptions(prefix_cache=True))
    ENGINES["llamacpp"].check_options(ServingOptions(kv_cache_dtype="q4_0", prefix_cache=True))


def test_a_bad_slo_is_one_error_line_and_writes_nothing(tmp_path):
    results = tmp_path / "r.jsonl"
    proc = run_cli("bench", str(tmp_path), "--load", "--slo", "ttfb_ms=500", "--results", str(results))
    assert proc.returncode != 0 and len(error_lines(proc.stderr)) == 1, proc.stderr
    assert "--slo" in proc.stderr and "ttfb_ms" in proc.stderr and not results.exists()


def _rounding(*allocations) -> float:
    """The relative error a ratio of llama.cpp's logged sizes can carry: each is rounded to 0.005 MiB."""
    return sum(0.005 * 2**20 / a.bytes for a in allocations)


@pytest.mark.slow
def test_kv_cache_types_in_process_bytes_measured_and_quality_ordered(q8, tmp_path):
    """Bytes per token come from llama.cpp's own state size and match its block layout; quality against the
    same GGUF with an f16 cache is exact for f16 and degrades from q8_0 to q4_0."""
    from quantlab.bench import BenchConfig, bench

    results = {}
    for dtype in ("f16", "q8_0", "q4_0"):
        config = BenchConfig(dataset="embedded", ctx=256, max_tokens=1024, speed=False, kv_cache_dtype=dtype)
        [results[dtype]] = bench([q8.path], baseline=q8.path, config=config, results_path=tmp_path / "kv.jsonl")
    kv = {d: r.runtime.kv_allocation for d, r in results.items()}
    for dtype in ("q8_0", "q4_0"):
        assert (kv[dtype].type_k, kv[dtype].type_v) == (dtype, dtype)
        assert kv[dtype].bytes_per_token / kv["f16"].bytes_per_token == pytest.approx(
            BLOCK_BYTES[dtype] / 64, rel=_rounding(kv[dtype], kv["f16"])
        )
        assert f"{dtype} K and V (flash attention on)" in results[dtype].runtime.kv_cache
    kld = {d: r.quality.vs_baseline.kld_mean for d, r in results.items()}
    assert kld["f16"] < 1e-9 < kld["q8_0"] < kld["q4_0"], kld
    # quantlab fit takes the measured bytes per token instead of the arithmetic
    proc = run_cli("fit", str(q8.path), "--kv-dtype", "q8_0", "--kv-measured", str(tmp_path / "kv.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert f"{round(kv['q8_0'].bytes_per_token):,} as measured" in " ".join(proc.stdout.split())


@pytest.mark.slow
def test_llama_server_levers_are_launched_counted_and_reported(q8):
    """KV type and prefix cache reach llama-server's command line; its log gives the KV bytes it allocated, its
    per-request timings the prefill it computed and took from cache; the served table shows both, and goodput."""
    from quantlab import report
    from quantlab.bench import BenchConfig, bench_load

    workload = dict(dataset="embedded", concurrency=[1, 2], requests=4, prompt_tokens=16, new_tokens=4)
    workload |= dict(shared_prefix_tokens=64, slo="ttft_ms=60000")
    quantized_kv = bench_load(q8.path, config=BenchConfig(**workload, kv_cache_dtype="q8_0"))
    cached = bench_load(q8.path, config=BenchConfig(**workload, prefix_cache=True))
    off, on = quantized_kv.load, cached.load
    assert off.launch[off.launch.index("--cache-type-v") + 1] == "q8_0" and "--no-cache-prompt" in off.launch
    assert "--cache-prompt" in on.launch and "--cache-type-k" not in on.launch
    assert (off.kv_allocation.type_k, on.kv_allocation.type_k) == ("q8_0", "f16")
    ratio = off.kv_allocation.bytes_per_token / on.kv_allocation.bytes_per_token
    assert ratio == pytest.approx(BLOCK_BYTES["q8_0"] / 64, rel=_rounding(off.kv_allocation, on.kv_allocation))
    for level in off.levels:
        assert level.engine_counters.prompt_tokens_cached == 0
        assert level.engine_counters.prompt_tokens_computed >= level.completed * 80
        assert level.slo_met == level.completed and level.goodput_rps == pytest.approx(level.requests_per_s)
    # one slot at concurrency 1 already holds the shared prefix (from the warm-up): every request reuses it
    sequential = on.levels[0].engine_counters
    assert sequential.prompt_tokens_cached >= 4 * 60
    assert sequential.prompt_tokens_computed < off.levels[0].engine_counters.prompt_tokens_computed - 4 * 60
    table = report.markdown([quantized_kv, cached], title="levers")
    for text in ("options", "KV q8_0, 64-token shared prefix", "prefix cache on", "SLO met / goodput", "100% /"):
        assert text in table, table


@pytest.fixture(scope="module")
def q4(gguf_tiny_model, tmp_path_factory):
    from quantlab.quantizer import quantize
    from quantlab.spec import MethodSpec

    return quantize(str(gguf_tiny_model), MethodSpec(method="gguf", scheme="Q4_0"), tmp_path_factory.mktemp("q4") / "a")


@pytest.mark.slow
@pytest.mark.parametrize("draft", ["artifact", "ngram"])
def test_speculative_sweep_counts_drafts_and_checks_greedy_outputs(q8, q4, draft):
    """A Q4_0 draft for Q8_0 (or n-gram lookup): llama-server's own counters give drafted/accepted tokens; the
    check prompts generated with and without speculation are compared token id by token id."""
    from quantlab import report
    from quantlab.bench import BenchConfig, bench_load

    config = BenchConfig(
        dataset="embedded", concurrency=[1, 4], requests=4, prompt_tokens=16, new_tokens=16,
        draft=str(q4.path) if draft == "artifact" else "ngram", draft_tokens=4,
    )  # fmt: skip
    result = bench_load(q8.path, config=config)
    sweep = result.load
    assert sweep.options.speculative == ("draft" if draft == "artifact" else "ngram")
    assert "draft-simple" in sweep.launch if draft == "artifact" else "ngram-simple" in sweep.launch
    assert not any(str(q4.path) in flag for flag in sweep.launch)  # the record keeps no paths
    check = sweep.greedy_check
    assert check.prompts == 8 and check.identical <= 8 and (check.passed or check.first_difference)
    if draft == "artifact":
        for level in sweep.levels:  # a draft model proposes at every step
            counters = level.engine_counters
            assert counters.draft_tokens > 0 and 0 <= counters.draft_tokens_accepted <= counters.draft_tokens
    table = report.markdown([result], title="speculative")
    assert "draft accepted %" in table and f"{check.identical}/8 identical" in table
    assert "SLO met" not in table  # no --slo, no goodput column


@pytest.mark.slow
def test_bad_levers_are_refused_before_any_server(q8, q4, tiny_tokenizer, tmp_path):
    import shutil

    other = tmp_path / "other-draft"
    shutil.copytree(q4.path, other)
    for file in tiny_tokenizer.iterdir():  # the artifact now carries a tokenizer of its own, not SmolLM2's
        shutil.copy(file, other / file.name)
    results = tmp_path / "r.jsonl"
    proc = run_cli("bench", str(q8.path), "--load", "--draft", str(other), "--results", str(results))
    assert proc.returncode == 1 and len(error_lines(proc.stderr)) == 1, proc.stderr
    assert "tokenizer" in proc.stderr and not results.exists()
    proc = run_cli("bench", str(q8.path), "--load", "--draft-tokens", "4", "--results", str(results))
    assert proc.returncode == 1 and "--draft-tokens needs --draft" in proc.stderr
    proc = run_cli("bench", str(q8.path), "--load", "--kv-cache-dtype", "fp8", "--results", str(results))
    assert proc.returncode == 1 and len(error_lines(proc.stderr)) == 1, proc.stderr
    assert "no KV-cache type 'fp8'" in proc.stderr and not results.exists()
