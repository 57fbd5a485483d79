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
from quantlab.errors import BenchError
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


@dataclass(frozen=True)
class Capabilities:
    """What a runtime can measure, as data: `Runtime.refusal` checks a load against it (the bench's `prepare`
    asks it for every artifact before the first model loads, and every load goes through it), and the sweep's
    rule for lm-eval tasks reads `scores_tasks`."""

    scores_tasks: bool = False  # lm-eval scores the model object it loaded
    compiles: bool = False  # offers a compiled decode loop (--compile)
    spans_gpus: bool = False  # places one model over several GPUs (--tensor-parallel)
    kv_cache_dtypes: tuple[str, ...] = ()  # what --kv-cache-dtype may name in-process; () = none
    kernels: tuple[str, ...] = ()  # matmul kernels --kernel may choose instead of the format's own
    dtypes: bool = True  # computes in a --dtype of the caller's choice (else in the format's own types)
    devices: tuple[str, ...] = ("cpu", "cuda")


@dataclass(frozen=True)
class LoadRequest:
    """How an artifact is to be loaded: `compiled` decodes through a compiled graph, `gpus` places the model over
    that many GPUs from `device` on, `kernel` runs one of the runtime's kernels instead of the format's own."""

    device: str
    dtype: str = "auto"
    kv_cache_dtype: str | None = None
    compiled: bool = False
    gpus: int = 1
    kernel: str | None = None


class Runtime(ABC):
    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    loads_from: ClassVar[str]  # the entry of a manifest's `loads_in` this runtime loads

    def loads(self, loads_in: list[str] | tuple[str, ...]) -> bool:
        """Whether artifacts that load in `loads_in` (a backend's declaration, a manifest's record) are its own."""
        return self.loads_from in loads_in

    def supports(self, artifact: Artifact) -> bool:
        return self.loads(artifact.manifest.loads_in)

    def kernel_problem(self, artifact: Artifact, kernel: str, device: str) -> str | None:
        """Why one of its `kernels` cannot run `artifact` on `device` (the artifact's own side of the question)."""
        return None

    def refusal(self, artifact: Artifact, request: LoadRequest) -> str | None:
        """The one check of a load against the declared capabilities and the format's device need, before any
        weight loads: the whole one-line message, or None when the load can be made."""
        from quantlab.methods import backend_of

        caps, name = self.capabilities, artifact.path.name
        runs = f"{name} runs on the {self.name} runtime"
        if request.device.split(":")[0] not in caps.devices:
            return f"{name}: the {self.name} runtime runs on {' or '.join(caps.devices)}, not {request.device!r}"
        if request.kv_cache_dtype and request.kv_cache_dtype not in caps.kv_cache_dtypes:
            offered = ", ".join(caps.kv_cache_dtypes) or "none (a perplexity window never reads a cache back)"
            return f"--kv-cache-dtype {request.kv_cache_dtype}: {runs}, whose KV-cache types are: {offered}"
        if request.gpus > 1 and not caps.spans_gpus:
            return (
                f"--tensor-parallel {request.gpus}: {runs}, which measures on one device (the transformers runtime "
                "spans GPUs; served, vLLM does)"
            )
        if request.compiled and not caps.compiles:
            return f"--compile: {runs}, which has no compiled decode loop to choose (the transformers runtime has)"
        if request.compiled and request.gpus > 1:
            return "--compile decodes on one GPU; a model over several (--tensor-parallel) decodes eager"
        if request.kernel and request.kernel not in caps.kernels:
            return f"{name}: the {self.name} runtime has no --kernel {request.kernel} (the transformers runtime has)"
        if request.dtype != "auto" and not caps.dtypes:
            return f"{name}: the {self.name} runtime computes in the format's own types; --dtype does not apply"
        spec = artifact.manifest.spec
        problem = backend_of(spec).device_need(spec).problem(request.device) or (
            request.kernel and self.kernel_problem(artifact, request.kernel, request.device)
        )
        return f"{name}: {problem}" if problem else None

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
        """Load `artifact` for measurement, refused in one line (`refusal`) before any weight loads."""
        return self.load_as(artifact, LoadRequest(device, dtype, kv_cache_dtype, compiled, gpus, kernel))

    def load_as(self, artifact: Artifact, request: LoadRequest) -> Session:
        problem = self.refusal(artifact, request)
        if problem:
            raise BenchError(problem)
        return self.open(artifact, request)

    @abstractmethod
    def open(self, artifact: Artifact, request: LoadRequest) -> Session:
        """Load what `refusal` accepted: the runtimes trust it and check nothing again."""
