"""Serving on the real default model: bf16, a calibrated 4-bit HF artifact (GPTQ) and
GGUF Q4_K_M, each served by its engine and swept at concurrency 1/8/32 with zero errors; every engine batches
(GGUF through llama.cpp's own llama-server, a slot per concurrent request) and delivers more total tok/s at 8
than at 1.

CI settings: 64-token prompts, 16 output tokens, 2 × concurrency requests per level (at least 8), artifacts from
the session cache (conftest.SmolCache); the committed results (`python -m benchmarks.sweeps.served_load`) use
128-token prompts and 32 output tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from quantlab.bench import BenchConfig, bench_load
from quantlab.report import tables
from quantlab.spec import Calibration, MethodSpec

pytestmark = pytest.mark.slow

SPECS = {
    "bf16": MethodSpec(method="none", dtype="bf16"),
    "gptq-w4": MethodSpec(method="gptq", bits=4, group_size=64, calibration=Calibration(n_samples=8, seq_len=256)),
    "gguf-q4_k_m": MethodSpec(method="gguf", scheme="Q4_K_M"),
}
LEVELS = [1, 8, 32]
OUTPUT_TOKENS = 16
CONFIG = BenchConfig(concurrency=LEVELS, prompt_tokens=64, new_tokens=OUTPUT_TOKENS)


@pytest.fixture(scope="module")
def served(smol):
    return {name: bench_load(artifact.path, config=CONFIG) for name, artifact in smol.artifacts(SPECS).items()}


def test_gguf_from_the_default_model_has_a_byte_level_vocab(served):
    from quantlab.llamacpp.ops import inspect

    path = Path(served["gguf-q4_k_m"].artifact.path)
    kv = inspect(next(path.glob("*.gguf")))["kv"]
    # not a Llama SentencePiece vocab (llama.cpp aborted on text prompts with that one)
    assert (kv["tokenizer.ggml.model"], kv["tokenizer.ggml.pre"]) == ("gpt2", "smollm")


@pytest.mark.parametrize("name", list(SPECS))
def test_every_level_completes_without_errors(served, name):
    sweep = served[name].load
    assert [lv.concurrency for lv in sweep.levels] == LEVELS
    for level in sweep.levels:
        assert level.errors == 0, level.error_examples
        assert level.completed == level.requests and level.output_tokens == OUTPUT_TOKENS * level.requests


@pytest.mark.parametrize("name", list(SPECS))
def test_every_engine_batches_and_gains_throughput(served, name):
    result = served[name]
    by_level = {lv.concurrency: lv for lv in result.load.levels}
    assert result.load.batches and "continuous batching" in result.load.batching
    assert by_level[8].total_tok_s > by_level[1].total_tok_s
    assert not tables.load_table([result])["engine"].str.contains("not batched").any()
    costs = {c.batch_size: c.usd_per_1m_tokens for c in result.cost}
    assert set(costs) == set(LEVELS) and costs[8] < costs[1]  # cost per token falls with batching


def test_llama_server_runs_a_slot_per_concurrent_request(served):
    from quantlab.llamacpp import build

    sweep = served["gguf-q4_k_m"].load

    def value(flag: str) -> str:
        return sweep.launch[sweep.launch.index(flag) + 1]

    assert sweep.engine == "llamacpp" and value("--parallel") == str(max(LEVELS))
    per_slot = CONFIG.prompt_tokens + CONFIG.new_tokens + 64  # served.CTX_MARGIN
    assert value("--ctx-size") == str(max(LEVELS) * per_slot) and "--no-cache-prompt" in sweep.launch
    assert build.find().label in sweep.engine_version  # the server built from the runtime's tree


def test_served_memory_is_measured_next_to_the_arithmetic(served):
    for result in served.values():
        fit = result.load.memfit
        assert result.memory is not None and fit is not None
        # the server holds at least the weights the arithmetic counts (plus its runtime)
        assert result.memory.peak_bytes > fit.weight_bytes
