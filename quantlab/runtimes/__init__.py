"""Runtimes that serve artifacts for measurement, and the choice of one for an artifact."""

from __future__ import annotations

from quantlab.artifact import Artifact
from quantlab.errors import BenchError
from quantlab.runtimes.base import Capabilities, LoadRequest, Runtime, Session
from quantlab.runtimes.llamacpp_rt import LlamaCppRuntime
from quantlab.runtimes.transformers_rt import TransformersRuntime

RUNTIMES: dict[str, Runtime] = {runtime.name: runtime for runtime in (TransformersRuntime(), LlamaCppRuntime())}


def select_runtime(artifact: Artifact, name: str | None = None) -> Runtime:
    if name is not None:
        runtime = RUNTIMES.get(name)
        if runtime is None:
            raise BenchError(f"unknown runtime {name!r}; available: {', '.join(RUNTIMES)}")
        if not runtime.supports(artifact):
            raise BenchError(f"runtime {name!r} cannot load {artifact.path} ({artifact.manifest.format})")
        return runtime
    for runtime in RUNTIMES.values():
        if runtime.supports(artifact):
            return runtime
    raise BenchError(f"no runtime can load {artifact.path} ({artifact.manifest.format})")


def runtime_for(loads_in: list[str] | tuple[str, ...], name: str | None = None) -> Runtime | None:
    """The runtime that will measure artifacts loading in `loads_in` (a backend's declaration, before any artifact
    exists), the named one if it can; None when none can."""
    candidates = [RUNTIMES[name]] if name in RUNTIMES else [] if name else list(RUNTIMES.values())
    return next((runtime for runtime in candidates if runtime.loads(loads_in)), None)


def default_device() -> str:
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


__all__ = [
    "RUNTIMES",
    "Capabilities",
    "LoadRequest",
    "Runtime",
    "Session",
    "default_device",
    "runtime_for",
    "select_runtime",
]
