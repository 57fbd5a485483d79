"""Self-speculation drafts: a model's own first k decoder layers, its final norm and its head, saved as a real
Hugging Face checkpoint and quantized to GGUF through quantlab's normal path.

Why: speculative decoding pays off only when the draft is much cheaper per token than the target (the guide's
example drafts a 70B model with an 8B one, ~9× cheaper). A quantization of the same model costs about as much per
token as the target, so it measures the lever unfairly. A truncated copy of the target shares its tokenizer and
vocabulary by construction (llama-server needs token ids to mean the same tokens) and is as cheap as k is small,
at the price of predicting worse: the tradeoff these drafts let a benchmark measure.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.lib.console import log

if TYPE_CHECKING:
    from quantlab.artifact import Artifact

WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
MARK = "quantlab-first-layers.json"  # what a folder was cut from: reused only while the source is the same


def first_layers(model_dir: str | Path, k: int, out: str | Path) -> Path:
    """Save `model_dir`'s first `k` decoder layers, final norm and head (a tied head stays tied) to `out`.

    The tokenizer files are copied byte for byte, not re-saved, so a tokenizer check that hashes them sees the
    target's own tokenizer."""
    from transformers import AutoModelForCausalLM

    model_dir, out = Path(model_dir), Path(out)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")  # saved as it came: bf16 stays bf16
    total = model.config.num_hidden_layers
    if not 1 <= k < total:
        raise ValueError(f"k={k}: a draft keeps 1 to {total - 1} of the model's {total} layers")
    model.model.layers = model.model.layers[:k]
    model.config.num_hidden_layers = k
    if getattr(model.config, "layer_types", None):  # per-layer attention kinds, where the config lists them
        model.config.layer_types = model.config.layer_types[:k]
    model.save_pretrained(out)
    for file in model_dir.iterdir():
        kept = file.name != "config.json" and not file.name.startswith("quantlab-")  # provenance is the source's
        if file.is_file() and kept and not file.name.endswith(WEIGHT_FILES):
            shutil.copyfile(file, out / file.name)
    return out


def self_draft(model: str, k: int, scheme: str) -> Artifact:
    """The GGUF (`scheme`) of `model`'s first `k` layers, kept in the quantlab cache and reused while its source
    is unchanged; the checkpoint folder is the model argument, so quantization is quantlab's usual path.

    Pure: every tensor in `scheme`, the head too. llama.cpp otherwise keeps a tied head at a wider type, and in a
    few-layer draft of a small model the head is most of the cost per token (SmolLM2-135M: 28M of its
    parameters, against 3.5M per layer), so a wider head would keep the draft from being cheap."""
    from quantlab.models import resolve_model
    from quantlab.paths import cache_dir
    from quantlab.quantizer import obtain
    from quantlab.spec import MethodSpec

    source = resolve_model(model, log=lambda msg: log(f"{model}: {msg}"))
    name = f"{model.replace('/', '--')}-first{k}"
    folder = cache_dir() / "benchmarks" / "drafts" / name
    mark = {"source_sha256": source.content_sha256, "k": k}
    if not (folder / MARK).is_file() or json.loads((folder / MARK).read_text()) != mark:
        shutil.rmtree(folder, ignore_errors=True)
        log(f"{model}: cutting the first {k} layers into {folder}")
        first_layers(source.path, k, folder)
        (folder / MARK).write_text(json.dumps(mark))
    spec = MethodSpec(method="gguf", scheme=scheme, pure=True)
    out = cache_dir() / "benchmarks" / "gguf" / f"{name}-{scheme}-pure"
    return obtain(str(folder), spec, out, log=lambda msg: log(f"{name} {scheme}: {msg}"))
