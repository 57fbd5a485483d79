"""quantlab: quantize LLMs to every format that matters, serve each artifact in a real runtime, measure it
the same way every time. The library API mirrors the CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("quantlab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"


def __getattr__(name: str):
    # Lazy: `import quantlab` must stay cheap (the CLI's --help should not import torch).
    if name == "quantize":
        from quantlab.quantizer import quantize

        return quantize
    if name == "MethodSpec":
        from quantlab.spec import MethodSpec

        return MethodSpec
    raise AttributeError(name)


# Benching: `from quantlab.bench import bench, BenchConfig` (`quantlab.bench` is the measuring subpackage).
__all__ = ["MethodSpec", "__version__", "quantize"]
