"""Is `torch._scaled_mm` on this CPU an FP8 kernel, or an upcast and an ordinary matmul?

    python -m benchmarks.crosschecks.cpu_fp8_matmul [--m 1,64,512] [--k 2048] [--n 2048] [--repeats 20]

Whether FP8 on a CPU is labelled `native` or `emulated` in quantlab's kernel field rests on this: check, don't
assume. torch's row-wise scaled FP8 matmul accepts CPU tensors; this times it against a bf16 matmul of the same
shape and against upcasting the FP8 operands to bf16 first, and lists the ops the profiler saw inside it. A real
FP8 kernel would be at least as fast as bf16 and would not convert the operands.
"""

from __future__ import annotations

import argparse
import time


def _ms(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", default="1,64,512", help="rows of the activation (tokens)")
    parser.add_argument("--k", type=int, default=2048)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=20)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    import torch

    torch.manual_seed(0)
    weight = torch.randn(args.n, args.k)
    w8, wb = weight.to(torch.float8_e4m3fn), weight.bfloat16()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}; K={args.k} N={args.n}"
    )
    print("| M | bf16 matmul ms | _scaled_mm FP8 ms | FP8→bf16 upcast + matmul ms | _scaled_mm / bf16 |")
    print("|---:|---:|---:|---:|---:|")
    for m in (int(v) for v in args.m.split(",")):
        x = torch.randn(m, args.k)
        x8, xb = x.to(torch.float8_e4m3fn), x.bfloat16()
        scale_a, scale_b = torch.ones(m, 1), torch.ones(1, args.n)
        bf16 = _ms(lambda xb=xb: xb @ wb.t(), args.repeats)
        fp8 = _ms(
            lambda x8=x8, sa=scale_a, sb=scale_b: torch._scaled_mm(
                x8, w8.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16
            ),
            args.repeats,
        )
        upcast = _ms(lambda x8=x8: x8.bfloat16() @ w8.bfloat16().t(), args.repeats)
        print(f"| {m} | {bf16:.3f} | {fp8:.3f} | {upcast:.3f} | {fp8 / bf16:.1f}× |")
    x8 = torch.randn(64, args.k).to(torch.float8_e4m3fn)
    with torch.profiler.profile() as prof:
        torch._scaled_mm(x8, w8.t(), scale_a=torch.ones(64, 1), scale_b=torch.ones(1, args.n), out_dtype=torch.bfloat16)
    print("ops inside _scaled_mm:", ", ".join(sorted({e.key for e in prof.key_averages()})))


if __name__ == "__main__":
    main()
