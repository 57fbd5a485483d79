"""The explicit registry of (method, backend) pairs, and what the CLI help says from their declarations.

Import-light on purpose (no torch, no quantization library): `quantlab quantize --help` is built from it.
"""

from __future__ import annotations

from quantlab.errors import SpecError
from quantlab.methods.base import Backend
from quantlab.spec import OPTION_FIELDS

_BACKENDS: dict[tuple[str, str], Backend] = {}


def register(cls: type[Backend]) -> type[Backend]:
    """Add a backend, checking its declaration now: a wrong one would otherwise surface as a confusing refusal
    (or none) only when someone passes that option."""
    key = (cls.method, cls.name)
    if key in _BACKENDS:
        raise RuntimeError(f"backend {key} registered twice")
    options = getattr(cls, "options", None)
    if options is None or not options <= set(OPTION_FIELDS) or not getattr(cls, "refusal", ""):
        raise RuntimeError(f"backend {key} must declare `options`, a subset of {OPTION_FIELDS}, and a `refusal`")
    if ("scheme" in cls.options) != bool(cls.schemes) or (cls.schemes and cls.default_scheme not in cls.schemes):
        raise RuntimeError(f"backend {key}: `schemes` and `default_scheme` must be declared with the scheme option")
    _BACKENDS[key] = cls()
    return cls


def _registered() -> dict[tuple[str, str], Backend]:
    """The backends, after making sure every method module has registered its own (they do so on import)."""
    import quantlab.methods  # noqa: F401

    return _BACKENDS


def all_backends() -> list[Backend]:
    return sorted(_registered().values(), key=lambda b: (b.method, not b.default, b.name))


def method_names() -> list[str]:
    return sorted({method for method, _ in _registered()})


def get_backend(method: str, backend: str | None = None) -> Backend:
    if method not in method_names():
        raise SpecError(f"unknown method {method!r}; available: {', '.join(method_names())}")
    if backend is None:
        defaults = [b for (m, _), b in _BACKENDS.items() if m == method and b.default]
        return defaults[0]
    found = _BACKENDS.get((method, backend))
    if found is None:
        names = sorted(n for m, n in _BACKENDS if m == method)
        raise SpecError(f"method {method!r} has no backend {backend!r}; available: {', '.join(names)}")
    return found


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
