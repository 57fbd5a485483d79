"""Two or more runs set side by side: the first run (A) is the reference, every other run is paired with it
(`match`), and each pair's figures (`metrics`) are set beside A's with the ratio and the spread verdict (`spread`).

A is the reference rather than every run against every other so that a table stays one column per run and one
ratio per run; a row another run holds and A does not is listed as unpaired, not compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quantlab.report.compare.match import pair, rows, title
from quantlab.report.compare.metrics import measures
from quantlab.report.compare.spread import Measure, Rule, Verdict, ratio, verdict
from quantlab.report.selection import host
from quantlab.results import Result


def run_label(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"R{i + 1}"


@dataclass(frozen=True)
class Run:
    label: str
    path: str
    records: list[Result]  # every record of the file
    rows: list[Result]  # the newest of each configuration: what is compared


@dataclass(frozen=True)
class Line:
    """One figure across the runs; ratios and verdicts are of each later run against A (None where absent)."""

    metric: str
    rule: Rule
    values: list[Measure | None]
    ratios: list[float | None]
    verdicts: list[Verdict | None]


@dataclass(frozen=True)
class Row:
    title: str
    records: list[Result | None]  # one per run, A's always set
    pairing: list[str]  # per later run: the identity that paired it, or why none did
    differences: list[str]  # how the runs measured it differently, one line per setting
    lines: list[Line]


@dataclass(frozen=True)
class Unpaired:
    run: str
    title: str
    why: str


@dataclass(frozen=True)
class Comparison:
    runs: list[Run]
    rows: list[Row]
    unpaired: list[Unpaired] = field(default_factory=list)

    def marked(self) -> list[tuple[Row, Line, int]]:
        """Every figure marked beyond spread: (row, line, index of the later run, 0 for B)."""
        return [(r, ln, i) for r in self.rows for ln in r.lines for i, v in enumerate(ln.verdicts) if v == "beyond"]


def compare(runs: list[tuple[str, list[Result]]]) -> Comparison:
    """Compare runs given as (name, records), the first being A."""
    made = [Run(run_label(i), name, records, rows(records)) for i, (name, records) in enumerate(runs)]
    a, later = made[0], made[1:]
    pairings = [pair(a.rows, other.rows, (a.label, other.label)) for other in later]
    unpaired = [
        Unpaired(other.label, title(other.rows[i]), why or _not_in_a(other, a, len(made)))
        for other, p in zip(later, pairings, strict=True)
        for i, why in sorted(p.unpaired_b.items())
    ]
    compared = []
    for ia, record in enumerate(a.rows):
        partners = [p.partner(ia) for p in pairings]
        reasons = [p.unpaired_a.get(ia) or f"not in {other.label}" for p, other in zip(pairings, later, strict=True)]
        if not any(partners):
            lone = all(p.unpaired_a[ia] is None for p in pairings)  # no candidate anywhere, ambiguous nowhere
            unpaired.append(Unpaired(a.label, title(record), f"only in {a.label}" if lone else "; ".join(reasons)))
            continue
        notes = [
            f"{other.label} paired by {found[1]}" if found else why
            for other, found, why in zip(later, partners, reasons, strict=True)
        ]
        others = [None if f is None else run.rows[f[0]] for run, f in zip(later, partners, strict=True)]
        compared.append(_row(record, others, notes, made))
    return Comparison(made, compared, sorted(unpaired, key=lambda u: (u.run, u.title)))


def _not_in_a(mine: Run, a: Run, n_runs: int) -> str:
    """A later run's row with no candidate in A: "only in B" with two runs; with more, another may hold it too."""
    return f"only in {mine.label}" if n_runs == 2 else f"in {mine.label}, not in {a.label}"


def _row(a: Result, others: list[Result | None], pairing: list[str], runs: list[Run]) -> Row:
    records = [a, *others]
    figures = [None if r is None else measures(r) for r in records]
    names = list(dict.fromkeys(name for f in figures if f for name in f))
    lines = []
    for name in names:
        values = [None if f is None else f.get(name) for f in figures]
        rule = next(v.rule for v in values if v is not None)
        first = values[0]
        pairs = [(first, v) if first is not None and v is not None else None for v in values[1:]]
        lines.append(
            Line(
                name,
                rule,
                values,
                [None if p is None else ratio(*p) for p in pairs],
                [None if p is None else verdict(*p) for p in pairs],
            )
        )
    differences = [d for k, r in enumerate(others) if r is not None for d in _differences(a, r, runs[0], runs[k + 1])]
    return Row(title(a), records, pairing, differences, lines)


def settings(r: Result) -> dict[str, str]:
    """What a record says about how it was measured, beyond its configuration: each a reason two runs' figures
    may differ other than the artifact."""
    s = r.settings
    vs = r.quality.vs_baseline if r.quality else None
    facts = {
        "artifact digest": r.artifact.digest if r.artifact else "none (external server)",
        "host": host(r),
        "device": r.runtime.device,
        "kernel path": r.runtime.kernel,
        "compute dtype": r.runtime.compute_dtype,
        "rig": f"{r.rig.name} at ${r.rig.price_per_hour:g}/h",
        "token stream": f"{s.n_tokens} tokens of {s.dataset.name} ({s.token_fingerprint[:8]})",
        "ctx": str(s.ctx),
        "batch sizes": ",".join(map(str, s.batch_sizes)),
        "prompt + new tokens": f"{s.prompt_tokens} + {s.new_tokens}",
        "repeats": str(s.repeats),
        "baseline": f"{vs.baseline_label} ({vs.baseline_digest[:8]})" if vs else "none",
        "runtime version": r.runtime.runtime_version,
        "quantlab": r.quantlab_version,
    }
    if r.load is not None:
        facts["engine"] = f"{r.load.engine} {r.load.engine_version}"
        facts["served prompt + output tokens"] = f"{r.load.prompt_tokens} + {r.load.output_tokens}"
        facts["engine launch"] = " ".join(r.load.launch)
    return facts


def _differences(a: Result, b: Result, run_a: Run, run_b: Run) -> list[str]:
    mine, theirs = settings(a), settings(b)
    said = [f"{k}: {run_a.label} {v}, {run_b.label} {theirs[k]}" for k, v in mine.items() if theirs.get(k) != v]
    libraries = sorted(set(a.libraries) | set(b.libraries))
    changed = [
        f"{n} {a.libraries.get(n, '–')} → {b.libraries.get(n, '–')}"
        for n in libraries
        if a.libraries.get(n) != b.libraries.get(n)
    ]
    if changed:
        said.append(f"libraries ({run_a.label} → {run_b.label}): {', '.join(changed)}")
    return said
