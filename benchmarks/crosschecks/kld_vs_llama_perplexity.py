"""quantlab's KLD, same-top-1 and PPL of GGUF artifacts against `llama-perplexity --kl-divergence`'s own figures.

    python -m benchmarks.crosschecks.kld_vs_llama_perplexity [--types Q8_0,Q4_K_M,Q4_0] [--ctx 512] [--chunks 8]
        [--threads N] [--out results/kld-vs-llama-perplexity]
    python -m benchmarks.crosschecks.kld_vs_llama_perplexity --render     # OUT.md again from OUT.ndjson, no measuring

On the default model (SmolLM2-135M; its F16 and quantized GGUFs made through quantlab's `obtain`, as the GGUF sweep
makes them), with the llama.cpp tools built from the tree the in-process runtime links:
1. quantlab's token stream (the bench's own ids, `--chunks` × `--ctx` of WikiText-2 test) is written as text
   (`write_eval_text`); `llama-perplexity --kl-divergence-base` on the F16 file writes its base file, whose
   tokens must equal quantlab's ids (checked: else llama.cpp scored other tokens and the run stops).
2. Per type, `llama-perplexity --kl-divergence` prints KLD mean, "Same top p" and PPL(Q) over the second half of
   each window (positions ctx/2 … ctx − 2).
3. quantlab scores the same type in its `llamacpp` runtime with its own `quantlab.bench.quality.score`, on exactly
   those positions (each window's second half is handed to `score` as a window of its own, its logits from the
   whole window), against llama.cpp's base rows decoded as llama-perplexity decodes them
   (`quantlab.llamacpp.kld_base.KldBaseFile`): once on the runtime's float32 logits (as `quantlab bench` scores)
   and once on the same logits widened to float64 (exact), so `score`'s log_softmax and sums run in float64.
   Checks, per type, figure and variant: relative difference ≤ 1e-3 (PASS/FAIL) for KLD mean, same top p and
   PPL(Q). llama-perplexity prints KLD to 6 decimals, same top p to 3 (in %), PPL to 6.

How llama.cpp's rows reach `score`: as a `Reference` (rows used as they are), entries llama.cpp's KL sum skips
(decoded log-prob ≤ −16) set to −1e4 (probability 0 in float32) except at the scored token, whose decoded value
its base NLL uses. Not as a baseline `Session`: `score` applies log_softmax to a session's output, which would
renormalize each row over the entries kept, whose probabilities sum to less than 1.

INFO, to say where any difference comes from: the same figures computed here in float64 from the same logits and
rows (llama.cpp's definitions: what remains between them and llama-perplexity is llama.cpp's own float arithmetic
and its printed digits); the KLD with the rows as a baseline session's logits (what renormalizing does); with
every decoded entry summed (the −16 cut's effect); against quantlab's float32 reference on the same positions
(the F16 file's exact log-probs in quantlab's runtime: the uint16 encoding's effect); each base row's kept mass.

Writes OUT.ndjson (benchmark records, `benchmarks/lib/records.py`), one per type, and OUT.md. Measurement keys:
scheme, file, bits_per_weight, tokens_scored, llama_perplexity (kld_mean, kld_mean_err, same_top, ppl_q,
ppl_base), quantlab and quantlab_float64 (kld_mean, same_top, ppl_q, ppl_base: `score` on llama.cpp's rows, on
float32 and on float64 logits), rel_diff and rel_diff_float64 (kld_mean, same_top, ppl_q), float64 (kld_mean,
kld_all_entries, same_top, ppl_q, ppl_base), rows_as_logits_kld_mean, float32_reference (kld_mean, same_top,
ppl_base), base (ppl_written, seconds_written, kept_mass_mean, kept_mass_min, clipped_targets), seconds
(llama_perplexity, quantlab). The base file (about 25 MB per window of 512) and the cached logits live under the
quantlab cache (`benchmarks/kld-vs-llama-perplexity/`) only while the run lasts.
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.lib.artifacts import gguf
from benchmarks.lib.console import check, log
from benchmarks.lib.records import BenchRecord, measured, start_run, write_records

BENCHMARK = "benchmarks.crosschecks.kld_vs_llama_perplexity"
TARGET = 1e-3  # relative difference allowed between quantlab's figures and llama-perplexity's
SKIPPED = -1.0e4  # an entry llama.cpp leaves out of its KL sum: exp() is 0 in float32, and 0 × finite is 0
FIGURES = {"kld_mean": "KLD mean", "same_top": "same top p", "ppl_q": "PPL(Q)"}
PRINTED_STEP = {"kld_mean": 1e-6, "same_top": 1e-5, "ppl_q": 1e-6}  # llama-perplexity's last printed digit


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--types", default="Q8_0,Q4_K_M,Q4_0", help="GGUF types compared against the F16 base")
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=8, help="windows of --ctx tokens (llama.cpp's chunks)")
    parser.add_argument("--threads", type=int, default=None, help="default: the llamacpp runtime's (all cores)")
    parser.add_argument("--out", type=Path, default=Path("results/kld-vs-llama-perplexity"))
    parser.add_argument("--render", action="store_true", help="only render OUT.md again from OUT.ndjson's last run")
    return parser


class ScoredPositions:
    """A session for `score` whose windows are the second halves llama-perplexity scores: asked for the logits of
    window k's second half, it runs the whole window k (so each position sees the context llama.cpp's does) and
    returns the rows from ctx/2 on. The rows are cached in a file, so scoring against several baselines runs the
    model once."""

    def __init__(self, inner, windows, cache: Path) -> None:
        import numpy as np

        self.inner, self.windows = inner, windows
        self.first = windows.shape[1] // 2
        self._index = {w[self.first :].tobytes(): k for k, w in enumerate(windows)}
        if len(self._index) != len(windows):
            raise ValueError("two windows share their second half: they cannot be told apart")
        self._cache, self._done = cache, set()
        self._rows = None
        self._np = np

    def logits(self, ids):
        import torch

        k = self._index[self._np.asarray(ids, dtype=self.windows.dtype).tobytes()]
        if k not in self._done:
            out = self.inner.logits(self.windows[k])[self.first :].float().numpy()
            if self._rows is None:
                shape = (len(self.windows), *out.shape)
                self._rows = self._np.lib.format.open_memmap(self._cache, mode="w+", dtype="<f4", shape=shape)
            self._rows[k] = out
            self._done.add(k)
        return torch.from_numpy(self._np.array(self._rows[k]))

    def timed_generate(self, prompts, new_tokens):
        raise NotImplementedError

    def describe(self):
        return self.inner.describe()

    def close(self) -> None:
        self.inner.close()
        self._rows = None
        self._cache.unlink(missing_ok=True)


class Widened:
    """The same logits as float64 (exact: they are float32 values), so `score`'s log_softmax and KL sums run in
    float64: what separates quantlab's arithmetic from its definitions."""

    def __init__(self, session: ScoredPositions) -> None:
        self.session = session

    def logits(self, ids):
        return self.session.logits(ids).double()


def for_score(rows, targets):
    """llama.cpp's decoded rows as `score` must see them to sum what llama.cpp sums: skipped entries at
    probability 0, the scored token's entry at its decoded value (llama.cpp's base NLL reads it, kept or not)."""
    import numpy as np

    out = np.where(rows.kept, rows.log_probs, np.float32(SKIPPED)).astype(np.float32)
    at = np.arange(len(targets))
    out[at, targets] = rows.log_probs[at, targets]
    return out


def llama_rows_reference(base_file, windows):
    """llama.cpp's base rows as a quantlab `Reference`, whose rows `score` uses as they are (see the docstring)."""
    from quantlab.reference import Reference

    first = windows.shape[1] // 2

    class LlamaRows(Reference):
        def __init__(self) -> None:  # no quantlab reference file behind it: only `logprobs` is asked for
            self.path = base_file.path

        def logprobs(self, window: int):
            return for_score(base_file.rows(window), windows[window, first + 1 :])

    return LlamaRows()


class RowsAsLogits:
    """The same rows handed to `score` as a baseline session's logits (what log_softmax then does to them)."""

    def __init__(self, base_file, windows) -> None:
        self.base_file, self.windows = base_file, windows
        self.first = windows.shape[1] // 2
        self._index = {w[self.first :].tobytes(): k for k, w in enumerate(windows)}

    def logits(self, ids):
        import numpy as np
        import torch

        k = self._index[np.asarray(ids, dtype=self.windows.dtype).tobytes()]
        rows = for_score(self.base_file.rows(k), self.windows[k, self.first + 1 :])
        return torch.from_numpy(np.concatenate([rows, rows[-1:]]))  # score drops the last position's row


def float64_figures(session: ScoredPositions, base_file, windows) -> dict:
    """llama.cpp's definitions computed in float64 from the same cached logits and decoded rows."""
    import numpy as np

    first = windows.shape[1] // 2
    kld, kld_all, same, nll, nll_base, kept_mass, clipped = [], [], 0, [], [], [], 0
    for k in range(len(windows)):
        x = session.logits(windows[k, first:]).double().numpy()[:-1]
        rows = base_file.rows(k)
        targets = windows[k, first + 1 :]
        top = x.max(axis=1, keepdims=True)
        lq = x - top - np.log(np.exp(x - top).sum(axis=1, keepdims=True))
        lp = rows.log_probs.astype(np.float64)
        p = np.exp(lp)
        terms = p * (lp - lq)
        kld.append(np.where(rows.kept, terms, 0.0).sum(axis=1))
        kld_all.append(terms.sum(axis=1))
        same += int((x.argmax(axis=1) == rows.top()).sum())
        at = np.arange(len(targets))
        nll.append(-lq[at, targets])
        nll_base.append(-lp[at, targets])
        kept_mass.append(np.where(rows.kept, p, 0.0).sum(axis=1))
        clipped += int((~rows.kept[at, targets]).sum())
    kld, kld_all, nll, nll_base, kept = (np.concatenate(v) for v in (kld, kld_all, nll, nll_base, kept_mass))
    return {
        "kld_mean": float(kld.mean()),
        "kld_all_entries": float(kld_all.mean()),
        "same_top": same / kld.size,
        "ppl_q": float(np.exp(nll.mean())),
        "ppl_base": float(np.exp(nll_base.mean())),
        "kept_mass_mean": float(kept.mean()),
        "kept_mass_min": float(kept.min()),
        "clipped_targets": clipped,
    }


def rel(ours: float, theirs: float) -> float:
    return abs(ours / theirs - 1) if theirs else float("inf")


def gguf_file(artifact) -> Path:
    return artifact.path / artifact.manifest.gguf.file


@dataclass
class Setup:
    """What every type's measurement shares: the windows, llama.cpp's base file and the F16 session."""

    args: argparse.Namespace
    threads: int
    tools: object  # quantlab.llamacpp.build.ToolsBuild
    work: Path
    windows: object  # int array [chunks, ctx]: quantlab's ids
    base_path: Path = Path()
    base_file: object = None  # quantlab.llamacpp.kld_base.KldBaseFile
    base_info: dict = field(default_factory=dict)
    f16: ScoredPositions | None = None


def write_base(setup: Setup, base, ids) -> None:
    """llama-perplexity's base file from the F16 GGUF on quantlab's stream; stops unless its tokens are quantlab's."""
    from transformers import AutoTokenizer

    from quantlab.bench.prepare import tokenizer_dir
    from quantlab.llamacpp import reference
    from quantlab.llamacpp.kld_base import KldBaseFile

    args = setup.args
    text = reference.write_eval_text(AutoTokenizer.from_pretrained(tokenizer_dir(base)), ids, setup.work / "eval.txt")
    setup.base_path = setup.work / "f16.kld"
    started = time.monotonic()
    log(f"llama-perplexity --kl-divergence-base on F16, {args.chunks} × {args.ctx} tokens")
    ppl_written = reference.save_kld_base(
        gguf_file(base), text, setup.base_path, ctx=args.ctx, chunks=args.chunks, threads=setup.threads,
        tools_build=setup.tools,
    )  # fmt: skip
    setup.base_info = {"ppl_written": ppl_written, "seconds_written": round(time.monotonic() - started, 1)}
    setup.base_file = KldBaseFile(setup.base_path)
    same_tokens = bool((setup.base_file.header.tokens == setup.windows).all())
    check(same_tokens, f"llama.cpp's tokens of the text are quantlab's ids ({setup.windows.size} tokens)")
    if not same_tokens:
        raise SystemExit("llama-perplexity scored other tokens than quantlab's: nothing to compare")


def measure(setup: Setup, name: str, artifact, subject) -> dict:
    """One type: llama-perplexity's figures, then `score`'s on the same positions, and the INFO comparisons."""
    from quantlab.bench.quality import score
    from quantlab.llamacpp import reference

    args, windows = setup.args, setup.windows
    first = args.ctx // 2
    halves, ctx2 = windows[:, first:].ravel(), args.ctx - first  # score's windows: the positions llama.cpp scores
    started = time.monotonic()
    log(f"{name}: llama-perplexity --kl-divergence")
    theirs = reference.kl_divergence(
        gguf_file(artifact), setup.base_path, ctx=args.ctx, threads=setup.threads, tools_build=setup.tools
    )
    took = {"llama_perplexity": round(time.monotonic() - started, 1)}
    started = time.monotonic()
    log(f"{name}: quantlab's score on llama.cpp's rows, then the INFO comparisons")
    llama_rows = llama_rows_reference(setup.base_file, windows)
    session = ScoredPositions(subject.runtime.load(artifact, device="cpu"), windows, setup.work / f"{name}.npy")
    try:
        ours = score(session, halves, ctx2, baseline=llama_rows)
        wide = score(Widened(session), halves, ctx2, baseline=llama_rows)
        as_logits = score(Widened(session), halves, ctx2, baseline=RowsAsLogits(setup.base_file, windows))
        exact = score(Widened(session), halves, ctx2, baseline=Widened(setup.f16))
        f64 = float64_figures(session, setup.base_file, windows)
    finally:
        session.close()
    took["quantlab"] = round(time.monotonic() - started, 1)
    found = row(name, artifact, gguf_file(artifact), theirs, (ours, wide), as_logits, exact, f64, setup.base_info)
    return found | {"seconds": took}


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.render:
        from benchmarks.lib.records import read_records, runs_newest_first

        text = table(runs_newest_first(read_records(args.out.with_suffix(".ndjson")))[0])
        args.out.with_suffix(".md").write_text(text, encoding="utf-8")
        print(text)
        return
    import numpy as np

    from quantlab.bench import BenchConfig
    from quantlab.bench.prepare import prepare
    from quantlab.llamacpp import build, reference
    from quantlab.paths import cache_dir
    from quantlab.runtimes.llamacpp_rt import threads

    types = [t for t in args.types.split(",") if t]
    base = gguf("default", "F16")
    quants = {name: gguf("default", name) for name in types}
    config = BenchConfig(dataset="embedded", max_tokens=args.ctx * args.chunks, ctx=args.ctx, speed=False)
    plan = prepare([a.path for a in quants.values()], base.path, config)
    ids = plan.baseline.stream.ids
    windows = np.stack([ids[i * args.ctx : (i + 1) * args.ctx] for i in range(len(ids) // args.ctx)])
    if len(windows) != args.chunks:
        raise SystemExit(f"the stream holds {len(windows)} windows of {args.ctx}, not --chunks {args.chunks}")
    work = cache_dir() / "benchmarks" / "kld-vs-llama-perplexity"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    setup = Setup(args, args.threads or threads(), reference.tools(log), work, windows)
    records = []
    try:
        write_base(setup, base, ids)
        setup.f16 = ScoredPositions(plan.baseline.runtime.load(base, device="cpu"), windows, work / "F16.npy")
        settings = {"model": "default", "ctx": args.ctx, "chunks": args.chunks, "threads": setup.threads}
        versions = {"llama_cpp_python": build.llama_cpp().__version__, "llama_cpp_build": setup.tools.label}
        run = start_run(BENCHMARK, settings | {"types": types}, versions)
        for name, subject in zip(types, plan.subjects, strict=True):
            records.append(measured(run, measure(setup, name, quants[name], subject)))
            report_checks(records[-1])
    finally:
        if setup.f16 is not None:
            setup.f16.close()
        shutil.rmtree(work, ignore_errors=True)
    write_records(args.out.with_suffix(".ndjson"), records)
    text = table(records)
    args.out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)


def row(name, artifact, path, theirs, scored, as_logits, exact, f64, base_info) -> dict:
    vs_exact = exact.vs_baseline
    theirs_d = {
        "kld_mean": theirs.kld_mean,
        "kld_mean_err": theirs.kld_mean_err,
        "same_top": theirs.top1,
        "ppl_q": theirs.ppl,
        "ppl_base": theirs.ppl_base,
    }
    ours_d, wide_d = (
        {
            "kld_mean": m.vs_baseline.kld_mean,
            "same_top": m.vs_baseline.top1_agreement,
            "ppl_q": m.ppl,
            "ppl_base": m.vs_baseline.baseline_ppl,
        }
        for m in scored
    )
    return {
        "scheme": name,
        "file": path.name,
        "bits_per_weight": artifact.manifest.gguf.bits_per_weight,
        "tokens_scored": scored[0].tokens_scored,
        "llama_perplexity": theirs_d,
        "quantlab": ours_d,
        "rel_diff": {key: rel(ours_d[key], theirs_d[key]) for key in FIGURES},
        "quantlab_float64": wide_d,
        "rel_diff_float64": {key: rel(wide_d[key], theirs_d[key]) for key in FIGURES},
        "float64": {k: f64[k] for k in ("kld_mean", "kld_all_entries", "same_top", "ppl_q", "ppl_base")},
        "rows_as_logits_kld_mean": as_logits.vs_baseline.kld_mean,
        "float32_reference": {
            "kld_mean": vs_exact.kld_mean,
            "same_top": vs_exact.top1_agreement,
            "ppl_base": vs_exact.baseline_ppl,
        },
        "base": {
            **base_info,
            "kept_mass_mean": f64["kept_mass_mean"],
            "kept_mass_min": f64["kept_mass_min"],
            "clipped_targets": f64["clipped_targets"],
        },
    }


def report_checks(record: BenchRecord) -> None:
    m = record.measurement
    for variant, how in (("", "score"), ("_float64", "score on float64 logits")):
        for key, label in FIGURES.items():
            theirs, ours = m["llama_perplexity"][key], m[f"quantlab{variant}"][key]
            diff = m[f"rel_diff{variant}"][key]
            check(diff <= TARGET, f"{m['scheme']} {label}: {how} {ours:.8g}, llama-perplexity {theirs:.8g}: {diff:.1e}")
    f64, theirs = m["float64"]["kld_mean"], m["llama_perplexity"]["kld_mean"]
    check(None, f"{m['scheme']} KLD in float64 by this script {f64:.8g} ({rel(f64, theirs):.1e})")
    check(None, f"{m['scheme']} KLD, rows as logits (renormalized) {m['rows_as_logits_kld_mean']:.8g}")
    check(None, f"{m['scheme']} KLD, float32 reference {m['float32_reference']['kld_mean']:.8g}")


def table(records: list[BenchRecord]) -> str:
    first = records[0]
    s, m0 = first.settings, first.measurement
    lines = [
        f"# quantlab's KLD against llama-perplexity's own, {m0['tokens_scored']} scored positions",
        "",
        f"`python -m benchmarks.crosschecks.kld_vs_llama_perplexity --types {','.join(s['types'])} --ctx {s['ctx']}"
        f" --chunks {s['chunks']}` on {first.host.cpu}, {s['threads']} threads ({first.timestamp}); quantlab "
        f"{first.quantlab_version}, llama-cpp-python {first.tools['llama_cpp_python']}, "
        f"{first.tools['llama_cpp_build']} (llama-perplexity and the in-process runtime). Model: SmolLM2-135M; base:"
        f" its F16 GGUF (llama-perplexity's PPL while writing the base file: {m0['base']['ppl_written']}, "
        f"{m0['base']['seconds_written']} s).",
        "",
        f"Positions: the second half of each of {s['chunks']} windows of {s['ctx']} tokens (ctx/2 … ctx − 2),"
        " quantlab's own ids (llama.cpp's tokens of the text checked equal). quantlab: `quantlab.bench.quality.score`"
        " in the llamacpp runtime against llama.cpp's base rows decoded as llama-perplexity decodes them, on the"
        " runtime's float32 logits (as `quantlab bench` scores) and on the same logits widened to float64 (`score`'s"
        " arithmetic in float64). float64: this script's own float64 computation of llama.cpp's definitions from the"
        f" same logits and rows. Target: relative difference ≤ {TARGET:g}. llama-perplexity prints KLD to 6"
        ' decimals, same top p to 3 (in %), PPL to 6: "printed to ±" is half its last digit, relative.',
        "",
        "| type | figure | llama-perplexity | printed to ± | score | rel. diff | check | score, float64 logits |"
        " rel. diff | check | float64 (rel. diff) |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---|---:|",
        *agreement_rows(records),
        *info_tables(records),
    ]
    return "\n".join(lines) + "\n"


def agreement_rows(records: list[BenchRecord]) -> list[str]:
    lines = []
    for record in records:
        m = record.measurement
        for key, label in FIGURES.items():
            theirs, f64 = m["llama_perplexity"][key], m["float64"][key]
            cells = []
            for variant in ("", "_float64"):
                value, diff = m[f"quantlab{variant}"][key], m[f"rel_diff{variant}"][key]
                cells.append(f"{value:.6f} | {diff:.1e} | {'PASS' if diff <= TARGET else 'FAIL'}")
            printed = PRINTED_STEP[key] / 2 / theirs if theirs else float("inf")
            lines.append(
                f"| {m['scheme']} | {label} | {theirs:.6f} | {printed:.1e} | {' | '.join(cells)} |"
                f" {f64:.6f} ({rel(f64, theirs):.1e}) |"
            )
    return lines


def info_tables(records: list[BenchRecord]) -> list[str]:
    lines = [
        "",
        "INFO, KLD mean on the same positions (relative difference from llama-perplexity's): llama.cpp's rows as a"
        " baseline session's logits (`score`'s log_softmax renormalizes each row over its kept entries); every"
        " decoded entry summed (no −16 cut, float64); quantlab's float32 reference (the F16 file's exact log-probs,"
        " float64 arithmetic: the uint16 encoding's effect); the mean and least probability mass a base row keeps"
        " above the cut; scored tokens whose base entry lies below it.",
        "",
        "| type | llama-perplexity | rows as logits | all entries | float32 reference | kept mass mean / min |"
        " clipped targets |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for record in records:
        m = record.measurement
        theirs = m["llama_perplexity"]["kld_mean"]
        cells = [m["rows_as_logits_kld_mean"], m["float64"]["kld_all_entries"], m["float32_reference"]["kld_mean"]]
        shown = " | ".join(f"{v:.6f} ({rel(v, theirs):.1e})" for v in cells)
        b = m["base"]
        lines.append(
            f"| {m['scheme']} | {theirs:.6f} | {shown} | {b['kept_mass_mean']:.6f} / {b['kept_mass_min']:.6f} |"
            f" {b['clipped_targets']} |"
        )
    lines += [
        "",
        "INFO, `score` on float32 logits minus `score` on the same logits in float64: a log-sum-exp computed low by δ"
        " in every row raises every log q by δ, so it lowers the KLD by δ (Σp = 1) and ln PPL(Q) by δ; equal columns"
        " say the float32 difference is that one shift per row.",
        "",
        "| type | KLD mean, float32 − float64 | ln PPL(Q), float32 − float64 |",
        "|---|---:|---:|",
    ]
    for record in records:
        m = record.measurement
        narrow, wide = m["quantlab"], m["quantlab_float64"]
        d_ppl = math.log(narrow["ppl_q"]) - math.log(wide["ppl_q"])
        lines.append(f"| {m['scheme']} | {narrow['kld_mean'] - wide['kld_mean']:.2e} | {d_ppl:.2e} |")
    return lines


if __name__ == "__main__":
    main()
