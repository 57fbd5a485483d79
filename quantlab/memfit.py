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

from pydantic import BaseModel, ConfigDict

from quantlab.errors import ModelNotFoundError
from quantlab.rigs import Rig

KV_DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}
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
    batch: int
    ctx: int
    kv_bytes: int
    needed_bytes: int  # weights + KV
    rig: str | None = None
    capacity_bytes: int | None = None  # rig memory × utilization
    utilization: float | None = None
    fits: bool | None = None

    def verdict(self) -> str:
        need = (f"{self.needed_bytes / 1e9:.1f} GB (weights {self.weight_bytes / 1e9:.1f} + KV "
                f"{self.kv_bytes / 1e9:.1f})")
        if self.fits is None:
            return f"needs {need}"
        room = f"{self.capacity_bytes / 1e9:.1f} GB usable ({self.utilization:.0%} of {self.rig})"
        return f"{'fits' if self.fits else 'does NOT fit'}: needs {need}, {room}"


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
    return Architecture(model_type=config.model_type, n_layers=text.num_hidden_layers,
                        n_kv_heads=getattr(text, "num_key_value_heads", None) or heads, head_dim=head_dim,
                        n_params=sum(p.numel() for p in model.parameters()), linear_params=linear)


def architecture_of(path: str | Path) -> Architecture:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise ModelNotFoundError(f"cannot read the model config in {path}: {exc}") from exc
    return architecture(config)


def kv_bytes_per_token(arch: Architecture, kv_dtype: str = "bf16") -> int:
    return arch.n_layers * arch.n_kv_heads * arch.head_dim * 2 * KV_DTYPE_BYTES[kv_dtype]


def weight_bytes(arch: Architecture, weight_bits: float, other_bits: float = 16) -> int:
    """Quantized linear weights at `weight_bits` per weight (include the scales, e.g. 4 + 16/128 for int4 with
    one fp16 scale per 128), every other parameter (embeddings, output head, norms) at `other_bits`."""
    return round(arch.linear_params * weight_bits / 8 + (arch.n_params - arch.linear_params) * other_bits / 8)


def rig_capacity(rig: Rig) -> int:
    if rig.memory_gb is not None:
        return int(rig.memory_gb * 1e9)
    import psutil

    return psutil.virtual_memory().total  # the `cpu` rig: this host's memory


def footprint(arch: Architecture, *, weight_bits: float = 16, other_bits: float = 16, kv_dtype: str = "bf16",
              batch: int = 1, ctx: int = 4096, rig: Rig | None = None,
              utilization: float = DEFAULT_UTILIZATION, measured_weight_bytes: int | None = None) -> Footprint:
    """`measured_weight_bytes` (an artifact's) replaces the estimate when given."""
    per_token = kv_bytes_per_token(arch, kv_dtype)
    weights = measured_weight_bytes if measured_weight_bytes is not None else weight_bytes(arch, weight_bits,
                                                                                           other_bits)
    kv = per_token * batch * ctx
    result = Footprint(weight_bits=weight_bits, weight_bytes=weights, kv_dtype=kv_dtype, kv_bytes_per_token=per_token,
                       batch=batch, ctx=ctx, kv_bytes=kv, needed_bytes=weights + kv)
    if rig is None:
        return result
    capacity = int(rig_capacity(rig) * utilization)
    return result.model_copy(update={"rig": rig.name, "capacity_bytes": capacity, "utilization": utilization,
                                     "fits": weights + kv <= capacity})
