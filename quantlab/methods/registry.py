"""The explicit registry of (method, backend) pairs, and what the CLI help says from their declarations.

`BACKENDS` is the one list of what exists, as `module:Class` entries imported on first use: the registry knows
the backends, a backend never knows the registry (no import cycle), and `quantlab quantize --help` stays light
(the method modules import no torch and no quantization library at module level).
"""

from __future__ import annotations

import functools
import importlib

from quantlab.errors import SpecError
from quantlab.methods.base import Backend
from quantlab.spec import OPTION_FIELDS, MethodSpec

BACKENDS = (
    "quantlab.methods.none:NoneTransformers",
    "quantlab.methods.rtn:RtnLlmCompressor",
    "quantlab.methods.gptq:GptqLlmCompressor",
    "quantlab.methods.gptq:GptqGptqModel",
    "quantlab.methods.gptq:GptqAutoGptq",
    "quantlab.methods.awq:AwqLlmCompressor",
    "quantlab.methods.awq:AwqGptqModel",
    "quantlab.methods.awq:AwqAutoAwq",
    "quantlab.methods.autoround:AutoRoundLlmCompressor",
    "quantlab.methods.autoround:AutoRoundGGUF",
    "quantlab.methods.gguf:GGUFLlamaCpp",
    "quantlab.methods.fp8:Fp8LlmCompressor",
    "quantlab.methods.fp4:Fp4LlmCompressor",
    "quantlab.methods.bnb:BnbBitsandbytes",
    "quantlab.methods.torchao_backend:TorchaoBackend",
)


def check_declaration(cls: type[Backend]) -> None:
    """A wrong declaration would otherwise surface as a confusing refusal (or none) only when someone passes that
    option, so each is checked when the registry loads."""
    key = (cls.method, cls.name)
    options = getattr(cls, "options", None)
    if options is None or not options <= set(OPTION_FIELDS) or not getattr(cls, "refusal", ""):
        raise RuntimeError(f"backend {key} must declare `options`, a subset of {OPTION_FIELDS}, and a `refusal`")
    if ("scheme" in cls.options) != bool(cls.schemes) or (cls.schemes and cls.default_scheme not in cls.schemes):
        raise RuntimeError(f"backend {key}: `schemes` and `default_scheme` must be declared with the scheme option")
    if not getattr(cls, "loads_in", ()):
        raise RuntimeError(f"backend {key} must declare `loads_in`: where its artifacts load unmodified")


@functools.cache
def _registered() -> dict[tuple[str, str], Backend]:
    found: dict[tuple[str, str], Backend] = {}
    for entry in BACKENDS:
        module, _, name = entry.partition(":")
        cls = getattr(importlib.import_module(module), name)
        check_declaration(cls)
        key = (cls.method, cls.name)
        if key in found:
            raise RuntimeError(f"backend {key} listed twice")
        found[key] = cls()
    return found


def all_backends() -> list[Backend]:
    return sorted(_registered().values(), key=lambda b: (b.method, not b.default, b.name))


def method_names() -> list[str]:
    return sorted({method for method, _ in _registered()})


def get_backend(method: str, backend: str | None = None) -> Backend:
    if method not in method_names():
        raise SpecError(f"unknown method {method!r}; available: {', '.join(method_names())}")
    registered = _registered()
    if backend is None:
        return next(b for (m, _), b in registered.items() if m == method and b.default)
    found = registered.get((method, backend))
    if found is None:
        names = sorted(n for m, n in registered if m == method)
        raise SpecError(f"method {method!r} has no backend {backend!r}; available: {', '.join(names)}")
    return found


def backend_of(spec: MethodSpec) -> Backend:
    """The backend that made (or would make) `spec`: what a planner or a runtime asks about a format, instead of
    matching its method name."""
    return get_backend(spec.method, spec.backend)


def option_takers() -> dict[str, list[str]]:
    """Option field → the `method/backend`s that take it (method order, default backend first), for an
    option's help line ("taken by gptq, awq/llmcompressor"). Every option field is a key."""
    backends = all_backends()
    return {option: [f"{b.method}/{b.name}" for b in backends if option in b.options] for option in OPTION_FIELDS}


def schemes() -> dict[str, list[str]]:
    """Method → its scheme names, the default first, for the methods that take --scheme: the choices the CLI
    lists, exactly those `normalize` accepts (case aside)."""
    found: dict[str, list[str]] = {}
    for backend in all_backends():
        if backend.schemes:
            names = found.setdefault(backend.method, [backend.default_scheme])
            names += [s for s in backend.schemes if s not in names]
    return found
