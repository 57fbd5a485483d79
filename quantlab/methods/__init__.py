"""Quantization methods: one module per method, its backends listed in `registry.BACKENDS`."""

from quantlab.methods.registry import (
    all_backends,
    backend_of,
    get_backend,
    method_names,
    option_takers,
    schemes,
)

__all__ = ["all_backends", "backend_of", "get_backend", "method_names", "option_takers", "schemes"]
