"""The runtime contract: how an artifact is served for measurement.

Every runtime gets token ids, never text, so all runtimes score the same stream. `describe()` must say
which kernel path really ran — a dense matmul on dequantized weights is not a low-bit kernel, and a CPU
table must not let a reader think otherwise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from quantlab.artifact import Artifact
from quantlab.roofline import BytesPerToken

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


class RuntimeDescription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runtime: str
    runtime_version: str
    device: str  # cpu | cuda:0 ...
    device_name: str
    threads: int
    compute_dtype: str
    kernel: Kernel
    kernel_detail: str
    batching: str = "batched: all sequences of a batch in one forward per step"


@dataclass(frozen=True)
class GenTiming:
    """One timed generation: prefill = prompt forward up to the first new token; decode = the rest."""

    batch_size: int
    prompt_tokens: int
    new_tokens: int
    prefill_s: float
    decode_s: float


class Session(ABC):
    max_batch_size: int | None = None  # None: any batch size; else larger ones are skipped (see describe)

    @abstractmethod
    def logits(self, ids: np.ndarray) -> "torch.Tensor":  # noqa: F821, UP037
        """Float32 logits [len(ids), vocab] for one window of ids, no special tokens added."""

    @abstractmethod
    def timed_generate(self, prompts: np.ndarray, new_tokens: int) -> GenTiming:
        """Greedy-generate exactly `new_tokens` for each row of `prompts` [batch, prompt_len]."""

    @abstractmethod
    def describe(self) -> RuntimeDescription: ...

    def bytes_per_token(self, prompt_tokens: int, new_tokens: int) -> BytesPerToken | None:
        """What one batch-1 decode step reads from memory (weights as loaded + KV cache), for the roofline;
        None where the runtime cannot say."""
        return None

    def hf_model(self):
        """The loaded transformers model, for harnesses that score a model object (lm-eval); None if the
        runtime has none."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model."""


class Runtime(ABC):
    name: ClassVar[str]

    @abstractmethod
    def supports(self, artifact: Artifact) -> bool: ...

    @abstractmethod
    def load(self, artifact: Artifact, *, device: str, dtype: str = "auto") -> Session: ...
