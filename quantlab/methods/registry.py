"""The explicit registry of (method, backend) pairs."""

from __future__ import annotations

from quantlab.errors import SpecError
from quantlab.methods.base import Backend

_BACKENDS: dict[tuple[str, str], Backend] = {}


def register(cls: type[Backend]) -> type[Backend]:
    key = (cls.method, cls.name)
    if key in _BACKENDS:
        raise RuntimeError(f"backend {key} registered twice")
    _BACKENDS[key] = cls()
    return cls


def all_backends() -> list[Backend]:
    return sorted(_BACKENDS.values(), key=lambda b: (b.method, not b.default, b.name))


def method_names() -> list[str]:
    return sorted({method for method, _ in _BACKENDS})


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
