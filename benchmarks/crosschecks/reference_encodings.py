"""How exactly must a baseline reference file hold the baseline's log-probabilities?

    python -m benchmarks.crosschecks.reference_encodings [--max-tokens 2048] [--ctx 512]
        [--out results/reference-encodings]

For each cell of the demo that transformers loads (bf16, RTN w8 and w4, FP8, NF4) and the fp32 baseline, on the
bench's own windows: KL(baseline ‖ cell) per scored position with the baseline's rows exact (float32, as the
in-memory comparison computes them) against the same with the rows stored another way, and the relative error
that makes in the KLD mean, median and p99. The ways: llama.cpp's base file (`llama-perplexity
--kl-divergence-base`: uint16 steps over the 16 nats below each row's top logit, lower entries dropped), float16,
and the same rows rounded once from a float64 log-softmax (what any other exact-looking computation would give).
Finally the reference file itself (`quantlab.reference`, float32 exact) through `score()`, against the in-memory
comparison. quantlab's tolerance for a reference is 1e-4 relative; the table says which encodings hold it.
Writes OUT.ndjson (benchmarks.lib.records) and OUT.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ENCODINGS = {  # name → bytes per scored token per vocabulary entry
    "llama.cpp uint16 (16 nats)": 2,
    "float16": 2,
    "float32 via float64": 4,
}
BENCHMARK = "benchmarks.crosschecks.reference_encodings"
CELLS = {
    "none-bf16": {"method": "none", "dtype": "bf16"},
    "rtn-w8-g64": {"method": "rtn", "bits": 8, "group_size": 64},
    "rtn-w4-g64": {"method": "rtn", "bits": 4, "group_size": 64},
    "fp8-dynamic": {"method": "fp8", "scheme": "FP8_DYNAMIC"},
    "bnb-nf4": {"method": "bnb", "scheme": "nf4"},
}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("results/reference-encodings"))
    return parser


def encoded(name: str, rows, logits):
    """The baseline's rows stored as `name`, read back (float32), and the entries kept."""
    import torch

    if name == "float16":
        return rows.half().float(), None
    if name == "float32 via float64":
        return torch.log_softmax(logits.double(), dim=-1).float(), None
    top = rows.max(-1, keepdim=True).values
    low = torch.maximum(rows.min(-1, keepdim=True).values, top - 16)
    step = (top - low) / 65535
    levels = torch.where(rows > low, torch.round((rows - low) / step), torch.zeros_like(rows))
    back = levels * step + low
    return back, back > -16


def kl(base, cell, keep=None):
    import torch

    terms = base.exp() * (base - cell)
    return (terms if keep is None else torch.where(keep, terms, torch.zeros_like(terms))).sum(-1).double()


def stats(values) -> list[float]:
    import torch

    return [values.mean().item(), values.median().item(), torch.quantile(values, 0.99).item()]


def measure_cell(session, base_logits: list, ids_windows) -> dict:
    """KLD statistics of one cell with exact rows, and each encoding's relative error on them."""
    import torch

    from quantlab.bench.quality import log_probs

    exact, by_encoding = [], {name: [] for name in ENCODINGS}
    for logits, window in zip(base_logits, ids_windows, strict=True):
        rows, cell = log_probs(logits), log_probs(session.logits(window))
        exact.append(kl(rows, cell))
        for name in ENCODINGS:
            back, keep = encoded(name, rows, logits[:-1])
            by_encoding[name].append(kl(back, cell, keep))
    truth = stats(torch.cat(exact))
    errors = {
        name: [abs(v / t - 1) for v, t in zip(stats(torch.cat(values)), truth, strict=True)]
        for name, values in by_encoding.items()
    }
    return {"kld": dict(zip(("mean", "median", "p99"), truth, strict=True)), "rel_err": errors}


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    from benchmarks.lib.artifacts import cached, unquantized
    from benchmarks.lib.console import log
    from benchmarks.lib.records import measured, start_run, write_records
    from quantlab.bench import BenchConfig
    from quantlab.bench.prepare import prepare
    from quantlab.bench.quality import score, windows
    from quantlab.bench.reference import make_reference
    from quantlab.spec import MethodSpec

    base = unquantized("default", "fp32")
    cells = {name: cached("default", MethodSpec(**spec), name) for name, spec in CELLS.items()}
    config = BenchConfig(dataset="embedded", max_tokens=args.max_tokens, ctx=args.ctx, speed=False)
    plan = prepare([a.path for a in cells.values()], base.path, config)
    ids = plan.baseline.stream.ids
    parts = windows(ids, args.ctx)
    session = plan.baseline.runtime.load_as(plan.baseline.artifact, plan.baseline.quality)
    base_logits = [session.logits(w) for w in parts]
    ref = make_reference(session, base, "transformers on cpu, fp32", plan.baseline.stream, args.ctx)
    run = start_run(BENCHMARK, {"max_tokens": args.max_tokens, "ctx": args.ctx, "bytes_per_entry": ENCODINGS})
    records = []
    try:
        for name, subject in zip(cells, plan.subjects, strict=True):
            log(f"{name}: scoring")
            cell = subject.runtime.load_as(subject.artifact, subject.quality)
            try:
                row = measure_cell(cell, base_logits, parts)
                from_file = score(cell, ids, args.ctx, baseline=ref).vs_baseline
                in_memory = score(cell, ids, args.ctx, baseline=session).vs_baseline
                row["reference_file_equal"] = from_file == in_memory
            finally:
                cell.close()
            records.append(measured(run, {"cell": name, **row}))
    finally:
        session.close()
    write_records(args.out.with_suffix(".ndjson"), records)
    args.out.with_suffix(".md").write_text(table(records, args), encoding="utf-8")
    print(table(records, args))


def table(records, args) -> str:
    lines = [
        f"# Reference encodings: relative error of KLD (mean / median / p99), {args.max_tokens} tokens, ctx {args.ctx}",
        "",
        f"`python -m benchmarks.crosschecks.reference_encodings --max-tokens {args.max_tokens} --ctx {args.ctx}`"
        f" on {records[0].host.cpu} ({records[0].timestamp}). Tolerance of a reference: 1e-4.",
        "",
        "| cell | KLD mean | KLD median | "
        + " | ".join(f"{n} ({b} B)" for n, b in ENCODINGS.items())
        + " | reference file (4 B) = in-memory |",
        "|---|---:|---:|" + "---:|" * len(ENCODINGS) + "---|",
    ]
    for record in records:
        m = record.measurement
        errs = " | ".join("/".join(f"{e:.0e}" for e in m["rel_err"][n]) for n in ENCODINGS)
        same = "identical" if m["reference_file_equal"] else "differs"
        lines.append(f"| {m['cell']} | {m['kld']['mean']:.2e} | {m['kld']['median']:.2e} | {errs} | {same} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
