"""Fixtures: tiny random Llama models (all widths multiples of 256) with a locally trained tokenizer, and the
real embedded default model for the slow tests."""

from __future__ import annotations

import dataclasses
import json
import os
import re
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


STEP = re.compile(r"^\d\d:\d\d:\d\d ")  # a progress line: off a terminal a command prints one per step


def error_lines(stderr: str) -> list[str]:
    """What a failed command said beyond its timestamped progress lines (which precede the error)."""
    return [ln for ln in stderr.strip().splitlines() if ln.strip() and not STEP.match(ln)]


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


# The slow tests' evaluation: the first 2048 tokens of the embedded WikiText-2 test split at ctx 512 (4 windows),
# quality only. Every ordering they assert is a paired comparison on these windows with a wide margin in the
# committed 16384-token runs (results/*-smollm2.md); the full settings belong to the benchmarks.
CI_QUALITY = {"dataset": "embedded", "ctx": 512, "max_tokens": 2048, "speed": False}


class SmolCache:
    """One session cache of artifacts of the real default model, shared by every slow test: each request (a
    normalized MethodSpec) is quantized once per session through quantlab's own reuse-or-quantize
    (`quantizer.obtain`), and each artifact's quality against the fp32 baseline on the CI settings is scored
    once. A test asks for artifacts by request, never by folder, so two tests asking for the same format share
    it and a test never sees another's different request under its name.

    Folders follow the runner's layout (`<root>/default/<cell name>-<cell key>`), named like the demo recipe's
    cells where a request is one of them: `quantlab demo --work-dir <root>` then reuses what the other tests
    made, and they reuse what the demo made."""

    def __init__(self, root: Path) -> None:
        from quantlab.spec import MethodSpec
        from quantlab.sweep.recipe import cells, load_recipe

        self.root = root
        self.baseline = MethodSpec(method="none", dtype="fp32")  # every quality score is against it
        self._scores: dict[str, object] = {}  # artifact digest → Result
        demo = REPO / "recipes" / "demo.yaml"
        self._names = {c.key(): c.name for c in cells(load_recipe(demo), demo)}

    def artifact(self, spec):
        from quantlab.methods import get_backend
        from quantlab.quantizer import obtain
        from quantlab.sweep.recipe import Cell, ModelEntry

        normalized = get_backend(spec.method, spec.backend).normalize(spec)
        cell = Cell(model=ModelEntry(id="default"), name=spec.method, spec=normalized, is_baseline=False)
        cell = dataclasses.replace(cell, name=self._names.get(cell.key(), cell.name))  # the key ignores the name
        return obtain("default", spec, cell.artifact_dir(self.root))

    def artifacts(self, specs: dict) -> dict:
        return {name: self.artifact(spec) for name, spec in specs.items()}

    def quality(self, specs: dict) -> dict:
        """name → its Result against the fp32 baseline (CI_QUALITY), scored once per artifact per session."""
        from quantlab.bench import BenchConfig, bench

        made = self.artifacts(specs)
        missing = {a.digest: a for a in made.values() if a.digest not in self._scores}
        if missing:
            baseline = self.artifact(self.baseline)
            results = bench(
                [a.path for a in missing.values()], baseline=baseline.path, config=BenchConfig(**CI_QUALITY)
            )
            self._scores.update(zip(missing, results, strict=True))
        return {name: self._scores[a.digest] for name, a in made.items()}


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
def tiny_benched(tiny_model, tmp_path_factory) -> tuple[dict, Path, list]:
    """The tiny model as fp32 `none`, rtn w8 g128 and rtn w4 g64 asym, benched once against the fp32 one with
    quality and speed at batch 1 and 2 (2 repeats): (artifacts by name, the results file, its records). The
    pipeline test checks the records; the notebook test renders the file."""
    from quantlab.bench import BenchConfig, bench
    from quantlab.quantizer import quantize
    from quantlab.spec import MethodSpec

    root = tmp_path_factory.mktemp("tiny-benched")
    specs = {
        "base": MethodSpec(method="none", dtype="fp32"),
        "w8": MethodSpec(method="rtn", bits=8, group_size=128),
        "w4": MethodSpec(method="rtn", bits=4, group_size=64, symmetric=False),
    }
    made = {name: quantize(str(tiny_model), spec, root / name) for name, spec in specs.items()}
    config = BenchConfig(
        dataset="embedded",
        ctx=128,
        max_tokens=512,
        batch_sizes=[1, 2],
        prompt_tokens=16,
        new_tokens=4,
        warmup=0,
        repeats=2,
    )
    results = root / "tiny.jsonl"
    records = bench([a.path for a in made.values()], baseline=made["base"].path, config=config, results_path=results)
    return made, results, records


@pytest.fixture(scope="session")
def smol(tmp_path_factory, default_model_dir) -> SmolCache:
    """The session's artifacts of the real default model (SmolCache)."""
    return SmolCache(tmp_path_factory.mktemp("smol-cache"))


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


@pytest.fixture(scope="session")
def q8(gguf_tiny_model, tmp_path_factory):
    """The tiny GGUF model as Q8_0 (the levers' target; any runtime refusal that needs a GGUF)."""
    from quantlab.quantizer import quantize
    from quantlab.spec import MethodSpec

    return quantize(str(gguf_tiny_model), MethodSpec(method="gguf", scheme="Q8_0"), tmp_path_factory.mktemp("q8") / "a")


# The tiny recipe `quantlab run` is tested with (tests/test_runner.py, tests/test_ray_runner.py).
CELLS = ["fp32", "w8", "w4"]


def tiny_recipe(tmp_path: Path, model: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(f"""
name: tiny-run
models: [{{id: {json.dumps(str(model))}}}]
baseline: {{name: fp32, method: none, dtype: fp32}}
methods:
  - {{name: w8, method: rtn, bits: 8, group_size: 128}}
  - {{name: w4, method: rtn, bits: 4, group_size: 64}}
bench: {{dataset: embedded, ctx: 128, max_tokens: 512, batch_sizes: [1], prompt_tokens: 16, new_tokens: 4,
        warmup: 0, repeats: 1}}
rigs: [cpu]
""")
    return path


@dataclasses.dataclass(frozen=True)
class SerialRun:
    recipe: Path
    results: Path
    work: Path
    messages: list[str]


@pytest.fixture(scope="session")
def serial_run(tiny_model, tmp_path_factory) -> SerialRun:
    """One serial run of the tiny recipe, shared: the Ray tests compare their records to it."""
    tmp = tmp_path_factory.mktemp("serial-run")
    recipe = tiny_recipe(tmp, tiny_model)
    results, work = tmp / "out" / "tiny.jsonl", tmp / "work"
    messages: list[str] = []
    from quantlab.sweep.runner import run_recipe

    run_recipe(recipe, results=results, work_dir=work, progress=messages.append)
    return SerialRun(recipe=recipe, results=results, work=work, messages=messages)
