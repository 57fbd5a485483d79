"""Quantization methods. Each module registers its backends on import; this list is the registry's source."""

from quantlab.methods import (  # noqa: F401  (imported for registration)
    awq,
    bnb,
    fp4,
    fp8,
    gguf,
    gptq,
    none,
    rtn,
    torchao_backend,
)
from quantlab.methods.registry import all_backends, get_backend, method_names, option_takers, schemes

__all__ = ["all_backends", "get_backend", "method_names", "option_takers", "schemes"]
