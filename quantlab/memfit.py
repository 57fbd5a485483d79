"""Does model M, in a given format, fit on rig R at batch B and context L?

Arithmetic from the model's config, not a measurement: weight bytes (quantized linear weights at the format's
bits per weight, everything else at its own dtype) + KV cache (layers × KV heads × head dim × 2 (K and V) ×
bytes per element, per token, × batch × context) against the rig's memory, less a stated reserve for
activations, the CUDA context and the engine's own buffers. Measured peaks (`quantlab bench`) are the check on
it. A 70B model in 16-bit needs ≈141 GB of weights alone, so it does not fit one 80 GB H100, whatever a guide
says.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from quantlab.errors import ModelNotFoundError
from quantlab.rigs import Rig

# bytes per cached value; llama.cpp's block types store 32 values in 34 (q8_0) or 18 (q4_0) bytes
KV_DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "q8_0": 34 / 32, "q4_0": 18 / 32}
_LLAMACPP_KV_NAMES = {"f16": "fp16", "f32": "fp32"}  # llama.cpp's cache-type names where they differ from these


def kv_dtype_of(name: str) -> str:
    """This module's name for a KV type named by an engine (llama.cpp spells f16, f32)."""
    return _LLAMACPP_KV_NAMES.get(name, name)


DEFAULT_UTILIZATION = 0.90  # share of the rig's memory the model may use (vLLM's default gpu_memory_utilization)


class Architecture(BaseModel):
    """What the arithmetic needs, read from a config on the meta device (no weights)."""

    model_config = ConfigDict(extra="forbid")

    model_type: str
    n_layers: int
    n_kv_heads: int
    head_dim: int
    n_params: int
    linear_params: int  # weights of the Linear layers a method quantizes (the output head excluded)


class Footprint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight_bits: float
    weight_bytes: int
    kv_dtype: str
    kv_bytes_per_token: int
    kv_source: str = "arithmetic"  # or where a measured figure came from
    batch: int
    ctx: int
    kv_bytes: int
    needed_bytes: int  # weights + KV
    rig: str | None = None
    capacity_bytes: int | None = None  # rig memory × utilization
    utilization: float | None = None
    fits: bool | None = None
    gpus: int | None = None  # GPUs one copy spans (tensor parallel); None: the whole rig
    rig_gpus: int | None = None

    def short_of_gpus(self) -> bool:
        """Spans more GPUs than the rig has (a CPU rig holds a one-device model: its own memory)."""
        return self.gpus is not None and self.rig_gpus is not None and self.gpus > max(self.rig_gpus, 1)

    def verdict(self) -> str:
        need = (
            f"{self.needed_bytes / 1e9:.1f} GB (weights {self.weight_bytes / 1e9:.1f} + KV {self.kv_bytes / 1e9:.1f})"
        )
        if self.fits is None:
            return f"needs {need}"
        if self.short_of_gpus():
            return f"does NOT fit: spans {self.gpus} GPUs, {self.rig} has {self.rig_gpus}"
        room = f"{self.capacity_bytes / 1e9:.1f} GB usable ({self.utilization:.0%} of {self.rig})"
        return f"{'fits' if self.fits else 'does NOT fit'}: needs {need}, {room}"


class MemoryFitQuestion(BaseModel):
    """The memory question, asked by `quantlab fit` and by a recipe's `memory_fit:` (its dry-run): weights + KV
    cache at this batch and context, against this share of the rig's memory. Field descriptions are the CLI's
    help texts."""

    model_config = ConfigDict(extra="forbid")

    batch: int = Field(1, ge=1, description="Concurrent sequences.")
    ctx: int = Field(4096, ge=1, description="Tokens per sequence (prompt + output).")
    kv_dtype: str = Field("bf16", description="KV cache dtype: bf16 | fp16 | fp8 | fp32 | q8_0 | q4_0 (llama.cpp).")
    utilization: float = Field(
        DEFAULT_UTILIZATION, gt=0, le=1, description="Share of the rig's memory the model may use."
    )

    @field_validator("kv_dtype")
    @classmethod
    def _known_kv_dtype(cls, value: str) -> str:
        if value not in KV_DTYPE_BYTES:
            raise ValueError(f"one of {', '.join(KV_DTYPE_BYTES)}, not {value!r}")
        return value


def architecture(config) -> Architecture:
    """`config`: a transformers PretrainedConfig (e.g. `LlamaConfig(...)` written out in a test)."""
    import torch
    from transformers import AutoModelForCausalLM

    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    head = model.get_output_embeddings()
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)
    return Architecture(
        model_type=config.model_type,
        n_layers=text.num_hidden_layers,
        n_kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        n_params=sum(p.numel() for p in model.parameters()),
        linear_params=linear,
    )


def architecture_of(path: str | Path) -> Architecture:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise ModelNotFoundError(f"cannot read the model config in {path}: {exc}") from exc
    return architecture(config)


def architecture_of_artifact(artifact) -> Architecture:
    """An artifact's architecture: its own config.json, or (GGUF artifacts have none) its source model's."""
    directory = artifact.path if (artifact.path / "config.json").is_file() else Path(artifact.manifest.source.path)
    return architecture_of(directory)


def kv_bytes_per_token(arch: Architecture, kv_dtype: str = "bf16") -> int:
    return round(arch.n_layers * arch.n_kv_heads * arch.head_dim * 2 * KV_DTYPE_BYTES[kv_dtype])


def weight_bytes(arch: Architecture, weight_bits: float, other_bits: float = 16) -> int:
    """Quantized linear weights at `weight_bits` per weight (include the scales, e.g. 4 + 16/128 for int4 with
    one fp16 scale per 128), every other parameter (embeddings, output head, norms) at `other_bits`."""
    return round(arch.linear_params * weight_bits / 8 + (arch.n_params - arch.linear_params) * other_bits / 8)


def rig_capacity(rig: Rig, gpus: int | None = None) -> int:
    """The memory one copy of a model can use on `rig`: all of it (`gpus` None), or `gpus` of its GPUs' share
    (a model split over N GPUs by tensor parallelism holds 1/N of its weights and KV heads on each)."""
    if rig.memory_gb is None:
        import psutil

        return psutil.virtual_memory().total  # the `cpu` rig: this host's memory
    if gpus is None or not rig.n_gpus:
        return int(rig.memory_gb * 1e9)
    return int(rig.memory_gb * 1e9 * min(gpus, rig.n_gpus) / rig.n_gpus)


def footprint(
    arch: Architecture,
    *,
    weight_bits: float = 16,
    other_bits: float = 16,
    kv_dtype: str = "bf16",
    batch: int = 1,
    ctx: int = 4096,
    rig: Rig | None = None,
    utilization: float = DEFAULT_UTILIZATION,
    measured_weight_bytes: int | None = None,
    measured_kv: tuple[float, str] | None = None,
    gpus: int | None = None,
) -> Footprint:
    """`measured_weight_bytes` (an artifact's) and `measured_kv` (bytes per token, where it was measured) replace
    the arithmetic when given. `gpus`: the GPUs one copy spans (a cell's `tensor_parallel`); it does not fit a
    rig with fewer, and uses only that many of a rig with more. None: the whole rig, as `quantlab fit` asks."""
    per_token = round(measured_kv[0]) if measured_kv else kv_bytes_per_token(arch, kv_dtype)
    weights = (
        measured_weight_bytes if measured_weight_bytes is not None else weight_bytes(arch, weight_bits, other_bits)
    )
    kv = per_token * batch * ctx
    result = Footprint(
        weight_bits=weight_bits,
        weight_bytes=weights,
        kv_dtype=kv_dtype,
        kv_bytes_per_token=per_token,
        kv_source=measured_kv[1] if measured_kv else "arithmetic",
        batch=batch,
        ctx=ctx,
        kv_bytes=kv,
        needed_bytes=weights + kv,
    )
    if rig is None:
        return result
    capacity = int(rig_capacity(rig, gpus) * utilization)
    placed = result.model_copy(
        update={
            "rig": rig.name,
            "capacity_bytes": capacity,
            "utilization": utilization,
            "gpus": gpus,
            "rig_gpus": rig.n_gpus if gpus is not None else None,
        }
    )
    return placed.model_copy(update={"fits": weights + kv <= capacity and not placed.short_of_gpus()})


# Bits per weight of ggml's block formats: block bytes × 8 / values per block (ggml-common.h block structs).
GGML_TYPE_BPW = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.5625,
    "Q5_K": 5.5,
    "Q5_1": 6.0,
    "Q5_0": 5.5,
    "Q4_K": 4.5,
    "Q4_1": 5.0,
    "Q4_0": 4.5,
    "Q3_K": 3.4375,
    "Q2_K": 2.625,
    "IQ4_XS": 4.25,
    "IQ4_NL": 4.5,
    "IQ3_S": 3.4375,
    "IQ3_XXS": 3.0625,
    "IQ2_S": 2.5,
    "IQ2_XS": 2.3125,
    "IQ2_XXS": 2.0625,
}
_FP_BITS = {
    "FP8_DYNAMIC": (8.0, "FP8 E4M3, one scale per output channel"),
    "FP8_BLOCK": (8.0, "FP8 E4M3, one scale per 128×128 block"),
    "FP8_W8A16": (8.0, "FP8 E4M3, one scale per output channel"),
    "NVFP4": (4.5, "FP4 E2M1 + one FP8 scale per 16"),
    "NVFP4A16": (4.5, "FP4 E2M1 + one FP8 scale per 16"),
    "MXFP4": (4.25, "FP4 E2M1 + one E8M0 scale per 32"),
    "MXFP4A16": (4.25, "FP4 E2M1 + one E8M0 scale per 32"),
}


def nominal_weight_bits(spec) -> tuple[float, str]:
    """Bits per quantized linear weight a *normalized* MethodSpec stores, scales included, and how that was
    counted. Arithmetic for planning (`fit`, recipe dry-runs); a made artifact's measured bytes replace it."""
    if spec.method == "none":
        bits = {"fp32": 32.0}.get(spec.dtype, 16.0)
        return bits, f"{spec.dtype if spec.dtype != 'auto' else 'source dtype (16-bit assumed)'} weights"
    if spec.method == "gguf":
        from quantlab.llamacpp.types import lookup

        kind = lookup(spec.scheme)
        bpw = GGML_TYPE_BPW[kind.main]
        return bpw, (
            f"{kind.main} blocks ({bpw:g} bits/weight, embeddings and head included); the {spec.scheme} "
            "recipe keeps some tensors at "
            "higher types, and tensors whose rows do not fit its blocks fall back, so files run larger"
        )
    if spec.method in ("fp8", "fp4"):
        return _FP_BITS[spec.scheme]
    if spec.method == "bnb":
        if spec.scheme == "int8":
            return 8.0, "int8, one fp32 scale per row"
        if spec.double_quant:
            return 4.127, f"{spec.scheme} + 8-bit absmax per 64 (double quantization)"
        return 4.5, f"{spec.scheme} + one fp32 absmax per 64"
    # integer group formats (rtn, gptq, awq): one 16-bit scale per group, and a zero point per group if asymmetric
    group = spec.group_size
    if group is None or group == -1:
        return float(spec.bits), f"int{spec.bits}, one scale per output channel"
    extra = 16 + (0 if spec.symmetric else spec.bits)
    return spec.bits + extra / group, (
        f"int{spec.bits} + one 16-bit scale{'' if spec.symmetric else ' and zero'} per {group}"
    )


def fit_table(
    label: str,
    arch: Architecture,
    question: MemoryFitQuestion,
    rigs: list[Rig],
    *,
    weight_bits: float,
    measured_weight_bytes: int | None,
    measured_kv: tuple[float, str] | None = None,
):
    """`quantlab fit`'s table (a rich Table) and the line that says where the numbers come from. The last
    column is the longest context per sequence that fits at this batch: what the KV type buys."""
    from rich.table import Table

    table = Table(
        title=f"memory fit: {label}, batch {question.batch} × ctx {question.ctx}, KV {question.kv_dtype}",
        caption="needed = weights + KV cache; usable = rig memory × utilization",
    )
    for column in ("rig", "verdict", "weights GB", "KV GB", "needed GB", "usable GB", "max ctx at batch"):
        table.add_column(column)
    for rig in rigs:
        f = footprint(
            arch,
            weight_bits=weight_bits,
            kv_dtype=question.kv_dtype,
            batch=question.batch,
            ctx=question.ctx,
            rig=rig,
            utilization=question.utilization,
            measured_weight_bytes=measured_weight_bytes,
            measured_kv=measured_kv,
        )
        verdict = "fits" if f.fits else "[red]does not fit[/red]"
        numbers = (f.weight_bytes / 1e9, f.kv_bytes / 1e9, f.needed_bytes / 1e9, f.capacity_bytes / 1e9)
        longest = max(0, f.capacity_bytes - f.weight_bytes) // (f.kv_bytes_per_token * question.batch)
        cells = (f"{n:.2f}" if i == 1 else f"{n:.1f}" for i, n in enumerate(numbers))
        table.add_row(rig.name, verdict, *cells, f"{longest:,}")
    source = (
        "measured artifact weight bytes"
        if measured_weight_bytes is not None
        else f"{weight_bits:g} bits per linear weight, other parameters 16-bit"
    )
    note = (
        f"{arch.n_params / 1e9:.2f}B parameters, {arch.n_layers} layers × {arch.n_kv_heads} KV heads × head dim "
        f"{arch.head_dim}: {kv_bytes_per_token(arch, question.kv_dtype):,} KV bytes per token by arithmetic"
        + (f", {round(measured_kv[0]):,} as measured ({measured_kv[1]}, used here)" if measured_kv else "")
        + f"; weights from {source}."
    )
    return table, note
