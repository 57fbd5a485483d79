"""What is measured: quality (perplexity, divergence), speed, memory, cost. Never imports a method.

`from quantlab.bench import bench, BenchConfig` is the library entry point (same code as `quantlab bench`);
`bench_load` serves an artifact and measures it under load (`quantlab bench --load`).
"""


def __getattr__(name: str):
    if name == "bench":
        from quantlab.bench.run import bench

        return bench
    if name == "bench_load":
        from quantlab.bench.served import bench_load

        return bench_load
    if name == "BenchConfig":
        from quantlab.bench.config import BenchConfig

        return BenchConfig
    raise AttributeError(name)


__all__ = ["BenchConfig", "bench", "bench_load"]
