"""quantlab: quantize LLMs to every format that matters, serve each artifact in a real runtime, measure it
the same way every time. The library API mirrors the CLI."""


def __getattr__(name: str):
    # Lazy: `import quantlab` must stay cheap (the CLI's --help should not import torch), and nothing inside the
    # package imports this facade (tests/test_layers.py): its modules take what they need from where it lives.
    if name == "quantize":
        from quantlab.quantizer import quantize

        return quantize
    if name == "MethodSpec":
        from quantlab.spec import MethodSpec

        return MethodSpec
    if name == "__version__":
        from quantlab.env import quantlab_version

        return quantlab_version()
    raise AttributeError(name)


# Benching: `from quantlab.bench import bench, BenchConfig` (`quantlab.bench` is the measuring subpackage).
__all__ = ["MethodSpec", "__version__", "quantize"]
