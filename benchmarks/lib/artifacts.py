"""Artifacts the benchmarks keep in the quantlab cache, made through `quantlab.quantizer.obtain`, the one "reuse
or quantize": a kept artifact is reused while it is what the request asks for now (same request, same source
model, same tokenizer), else quantized again in its place, so a changed method or model never measures stale
files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.lib.console import log

if TYPE_CHECKING:
    from quantlab.artifact import Artifact
    from quantlab.spec import MethodSpec


def cache_path(model: str, spec: MethodSpec, name: str) -> Path:
    """<quantlab cache>/benchmarks/<method>/<model>-<name>: one folder per model and request the benchmarks
    share."""
    from quantlab.paths import cache_dir

    return cache_dir() / "benchmarks" / spec.method / f"{model.replace('/', '--')}-{name}"


def cached(model: str, spec: MethodSpec, name: str) -> Artifact:
    """`spec` applied to `model`, kept under the cache (`cache_path`) and reused while it matches."""
    from quantlab.quantizer import obtain

    return obtain(model, spec, cache_path(model, spec, name), log=lambda msg: log(f"{model} {name}: {msg}"))


def unquantized(model: str, dtype: str) -> Artifact:
    """The `none` artifact of `model` in `dtype` (bf16, fp32): the dense reference most benchmarks start from."""
    from quantlab.spec import MethodSpec

    return cached(model, MethodSpec(method="none", dtype=dtype), dtype)


def gguf(model: str, scheme: str) -> Artifact:
    """The GGUF artifact of `model` in llama.cpp type `scheme` (F16, Q8_0, Q4_K_M, ...)."""
    from quantlab.spec import MethodSpec

    return cached(model, MethodSpec(method="gguf", scheme=scheme), scheme)
