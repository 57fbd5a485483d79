"""What is measured: quality (perplexity, divergence), speed, memory, cost. Never imports a method.

`from quantlab.bench import bench, BenchOptions` is the library entry point (same code as `quantlab bench`).
"""


def __getattr__(name: str):
    if name in ("bench", "BenchOptions"):
        from quantlab.bench import run

        return getattr(run, name)
    raise AttributeError(name)


__all__ = ["BenchOptions", "bench"]
