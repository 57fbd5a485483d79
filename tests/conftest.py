"""Fixtures: tiny random Llama models (all widths multiples of 256) with a locally trained tokenizer, and the
real embedded default model for the slow tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_WIKITEXT = Path(os.environ.get("QUANTLAB_SHARED_DATA", REPO.parent / "shared" / "data")) / "wikitext-2"

# Tests never reach for a hub: a hub id must fail fast and the same way on every machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a fresh process, real exit code, real stdout/stderr."""
    return subprocess.run(
        [sys.executable, "-m", "quantlab.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def quality_vs_baseline(artifacts: dict, baseline: str = "fp32") -> dict:
    """Bench every artifact but the baseline against it, quality only, on the slow tests' CI settings
    (4096 tokens of the embedded WikiText-2 test split, ctx 512): name → Result."""
    from quantlab.bench import BenchConfig, bench

    names = [n for n in artifacts if n != baseline]
    results = bench(
        [artifacts[n].path for n in names],
        baseline=artifacts[baseline].path,
        config=BenchConfig(dataset="embedded", ctx=512, max_tokens=4096, speed=False),
    )
    return dict(zip(names, results, strict=True))


def _train_tokenizer(out: Path, vocab_size: int = 1024) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from quantlab.corpus import load_text

    text, _ = load_text("embedded", "validation")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    lines = text[:400_000].splitlines()
    tok.train_from_iterator(lines, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    fast.save_pretrained(out)


def make_tiny_llama(
    out: Path,
    tokenizer_dir: Path,
    *,
    hidden: int = 256,
    intermediate: int = 512,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    dtype: str = "float32",
    seed: int = 0,
    vocab_size: int = 1024,
    tied: bool = False,
    init_std: float = 0.02,
) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=tied,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        initializer_range=init_std,
    )
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    _train_tokenizer(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_tokenizer) -> Path:
    """2 layers, hidden 256, intermediate 512, vocab 1024, fp32, random weights: plumbing only."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "model", tiny_tokenizer)


@pytest.fixture(scope="session")
def wide_model(tmp_path_factory, tiny_tokenizer) -> Path:
    """Big enough (≈60M params, ~240 MB fp32) that saving it takes long enough to be killed mid-way."""
    return make_tiny_llama(
        tmp_path_factory.mktemp("wide") / "model",
        tiny_tokenizer,
        hidden=1024,
        intermediate=2816 // 256 * 256,
        layers=4,
        heads=8,
        kv_heads=8,
    )


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from quantlab.default_model import ensure_default_model

    return ensure_default_model()


@pytest.fixture(scope="session")
def wiki_test_text() -> str:
    """WikiText-2 test split: the shared data file when present (checked identical to the embedded copy)."""
    from quantlab.corpus import load_text

    text, _ = load_text("embedded", "test")
    return text


@pytest.fixture(scope="session")
def gguf_tiny_model(tmp_path_factory, default_model_dir) -> Path:
    """A tiny random Llama (widths multiples of 256, so no k-quant falls back) with SmolLM2's tokenizer:
    llama.cpp's converter identifies tokenizers by a hash of their output, and a toy BPE trained here is not
    one it knows. Weights are drawn wider than the usual init so the logits are not flat and quantization
    error shows in the KLD."""
    return make_tiny_llama(
        tmp_path_factory.mktemp("gguf-tiny") / "model", default_model_dir, vocab_size=49152, tied=True, init_std=0.08
    )
