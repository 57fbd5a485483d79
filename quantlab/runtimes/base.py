"""The runtime contract: how an artifact is served for measurement.

Every runtime gets token ids, never text, so all runtimes score the same stream. `describe()` must say
which kernel path really ran — a dense matmul on dequantized weights is not a low-bit kernel, and a CPU
table must not let a reader think otherwise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from quantlab.artifact import Artifact
from quantlab.results.kernels import RuntimeDescription
from quantlab.roofline import BytesPerToken


@dataclass(frozen=True)
class GenTiming:
    """One timed generation: prefill = prompt forward up to the first new token; decode = the rest."""

    batch_size: int
    prompt_tokens: int
    new_tokens: int
    prefill_s: float
    decode_s: float
    tokens: np.ndarray | None = None  # the greedy ids [batch, new_tokens], where the runtime returns them


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

    def profile_decode(self, prompts: np.ndarray, new_tokens: int) -> None:  # noqa: B027 - optional hook
        """Profile one more generation's decode steps for the record (where the time goes); runtimes that
        cannot leave it out."""

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
    kv_cache_dtypes: ClassVar[tuple[str, ...]] = ()  # what --kv-cache-dtype may name in-process; () = none
    compiles: ClassVar[bool] = False  # offers a compiled decode loop (--compile)
    spans_gpus: ClassVar[bool] = False  # places one model over several GPUs (--tensor-parallel)
    kernels: ClassVar[tuple[str, ...]] = ()  # matmul kernels --kernel may choose instead of the format's own

    def kernel_problem(self, artifact: Artifact, kernel: str, device: str) -> str | None:
        """Why `--kernel kernel` cannot run `artifact` on `device`, asked before any weight loads."""
        return f"the {self.name} runtime has no --kernel choice"

    @abstractmethod
    def supports(self, artifact: Artifact) -> bool: ...

    def device_problem(self, artifact: Artifact, device: str) -> str | None:
        """Why `artifact` cannot run on `device` (a kernel the device lacks), asked before any weight loads."""
        return None

    @abstractmethod
    def load(
        self,
        artifact: Artifact,
        *,
        device: str,
        dtype: str = "auto",
        kv_cache_dtype: str | None = None,
        compiled: bool = False,
        gpus: int = 1,
        kernel: str | None = None,
    ) -> Session:
        """`compiled`: decode through a compiled graph (runtimes that offer one; the others refuse it). `gpus`: the
        GPUs the model is placed over, from `device` on (runtimes that span GPUs; the others refuse more than 1).
        `kernel`: one of `kernels`, run instead of the format's own matmul (the others refuse it)."""
