"""What to quantize to: the method specification every backend receives and every manifest records.

One pydantic model for CLI flags, recipes and manifests alike, with `extra="forbid"` so a typo in a YAML
recipe fails at once and names the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DType = Literal["auto", "fp32", "bf16", "fp16"]

TORCH_DTYPE_NAMES: dict[str, str] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def torch_dtype(name: str):
    """`fp32|bf16|fp16` → the torch dtype; `auto` → the string transformers understands."""
    import torch

    if name == "auto":
        return "auto"
    return getattr(torch, TORCH_DTYPE_NAMES[name])


def dtype_short(torch_dtype_obj) -> str:
    """torch dtype → `fp32|bf16|fp16|...`, the spelling used everywhere in results."""
    text = str(torch_dtype_obj).replace("torch.", "")
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(text, text)


class Calibration(BaseModel):
    """Calibration data for methods that need it (GPTQ, AWQ, imatrix); data-free methods leave it unset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = "default"
    n_samples: int = Field(64, gt=0)
    seq_len: int = Field(512, gt=0)
    seed: int = 0


class MethodSpec(BaseModel):
    """A quantization request. Unset fields are filled in by the backend's `normalize`, so the manifest
    always records the values that were really used, not just what the user typed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str
    backend: str | None = None
    bits: int | None = None
    group_size: int | None = Field(None, description="weights per scale; -1 = one scale per output channel")
    symmetric: bool | None = None
    dtype: DType = Field("auto", description="dtype of tensors left unquantized (and of `none` artifacts)")
    scheme: str | None = None
    act_order: Literal["off", "static", "group"] | None = Field(
        None,
        description="GPTQ column order: off; static (by activation size, no runtime cost); group (desc_act, "
        "stores a g_idx permutation)",
    )
    damp: float | None = Field(None, gt=0, lt=1, description="GPTQ Hessian dampening, a fraction of its mean diagonal")
    n_grid: int | None = Field(None, gt=1, description="AWQ scale search: grid points per layer")
    imatrix: bool | None = Field(
        None, description="GGUF: weigh rounding errors with an importance matrix computed from the calibration data"
    )
    double_quant: bool | None = Field(
        None,
        description="bitsandbytes 4-bit: quantize the per-block scales too "
        "(QLoRA's double quantization, ≈0.4 bit/weight less)",
    )
    compute_dtype: Literal["fp32", "bf16", "fp16"] | None = Field(
        None, description="bitsandbytes: dtype the 4-bit weights are expanded to for the matmul"
    )
    calibration: Calibration | None = None

    def label(self) -> str:
        """Short human label used in tables, e.g. `w4 g64 asym` or `bf16`."""
        if self.method == "none":
            return self.dtype
        parts = []
        if self.scheme:
            parts.append(self.scheme)
        if self.bits is not None:
            parts.append(f"w{self.bits}")
        if self.group_size is not None:
            parts.append("per-channel" if self.group_size == -1 else f"g{self.group_size}")
        if self.symmetric is not None:
            parts.append("sym" if self.symmetric else "asym")
        if self.act_order == "group":
            parts.append("act-order")
        if self.imatrix:
            parts.append("imatrix")
        if self.double_quant:
            parts.append("double-quant")
        return " ".join(parts)


def same_request(recorded: MethodSpec, requested: MethodSpec) -> bool:
    """Whether an artifact's recorded spec is what `requested` asks for, so the artifact can be reused. Fields
    the request leaves open (None, or dtype 'auto') are whatever the backend resolved them to, so they match
    anything; a calibration file named relatively in one and absolutely in the other is the same file."""
    want = requested.model_dump(exclude_none=True)
    have = recorded.model_dump(exclude_none=True)
    if want.get("dtype") == "auto":
        want.pop("dtype")
    for spec in (want, have):
        dataset = spec.get("calibration", {}).get("dataset")
        if dataset and Path(dataset).exists():
            spec["calibration"]["dataset"] = str(Path(dataset).resolve())
    return all(have.get(key) == value for key, value in want.items())
