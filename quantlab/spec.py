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
    """Calibration data for methods that need it (GPTQ, AWQ, imatrix); data-free methods leave it unset.

    Each field's description is the `--help` text of its CLI option (the CLI appends the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(
        "default",
        description="Calibration text: 'default' (WikiText-2 from the hub, else the embedded copy), 'wikitext2' "
        "(the hub only), 'embedded' (the shipped WikiText-2) or a .txt/.jsonl path.",
    )
    n_samples: int = Field(64, gt=0, description="Calibration samples (token windows).")
    seq_len: int = Field(512, gt=0, description="Tokens per calibration sample.")
    seed: int = Field(0, description="Seed that picks the calibration samples.")


class MethodSpec(BaseModel):
    """A quantization request. Unset fields are filled in by the backend's `normalize`, so the manifest
    always records the values that were really used, not just what the user typed.

    Each field's description is the `--help` text of its CLI option (`quantlab quantize` is generated from
    these fields), so it is written for a user and says the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = Field(description="Quantization method; `quantlab methods` lists them with their backends.")
    backend: str | None = Field(None, description="Library that runs the method; default: the method's default.")
    bits: int | None = Field(
        None,
        description="Integer weight bits (rtn, gptq, awq, autoround; the widths depend on the backend); default 4.",
    )
    group_size: int | None = Field(
        None, description="Integer methods: weights per scale; -1 = one scale per output channel; default 128."
    )
    symmetric: bool | None = Field(
        None,
        description="Integer methods: a grid without a zero-point (symmetric) or with one (asymmetric); "
        "default symmetric, asymmetric for AWQ.",
    )
    dtype: DType = Field(
        "auto",
        description="fp32|bf16|fp16: dtype of the saved model (none) or of the tensors left unquantized; "
        "auto = the source dtype.",
    )
    scheme: str | None = Field(
        None,
        description="The named format of gguf (llama.cpp file type), fp8 and fp4 (compressed-tensors preset) "
        "and bnb (bitsandbytes type); it sets the bits and scales.",
    )
    act_order: Literal["off", "static", "group"] | None = Field(
        None,
        description="GPTQ column order: off; static (by activation size, no runtime cost; the default); group "
        "(desc_act, stores a g_idx permutation).",
    )
    damp: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="GPTQ Hessian dampening, a fraction of its mean diagonal; default: the backend's own "
        "(llm-compressor 0.01, GPTQModel 0.05).",
    )
    n_grid: int | None = Field(None, gt=1, description="AWQ scale search: grid points per layer; default 20.")
    imatrix: bool | None = Field(
        None,
        description="GGUF: weigh rounding errors with an importance matrix computed from the calibration data; "
        "on by default when calibration options are given; IQ types need it.",
    )
    pure: bool | None = Field(
        None,
        description="GGUF: every tensor at the --scheme's type (llama-quantize --pure) instead of the file type's "
        "own per-tensor mix; default off.",
    )
    tensor_types: list[str] | None = Field(
        None,
        description="GGUF: per-tensor types, NAME=TYPE with a tensor's exact GGUF name and a ggml type (e.g. "
        "blk.0.ffn_down.weight=Q6_K), passed to llama-quantize; `quantlab tune` writes them.",
    )
    imatrix_exclude: list[str] | None = Field(
        None,
        description="GGUF with --imatrix: tensors (exact GGUF names) rounded without the importance matrix "
        "(llama-quantize --exclude-weights); `quantlab tune` writes them where a group measured better without.",
    )
    double_quant: bool | None = Field(
        None,
        description="bitsandbytes nf4/fp4: quantize the per-block scales too "
        "(QLoRA's double quantization, ≈0.4 bit/weight less); default off.",
    )
    compute_dtype: Literal["fp32", "bf16", "fp16"] | None = Field(
        None,
        description="bitsandbytes nf4/fp4: dtype the 4-bit weights are expanded to for the matmul; "
        "default: the dtype option.",
    )
    iters: int | None = Field(
        None,
        ge=0,
        description="AutoRound: sign-gradient steps per decoder block that tune the rounding and clipping; 0 = "
        "no tuning (its round-to-nearest); default 200 (the library's).",
    )
    batch_size: int | None = Field(
        None,
        gt=0,
        description="AutoRound: calibration windows per tuning step; default 8 (the library's).",
    )
    lr: float | None = Field(
        None,
        gt=0,
        description="AutoRound: step size of the sign-gradient tuning; default 1/iters (the library's).",
    )
    rotation: Literal["spinquant"] | None = Field(
        None,
        description="GPTQ and fp4 (llm-compressor): rotate by Hadamard matrices before quantizing, to spread "
        "outliers; spinquant = SpinQuant's R1+R2, fused into the weights (no runtime cost; the embedding is "
        "untied from the output head); default none.",
    )
    calibration: Calibration | None = Field(
        None,
        description="Calibration data of the calibrated methods (gptq, awq, autoround, fp4 NVFP4, gguf imatrix); "
        "data-free methods refuse it.",
    )

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
        if self.pure:
            parts.append("pure")
        if self.tensor_types:
            parts.append(f"{len(self.tensor_types)} tensor types set")
        if self.imatrix_exclude:
            parts.append(f"{len(self.imatrix_exclude)} tensors without imatrix")
        if self.imatrix:
            parts.append("imatrix")
        if self.double_quant:
            parts.append("double-quant")
        if self.iters is not None:
            parts.append(f"{self.iters} iters")
        if self.rotation:
            parts.append(f"+{self.rotation}")
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


# The fields a backend may take or refuse: everything but the method and backend, which choose the backend.
OPTION_FIELDS: tuple[str, ...] = tuple(name for name in MethodSpec.model_fields if name not in ("method", "backend"))


def option_flag(option: str) -> str:
    """An option as the CLI spells it, so an error names what the user typed. Calibration is several flags."""
    return "--calib-*" if option == "calibration" else "--" + option.replace("_", "-")


def option_is_set(spec: MethodSpec, option: str) -> bool:
    """Whether the request gives this option: its value differs from the field's default (None, or `auto`
    for dtype), which is what an unset CLI flag or recipe key leaves."""
    return getattr(spec, option) != MethodSpec.model_fields[option].default
