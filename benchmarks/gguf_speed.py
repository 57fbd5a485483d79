"""quantlab's llamacpp timings against llama.cpp's own, on the same GGUF files, same threads, same runs.

    python benchmarks/gguf_speed.py [--model default] [--types F16,Q8_0,Q4_K_M] [--prompt 128] [--new 64]
                                    [--repeats 5]

For each run, quantlab's figure is the wall time of its prefill/decode loop (what `quantlab bench` reports);
llama.cpp's figure is its own context timer (`llama_perf_context`: t_p_eval_ms / t_eval_ms), reset before the
run. The gap is the harness overhead (Python calls, reading logits, argmax). Target: ≤ 5%.
It also answers whether a 4-bit GGUF decodes faster than F16 on this CPU (decode is memory-bound).
"""

from __future__ import annotations

import argparse
import statistics

from quantlab.paths import cache_dir


def artifact_for(model: str, scheme: str):
    from quantlab.artifact import load_artifact
    from quantlab.quantizer import quantize
    from quantlab.spec import MethodSpec

    out = cache_dir() / "benchmarks" / "gguf" / f"{model.replace('/', '--')}-{scheme}"
    if (out / "quantlab.json").is_file():
        return load_artifact(out)
    return quantize(model, MethodSpec(method="gguf", scheme=scheme), out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--types", default="F16,Q8_0,Q4_K_M")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import llama_cpp
    import numpy as np

    from quantlab.runtimes.llamacpp_rt import LlamaCppSession

    prompt = (np.arange(args.prompt, dtype=np.int64) * 7919 % 30000 + 100)[None]
    rows = []
    for scheme in args.types.split(","):
        artifact = artifact_for(args.model, scheme)
        session = LlamaCppSession(artifact, "cpu")
        ours_p, ours_d, theirs_p, theirs_d = [], [], [], []
        session.timed_generate(prompt, args.new)  # warm-up
        for _ in range(args.repeats):
            llama_cpp.llama_perf_context_reset(session._llm.ctx)
            t = session.timed_generate(prompt, args.new)
            perf = llama_cpp.llama_perf_context(session._llm.ctx)
            ours_p.append(t.prompt_tokens / t.prefill_s)
            ours_d.append((t.new_tokens - 1) / t.decode_s)
            theirs_p.append(perf.n_p_eval / (perf.t_p_eval_ms / 1e3))
            theirs_d.append(perf.n_eval / (perf.t_eval_ms / 1e3))
        session.close()
        med = statistics.median
        rows.append(
            (
                scheme,
                artifact.manifest.gguf.bits_per_weight,
                session.threads,
                med(ours_p),
                med(theirs_p),
                med(ours_d),
                med(theirs_d),
            )
        )
    print(
        f"model {args.model}; prompt {args.prompt} tokens, {args.new} new tokens, batch 1, median of "
        f"{args.repeats}; llama-cpp-python {llama_cpp.__version__}"
    )
    print(
        "| type | bits/weight | threads | prefill tok/s quantlab | prefill tok/s llama.cpp | overhead % "
        "| decode tok/s quantlab | decode tok/s llama.cpp | overhead % |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for scheme, bpw, threads, op, tp, od, td in rows:
        print(
            f"| {scheme} | {bpw:.2f} | {threads} | {op:,.0f} | {tp:,.0f} | {(tp / op - 1) * 100:+.1f} "
            f"| {od:,.1f} | {td:,.1f} | {(td / od - 1) * 100:+.1f} |"
        )


if __name__ == "__main__":
    main()
