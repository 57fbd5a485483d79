"""Does quantlab's timing loop cost anything? Its prefill + cached-decode loop against transformers'
own `generate()` on the same artifact, prompts and number of new tokens.

    python -m benchmarks.crosschecks.decode_loop_vs_generate [ARTIFACT] [--batch-sizes 1,8] [--new-tokens 32]
                                                              [--repeats 5]

Without ARTIFACT it benches a bf16 `none` artifact of the embedded default model (kept in the quantlab cache).
Prints one row per batch size: median wall seconds of each, and quantlab's overhead in percent. If the overhead
is near 0, quantlab's tok/s figures are not deflated by its own harness.
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks.lib.artifacts import unquantized


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", nargs="?")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    return parser


def generate_seconds(model, prompts, device: str, new_tokens: int) -> float:
    """Wall seconds of one greedy `generate()` of exactly `new_tokens` per row."""
    import torch

    tensor = torch.as_tensor(prompts, device=device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            tensor,
            attention_mask=torch.ones_like(tensor),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
        )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    assert out.shape[1] == prompts.shape[1] + new_tokens
    return elapsed


def one_batch(session, prompts, device: str, args) -> tuple[float, float]:
    """Median seconds of quantlab's loop and of generate() over `--repeats` alternating rounds (after a warm-up)."""
    ours, theirs = [], []
    for i in range(args.repeats + 1):  # the first round is a warm-up
        t = session.timed_generate(prompts, args.new_tokens)
        elapsed = generate_seconds(session.hf_model(), prompts, device, args.new_tokens)
        if i:
            ours.append(t.prefill_s + t.decode_s)
            theirs.append(elapsed)
    return statistics.median(ours), statistics.median(theirs)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    import torch
    from transformers import AutoTokenizer

    from quantlab.artifact import load_artifact
    from quantlab.bench.speed import prompts_from
    from quantlab.corpus import token_stream
    from quantlab.runtimes import default_device, select_runtime

    artifact = load_artifact(args.artifact or unquantized("default", "bf16").path)
    device = default_device()
    session = select_runtime(artifact).load(artifact, device=device)
    tokenizer = AutoTokenizer.from_pretrained(artifact.path)
    ids = token_stream(tokenizer, "embedded", max_tokens=64 * args.prompt_tokens).ids
    rows = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        a, b = one_batch(session, prompts_from(ids, batch, args.prompt_tokens), device, args)
        rows.append((batch, a, b, (a / b - 1) * 100))
    session.close()
    print(
        f"artifact: {artifact.path} ({artifact.manifest.format}), device {device}, "
        f"threads {torch.get_num_threads()}, prompt {args.prompt_tokens}, new {args.new_tokens}, "
        f"median of {args.repeats}"
    )
    print("| batch | quantlab loop s | generate() s | overhead % |\n|---:|---:|---:|---:|")
    for batch, a, b, pct in rows:
        print(f"| {batch} | {a:.3f} | {b:.3f} | {pct:+.1f} |")


if __name__ == "__main__":
    main()
