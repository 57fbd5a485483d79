"""What every serving engine is to quantlab: a launch plan and the contract an engine fulfils (`serve.engines`
holds the engines themselves).

An engine is a real server started as its own process (`process.ServerProcess`), never an in-process imitation.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

from quantlab.artifact import Artifact
from quantlab.errors import ServeError
from quantlab.results.kernels import KvAllocation
from quantlab.results.serving import EnginePython, ServingOptions

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class LaunchPlan:
    """Everything needed to start and talk to one server."""

    command: list[str]
    env: dict[str, str]
    base_url: str
    health_path: str
    model: str  # the `model` field requests must carry
    flags: list[str] = field(default_factory=list)  # the engine settings the result records (no paths, no port)


class Engine(ABC):
    name: ClassVar[str]
    distribution: ClassVar[str]  # the PyPI distribution whose version the results record
    module: ClassVar[str]  # importable when the engine is installed
    install_hint: ClassVar[str]
    batches_requests: ClassVar[bool]  # whether concurrent requests share forward passes
    batching_note: ClassVar[str]  # how it batches, in the words the report prints
    verified: ClassVar[bool] = True  # False: quantlab has not run this engine on a real host
    # quantlab's in-process runtime that loads artifacts with the same library: it decides what the engine
    # can serve and reads the kernel path the server will run (a server does not report it).
    same_library_runtime: ClassVar[str]
    kv_cache_dtypes: ClassVar[tuple[str, ...]] = ()  # what --kv-cache-dtype may name; () = no KV quantization
    prefix_caching: ClassVar[bool] = False
    speculation: ClassVar[tuple[str, ...]] = ()  # "draft" (a draft model) and/or "ngram" (draft-free)
    tensor_parallel: ClassVar[bool] = False  # splits one copy of the model over several GPUs
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    loads_from: ClassVar[str | None] = None  # a manifest `loads_in` entry the artifact must also name
    # False: the engine picks its kernel at load time and does not say which; quantlab records `unknown`
    kernel_readable: ClassVar[bool] = True

    def check_options(self, options: ServingOptions) -> None:
        """Refuse a lever this engine lacks, before anything starts."""
        dtype = options.kv_cache_dtype
        if dtype and dtype not in self.kv_cache_dtypes:
            offered = f"it offers {', '.join(self.kv_cache_dtypes)}" if self.kv_cache_dtypes else "it has none"
            raise ServeError(f"engine {self.name!r} has no KV-cache type {dtype!r} ({offered})")
        if options.prefix_cache and not self.prefix_caching:
            raise ServeError(f"engine {self.name!r} has no prefix cache quantlab can switch on")
        if options.speculative and options.speculative not in self.speculation:
            raise ServeError(f"engine {self.name!r} has no {options.speculative} speculative decoding quantlab drives")
        if options.tensor_parallel > 1 and not self.tensor_parallel:
            raise ServeError(
                f"engine {self.name!r} serves a model on one device here; --tensor-parallel "
                f"{options.tensor_parallel} needs --engine vllm"
            )

    def request_fields(self, max_tokens: int, options: ServingOptions) -> dict:
        """Fields every request carries besides prompt and max_tokens."""
        return self.fixed_length(max_tokens)

    def kv_allocation(self, log: str) -> KvAllocation | None:
        """The KV cache the server says it allocated (its own log), or None where it does not say."""
        return None

    def supports(self, artifact: Artifact) -> bool:
        """Whether it serves this artifact: its manifest says it loads where the engine loads from."""
        from quantlab.runtimes import RUNTIMES

        loads = self.loads_from is None or self.loads_from in artifact.manifest.loads_in
        return loads and RUNTIMES[self.same_library_runtime].supports(artifact)

    def serves_on(self, device: str) -> bool:
        return device.split(":")[0] in self.devices

    def missing(self) -> str | None:
        """Why the engine cannot start here, or None."""
        if importlib.util.find_spec(self.module) is None:
            return f"engine {self.name!r} is not installed ({self.install_hint})"
        return None

    def engine_python(self) -> EnginePython | None:
        """The interpreter the server runs under, for an engine that may run under another one than quantlab's
        (`serve.vllm`); None: the engine runs from quantlab's own environment."""
        return None

    def version(self) -> str:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    def plan(
        self,
        artifact: Artifact,
        *,
        port: int,
        device: str,
        threads: int,
        ctx: int,
        max_concurrency: int = 32,
        options: ServingOptions | None = None,
    ) -> LaunchPlan:
        """How to start this engine for `artifact`; a lever it lacks is refused here, for every caller."""
        options = options or ServingOptions()
        self.check_options(options)
        if not self.serves_on(device):
            raise ServeError(f"engine {self.name!r} is wired for {'/'.join(self.devices)} rigs, not {device}")
        return self._plan(
            artifact, port=port, device=device, threads=threads, ctx=ctx, max_concurrency=max_concurrency,
            options=options,
        )  # fmt: skip

    @abstractmethod
    def _plan(
        self,
        artifact: Artifact,
        *,
        port: int,
        device: str,
        threads: int,
        ctx: int,
        max_concurrency: int,
        options: ServingOptions,
    ) -> LaunchPlan: ...

    @abstractmethod
    def fixed_length(self, max_tokens: int) -> dict:
        """Request fields (besides max_tokens) that make the server generate exactly max_tokens tokens."""


def _env(threads: int) -> dict[str, str]:
    # Thread counts are part of what is measured: the same count for every engine on the host.
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "TRANSFORMERS_VERBOSITY": "warning", "PYTHONUNBUFFERED": "1"}


def loopback_plan(program: list[str], flags: list[str], *, port: int, threads: int, model: str) -> LaunchPlan:
    """Every engine: `program` + its settings, served on loopback at `port`, ready when /health answers."""
    return LaunchPlan(
        command=[*program, *flags, "--host", LOOPBACK, "--port", str(port)],
        env=_env(threads),
        base_url=f"http://{LOOPBACK}:{port}",
        health_path="/health",
        model=model,
        flags=flags,
    )
