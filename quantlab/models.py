"""Resolving MODEL (a hub id, a local HF directory, or `default`) to files on disk, and describing its
layers before any weight is loaded, so that impossible specs fail in seconds rather than after a load."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from quantlab.errors import ModelNotFoundError, exception_line
from quantlab.util.files import file_sha256

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


class SourceModel(BaseModel):
    """Where a model came from, precisely enough to tell two sources apart."""

    model_config = ConfigDict(extra="forbid")

    ref: str  # as the user wrote it
    kind: str  # default | local | hub
    path: str  # local directory with config.json + weights
    revision: str | None = None  # hub commit, when from the hub
    content_sha256: str  # over config.json and weight files: same hash ⇔ same model
    description: str | None = None


class LinearLayer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    in_features: int
    out_features: int


class ModelInfo(BaseModel):
    """Architecture facts read from config.json through a weightless (meta-device) instantiation."""

    model_config = ConfigDict(extra="forbid")

    architecture: str
    model_type: str
    dtype: str
    n_params: int
    linear_layers: list[LinearLayer]
    lm_head: str | None = None


def content_sha256(path: Path) -> str:
    """Hash of config.json plus every weight file (name and content), in a stable order."""
    digest = hashlib.sha256()
    files = sorted(
        p for p in path.iterdir() if p.is_file() and (p.name == "config.json" or p.suffix in WEIGHT_SUFFIXES)
    )
    for file in files:
        digest.update(file.name.encode())
        digest.update(b"\0")
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


def resolve_model(ref: str, *, revision: str | None = None, log=print) -> SourceModel:
    """`default` → the embedded model; an existing directory → itself; `owner/name` → the hub.

    A hub download needs the network; when it fails the message says so rather than surfacing the
    hub client's multi-line error.
    """
    if ref == "default":
        from quantlab.default_model import DEFAULT_DESCRIPTION, ensure_default_model

        path = ensure_default_model(log=log)
        return SourceModel(
            ref=ref,
            kind="default",
            path=str(path),
            content_sha256=content_sha256(path),
            description=DEFAULT_DESCRIPTION,
        )
    candidate = Path(ref).expanduser()
    if candidate.exists():
        if not candidate.is_dir():
            raise ModelNotFoundError(f"model {ref!r} is a file, not a Hugging Face model directory")
        if not (candidate / "config.json").is_file():
            raise ModelNotFoundError(f"model directory {ref!r} has no config.json: not a Hugging Face model")
        return SourceModel(
            ref=ref, kind="local", path=str(candidate.resolve()), content_sha256=content_sha256(candidate)
        )
    if not HUB_ID.match(ref):
        raise ModelNotFoundError(f"model {ref!r} not found: no such directory, and not a hub id of the form owner/name")
    return _from_hub(ref, revision)


# safetensors only: pickled *.bin weights are never fetched (loading them runs arbitrary code). *.py is fetched
# but only ever executed by transformers when the user passes --trust-remote-code.
_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py"]


def _from_hub(ref: str, revision: str | None) -> SourceModel:
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(ref, revision=revision, allow_patterns=_HUB_FILES))
    except Exception as exc:  # the hub client raises many types; all mean "could not get it"
        reason = exception_line(exc)
        raise ModelNotFoundError(
            f"model {ref!r}: no such local directory, and the Hugging Face hub did not provide it ({reason})"
        ) from exc
    return SourceModel(ref=ref, kind="hub", path=str(path), revision=path.name, content_sha256=content_sha256(path))


def model_info(path: str | Path, *, trust_remote_code: bool = False) -> ModelInfo:
    """Instantiate the architecture on the meta device: every Linear with its shape, no weights read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelNotFoundError(f"cannot read the model config in {path}: {exc}") from exc
    with torch.device("meta"):
        try:
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        except Exception as exc:
            raise ModelNotFoundError(
                f"{path}: architecture {getattr(config, 'architectures', None)} is not a causal LM "
                f"transformers can build ({exc})"
            ) from exc
    layers = [
        LinearLayer(name=name, in_features=mod.in_features, out_features=mod.out_features)
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear)
    ]
    output = model.get_output_embeddings()
    lm_head = next((name for name, mod in model.named_modules() if mod is output), None)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32"
    from quantlab.spec import dtype_short

    n_params = sum(p.numel() for p in model.parameters())
    return ModelInfo(
        architecture=type(model).__name__,
        model_type=config.model_type,
        dtype=dtype_short(dtype),
        n_params=n_params,
        linear_layers=layers,
        lm_head=lm_head,
    )


def quantization_config(path: str | Path) -> dict | None:
    """A checkpoint's own `quantization_config` from its config.json (None: unquantized): what the file says it
    is, read without loading it, by the backends that check what they wrote and the runtime that loads it."""
    with open(Path(path) / "config.json", encoding="utf-8") as fh:
        return json.load(fh).get("quantization_config")
