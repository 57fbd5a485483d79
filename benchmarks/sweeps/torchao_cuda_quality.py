"""Quality of torchao's CUDA-only schemes (int4wo, float8dq) on the default model, measured on this CPU through
stand-ins that compute the same quantized values (quantlab/methods/torchao_standin.py).

    python -m benchmarks.sweeps.torchao_cuda_quality [--max-tokens 16384] [--out results/torchao-cuda-smollm2]

The usual protocol and token ids (16384 WikiText-2 tokens, ctx 512, against the fp32 baseline; the committed
torchao and FP-format results used the same), scored by quantlab's own `bench.quality.score`. Prints PASS/FAIL
lines: the int4 stand-in's integers, scales and zeros equal what tile_packed_to_4d stores on every layer; the
token ids and the fp32 baseline reproduce the committed rows'; int4wo g64 (asymmetric) beats the committed RTN w4
g64 (symmetric, same groups), g32 beats g64, and float8dq agrees with the committed llm-compressor FP8_DYNAMIC
row (the same W8A8 FP8 recipe) within 15% of KLD. The stand-ins' speed is not the schemes' and is not reported.

Writes OUT.md (the table, with the committed rows beside) and OUT.ndjson: this run's rows as benchmark records
(benchmarks/lib/records.py), not Results, since a stand-in is no artifact; each record's measurement holds
`scheme`, `how` (what ran) and `quality` (quantlab's QualityMetrics). The file holds the latest run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.lib.artifacts import unquantized
from benchmarks.lib.console import check, log
from benchmarks.lib.records import measured, start_run, write_records

REPO = Path(__file__).resolve().parents[2]
ROWS = (("int4wo", 64), ("int4wo", 32), ("float8dq", None))
COMMITTED = {
    "rtn w4 g64 sym (llm-compressor)": ("results/torchao-smollm2.jsonl", "rtn", "w4 g64 sym"),
    "torchao int8wo per-channel": ("results/torchao-smollm2.jsonl", "torchao", "int8wo per-channel"),
    "fp8 FP8_DYNAMIC (llm-compressor)": ("results/fp-formats-smollm2.jsonl", "fp8", "FP8_DYNAMIC"),
}
NOTES = [
    "- int4wo and float8dq artifacts can only be made on a CUDA GPU (`quantize` refuses them here). The stand-ins "
    "compute the same quantized values on the CPU (quantlab/methods/torchao_standin.py); only the matmul kernel "
    "differs. They are not artifacts and their speed is not the schemes'.",
    "- The default model's weights lie on the Q4_1 grid of the GGUF it ships in (blocks of 32, a scale and a "
    "minimum each). Asymmetric int4 in groups of 32 re-finds that grid, so int4wo g32 is near-lossless here; on a "
    "model trained in 16 bits it would not be. The same grid favours int4wo's asymmetric groups of 64 over "
    "RTN's symmetric ones, so that gap may be wider here than on other models.",
    "- On a GPU (SM ≥ 9.0) where torchao's optional mslk package is installed, float8dq quantizes with mslk's "
    "row kernel instead of the torch code the stand-in runs; that kernel was not compared here.",
]


class _Model:
    """A model in memory as a quality-only quantlab Session (score() asks only for logits)."""

    def __init__(self, model) -> None:
        self.model = model

    def logits(self, ids):
        import numpy as np
        import torch

        with torch.inference_mode():
            batch = torch.as_tensor(np.asarray(ids, dtype=np.int64))[None, :]
            return self.model(input_ids=batch, use_cache=False).logits[0].float()

    def close(self) -> None:
        self.model = None


def committed(name: str):
    from quantlab.results.io import read_results

    path, method, label = COMMITTED[name]
    return next(r for r in read_results(REPO / path) if r.artifact.method == method and r.artifact.label == label)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("results/torchao-cuda-smollm2"))
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    from quantlab.corpus import TokenStream, load_text, token_fingerprint, tokenize

    fp32, bf16 = unquantized("default", "fp32"), unquantized("default", "bf16")
    text, source = load_text("embedded", "test")
    ids = tokenize(AutoTokenizer.from_pretrained(bf16.path), text, args.max_tokens)
    stream = TokenStream(ids=ids, source=source, tokenizer=str(bf16.path))
    refs = {name: committed(name) for name in COMMITTED}  # each committed record, read once
    log(f"{len(ids)} tokens (fingerprint {token_fingerprint(ids)}), ctx {args.ctx}; baseline fp32 {fp32.digest}")
    rows = measure(args, stream, fp32, bf16)
    checks(rows, ids, refs)
    write(args, rows, refs, ids, fp32)


def measure(args, stream, fp32, bf16) -> list[dict]:
    """Score dense bf16, then each stand-in, against the fp32 baseline's reference file (its log-probabilities
    computed once, as `quantlab bench` does, and the baseline unloaded); the int4wo stand-ins are first checked to
    hold tinygemm's values layer by layer."""
    import torch
    from transformers import AutoModelForCausalLM

    from quantlab.bench.quality import score
    from quantlab.bench.reference import make_reference
    from quantlab.methods.registry import get_backend
    from quantlab.methods.torchao_standin import STANDINS, load_standin, tinygemm_mismatches
    from quantlab.spec import MethodSpec

    ids = stream.ids
    baseline = make_reference(
        _Model(AutoModelForCausalLM.from_pretrained(fp32.path, dtype=torch.float32).eval()),
        fp32,
        "transformers (this script's own load), fp32",
        stream,
        args.ctx,
    )
    dense = AutoModelForCausalLM.from_pretrained(bf16.path, dtype=torch.bfloat16).eval()
    rows = []

    def scored(label: str, model, how: str) -> None:
        start = time.perf_counter()
        metrics = score(_Model(model), ids, args.ctx, baseline=baseline, baseline_digest=fp32.digest)
        vs = metrics.vs_baseline
        log(f"{label}: ppl {metrics.ppl:.3f}, KLD {vs.kld_mean:.5f} ({time.perf_counter() - start:.0f} s)")
        rows.append({"scheme": label, "how": how, "quality": metrics.model_dump()})

    scored("none bf16", dense, "transformers, dense bf16 (as the committed rows)")
    backend = get_backend("torchao")
    for scheme, group in ROWS:
        spec = backend.resolve(MethodSpec(method="torchao", scheme=scheme, group_size=group))
        spec = spec.model_copy(update={"dtype": "bf16"})
        label = f"torchao {spec.label()}"
        model = load_standin(bf16.path, spec)
        if scheme == "int4wo":
            compared, differ = tinygemm_mismatches(dense, model, group)
            which = f" (differ: {', '.join(differ[:3])})" if differ else ""
            check(
                compared > 0 and not differ,
                f"{label}: CPU stand-in holds tile_packed_to_4d's integers, scales and zeros on "
                f"{compared - len(differ)} of {compared} layers{which}",
            )
        scored(label, model, f"CPU stand-in: {STANDINS[scheme]}")
        del model
    return rows


def checks(rows, ids, refs) -> None:
    from quantlab.corpus import token_fingerprint

    by = {row["scheme"]: row["quality"] for row in rows}
    reference = refs["rtn w4 g64 sym (llm-compressor)"]
    base_ppl = rows[0]["quality"]["vs_baseline"]["baseline_ppl"]
    same_ids = token_fingerprint(ids) == reference.settings.token_fingerprint
    check(same_ids, f"token ids are the committed rows' ({token_fingerprint(ids)})")
    committed_base = reference.quality.vs_baseline.baseline_ppl
    check(
        abs(base_ppl / committed_base - 1) < 1e-4,
        f"fp32 baseline ppl {base_ppl:.4f} reproduces the committed {committed_base:.4f}",
    )

    def kld(name: str) -> float:
        return by[name]["vs_baseline"]["kld_mean"] if name in by else refs[name].quality.vs_baseline.kld_mean

    check(
        kld("torchao int4wo g64") < kld("rtn w4 g64 sym (llm-compressor)"),
        f"int4wo g64 (asymmetric, float zero point) KLD {kld('torchao int4wo g64'):.5f} < RTN w4 g64 symmetric "
        f"{kld('rtn w4 g64 sym (llm-compressor)'):.5f}",
    )
    check(
        kld("torchao int4wo g32") < kld("torchao int4wo g64"),
        f"int4wo: groups of 32 lose less than groups of 64 "
        f"(KLD {kld('torchao int4wo g32'):.5f} < {kld('torchao int4wo g64'):.5f})",
    )
    ratio = kld("torchao float8dq") / kld("fp8 FP8_DYNAMIC (llm-compressor)")
    check(
        abs(ratio - 1) < 0.15,
        f"float8dq and llm-compressor's FP8_DYNAMIC (both E4M3 weights per channel, activations per token) agree: "
        f"KLD {kld('torchao float8dq'):.5f} vs {kld('fp8 FP8_DYNAMIC (llm-compressor)'):.5f} ({ratio:.2f}×)",
    )


def write(args, rows, refs, ids, fp32) -> None:
    """OUT.md: this run's rows and the committed ones in one table; OUT.ndjson: this run's rows as records."""
    import torch
    import transformers

    from quantlab.corpus import token_fingerprint
    from quantlab.env import host_info

    lines = [
        "# torchao's CUDA-only schemes: quality on the default model, measured on a CPU through stand-ins",
        "",
        "| scheme | quality % | ppl | Δppl % | KLD | top-1 % | how it ran |",
        "|:--|--:|--:|--:|--:|--:|:--|",
    ]
    table = [(r["scheme"], r["quality"], r["how"]) for r in rows]
    table += [(name, r.quality.model_dump(), f"committed: {COMMITTED[name][0]}") for name, r in refs.items()]
    for name, q, how in table:
        vs = q["vs_baseline"]
        lines.append(
            f"| {name} | {100 * vs['baseline_ppl'] / q['ppl']:.1f} | {q['ppl']:.3f} | {vs['delta_ppl_pct']:.2f} | "
            f"{vs['kld_mean']:.5f} | {100 * vs['top1_agreement']:.2f} | {how} |"
        )
    q0 = rows[0]["quality"]
    lines += [
        "",
        f"- Baseline: none fp32 (artifact {fp32.digest}), ppl {q0['vs_baseline']['baseline_ppl']:.3f}. "
        f"WikiText-2 v1 test (embedded), {len(ids)} tokens (fingerprint {token_fingerprint(ids)}), ctx {q0['ctx']}, "
        f"{q0['tokens_scored']} tokens scored; quality % = 100 × baseline ppl / ppl. Protocol: {q0['protocol']}",
        *NOTES,
        f"- Host: {host_info().cpu}. Made by `python -m benchmarks.sweeps.torchao_cuda_quality`.",
    ]
    settings = {"model": "default", "dataset": "embedded", "max_tokens": args.max_tokens, "ctx": args.ctx}
    settings |= {"n_tokens": len(ids), "token_fingerprint": token_fingerprint(ids), "baseline": fp32.digest}
    tools = {"torch": torch.__version__, "transformers": transformers.__version__}
    run = start_run("benchmarks.sweeps.torchao_cuda_quality", settings, tools)
    write_records(args.out.with_suffix(".ndjson"), [measured(run, row) for row in rows])
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
