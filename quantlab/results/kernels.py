"""The kernel vocabulary: which computation really produced a speed or memory figure.

A dense matmul on dequantized weights is not a low-bit kernel; every runtime says which path ran with one of
these words, and every table marks the cells whose speed is not the format's own.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quantlab.results.schema import Schema

Kernel = Literal["dense", "native", "mixed", "dequantized", "emulated", "unknown"]

KERNEL_MEANING: dict[str, str] = {
    "dense": "unquantized weights, the framework's ordinary matmul",
    "native": "a low-bit kernel computes on the packed weights",
    "mixed": "a low-bit kernel for some matmul shapes only (the detail says which, e.g. batch-1 decode) and "
    "dequantized dense matmuls for the rest: some speed cells are those of the float model",
    "dequantized": "weights are expanded to a float dtype and multiplied densely: memory and speed are "
    "those of the float model, not of the low-bit format",
    "emulated": "the format's arithmetic (e.g. FP8/FP4 activation quantization) is simulated in software on "
    "dequantized weights: quality is the format's, speed and memory say nothing about hardware that "
    "runs it natively",
    "unknown": "quantlab could not identify the kernel the library chose: treat speed and memory with care",
}


def speed_is_formats_own(kernel: str) -> bool:
    """Whether speed and memory measured on this kernel path are the format's own (dense or native), the rule
    behind every † mark, hollow marker and recommendation caution: on any other path they are a float model's
    or an emulation's."""
    return kernel in ("dense", "native")


class OpShare(Schema):
    """One op of a profiled decode: its share of the profiled time and its calls per decode step."""

    op: str
    share: float  # of the op total over the profiled steps (self time: device time on CUDA, CPU time on a CPU)
    calls_per_step: float


class DecodePath(Schema):
    """How the decode steps ran: eager Python calling the model per token, or one compiled graph per step.

    On a GPU the eager loop measures the Python and kernel-launch overhead more than the hardware (measured on an
    H200: 19% of the bandwidth limit for bf16, eager), so a speed figure says which loop made it."""

    mode: Literal["eager", "compiled"]
    detail: str  # the cache and compiler settings that ran
    compile_s: float | None = None  # untimed: the first (compiling) warm-up generations less a warm one, summed
    fallback: str | None = None  # compiled was asked for and eager ran: why (a graph break, no compiler)
    # compiled: each warmed-up shape's greedy sequences compared with eager ones on the same prompts, over the same
    # static cache (what compilation changes) and over the eager loop's DynamicCache (what the static cache changes)
    eager_check_sequences: int = 0
    eager_check_identical: int = 0
    eager_check_identical_dynamic: int = 0
    # where a compiled sequence parts from the eager loop's, the largest top-2 logit gap of the eager loop at the
    # first differing token: a gap near the dtype's rounding step means a near-tie flipped, not a wrong result
    eager_check_divergence_margin: float | None = None
    # where the time goes: the top ops of the batch-1 decode steps under torch.profiler (prefill excluded)
    profile: list[OpShare] = Field(default_factory=list)
    profile_detail: str | None = None


class KvAllocation(Schema):
    """The KV cache as the engine allocated it (read from the engine, not computed from the architecture)."""

    type_k: str
    type_v: str
    cells: int  # token positions the cache holds, over all its streams (slots)
    bytes: int
    bytes_per_token: float
    source: str  # where the figure was read


class RuntimeDescription(Schema):
    runtime: str
    runtime_version: str
    device: str  # cpu | cuda:0 ...
    device_name: str
    threads: int
    compute_dtype: str
    kernel: Kernel
    kernel_detail: str
    batching: str = "batched: all sequences of a batch in one forward per step"
    kv_cache: str | None = None  # the KV cache's type, attention path and bytes per token, where the runtime says
    kv_allocation: KvAllocation | None = None
    kv_cache_dtype: str | None = None  # the KV type asked for (--kv-cache-dtype); None: the runtime's default
    decode: DecodePath | None = None  # the speed worker's decode loop; None in records made before it was recorded
    kernel_option: str | None = None  # the --kernel that replaced the format's own matmul; None: the format's
    placement: str | None = None  # how one model was spread over several GPUs (--tensor-parallel); None: one device
