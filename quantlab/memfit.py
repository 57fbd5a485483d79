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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from quantlab.errors import ModelNotFoundError
from quantlab.results.fit import Footprint
from quantlab.rigs import Rig
from quantlab.spec import dtype_short

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
    vocab_size: int  # the output head's width: the length of every row of logits
    dtype: str  # the config's dtype (fp32 | bf16 | fp16 | ...), what a load with dtype `auto` computes in


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
    dtype = getattr(text, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    return Architecture(
        model_type=config.model_type,
        n_layers=text.num_hidden_layers,
        n_kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        n_params=sum(p.numel() for p in model.parameters()),
        linear_params=linear,
        vocab_size=head.weight.shape[0],
        dtype=dtype_short(dtype),
    )


def architecture_of(path: str | Path) -> Architecture:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise ModelNotFoundError(f"cannot read the model config in {path}: {exc}") from exc
    return architecture(config)


def config_dir(artifact) -> Path:
    """Where an artifact's config.json is: its own folder, or (GGUF artifacts have none) its source model's."""
    return artifact.path if (artifact.path / "config.json").is_file() else Path(artifact.manifest.source.path)


def architecture_of_artifact(artifact) -> Architecture:
    return architecture_of(config_dir(artifact))


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


# The quality bench, as the code holds it (bench/quality.py, bench/reference.py, the runtimes' `logits()`).
LOGPROB_BYTES = 4  # float32: a reference's rows, and every log-probability row scoring computes on the host
# Host blocks of one window's rows ((ctx − 1) × vocab float32) alive at once at the peak, per role. Scoring holds
# one: a window's float32 logits become its log-probs in place, the baseline's rows are streamed from the reference
# a few rows at a time, and each window's block is freed before the next one's logits. Making a reference holds
# two: one window's rows written on a thread while the next window is computed.
QualityRole = Literal["scored", "alone", "reference"]
HOST_BLOCKS: dict[str, int] = {"scored": 1, "alone": 1, "reference": 2}
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


class QualityFootprint(BaseModel):
    """One cell's quality measurement on one rig: on its device the weights, the KV of one window at the bench's
    ctx and batch 1 (`memory`), and the logits of that window as the runtime holds them; on the host, the
    log-probability rows. The baseline is never loaded beside it: its rows are read from the reference file."""

    model_config = ConfigDict(extra="forbid")

    memory: Footprint  # weights + KV cache, placed on the rig
    runtime: str
    logits_bytes: int  # on the device: the logits of one window (and the float32 copy scoring takes of them)
    host_bytes: int  # on the host: the log-probability rows alive at once
    needed_bytes: int  # the device's: weights + KV + logits (+ the host's rows on a rig with no GPU: one memory)
    fits: bool | None = None


def window_rows_bytes(vocab: int, ctx: int) -> int:
    """One window's log-probabilities: every position but the last, float32 over the vocabulary."""
    return (ctx - 1) * vocab * LOGPROB_BYTES


def reference_bytes(vocab: int, ctx: int, windows: int) -> int:
    """A reference file's rows and scored ids (the JSON header, a few kB with one sha256 per window, not counted)."""
    return windows * window_rows_bytes(vocab, ctx) + windows * ctx * 4


def quality_footprint(
    arch: Architecture,
    *,
    runtime: str,
    role: QualityRole,
    ctx: int,
    compute_dtype: str,
    weight_bits: float = 16,
    other_bits: float = 16,
    rig: Rig | None = None,
    utilization: float = DEFAULT_UTILIZATION,
    gpus: int | None = None,
) -> QualityFootprint:
    """`role`: `scored` (a cell against its reference), `alone` (no baseline) or `reference` (the baseline making
    its reference, loaded alone). `compute_dtype`: what the transformers runtime computes the logits in."""
    from quantlab.llamacpp import BATCH_TOKENS, SPEED_CTX

    vocab = arch.vocab_size
    if runtime == "llamacpp":
        # Its quality pass runs in the session's speed context, or in one as long as a window that does not fit
        # there; its compute buffer holds one batch's float32 logits, and on the host llama.cpp's output buffer
        # another batch's (the window's tensor `logits()` fills from it is freed before the KLD's peak).
        kv_ctx = max(ctx, SPEED_CTX)
        logits = BATCH_TOKENS * vocab * 4
        held = BATCH_TOKENS * vocab * 4
    else:
        # transformers: the head's logits of every position in the compute dtype and the float32 copy `logits()`
        # returns (none when they are float32 already). It scores with use_cache=False, so the KV term is room
        # for the forward's own buffers rather than a cache it keeps.
        kv_ctx = ctx
        per_entry = DTYPE_BYTES.get(compute_dtype, 2) + (4 if compute_dtype != "fp32" else 0)
        logits = ctx * vocab * per_entry
        held = 0
    memory = footprint(
        arch,
        weight_bits=weight_bits,
        other_bits=other_bits,
        batch=1,
        ctx=kv_ctx,
        rig=rig,
        utilization=utilization,
        gpus=gpus,
    )
    host = HOST_BLOCKS[role] * window_rows_bytes(vocab, ctx) + held
    needed = memory.needed_bytes + logits + (host if rig is not None and not rig.n_gpus else 0)
    result = QualityFootprint(memory=memory, runtime=runtime, logits_bytes=logits, host_bytes=host, needed_bytes=needed)
    if rig is None:
        return result
    return result.model_copy(update={"fits": needed <= memory.capacity_bytes and not memory.short_of_gpus()})
