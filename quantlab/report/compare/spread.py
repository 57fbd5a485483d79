"""When two runs differ by more than their own noise: the one place `quantlab compare` decides it.

A comparison that marks every difference teaches the reader to ignore the marks; one that marks none hides real
changes. So a mark needs a spread that the records themselves carry, and each kind of figure carries a different
one (or none):

- `stderr`: the figure is a mean over scored tokens or task documents and its record holds a standard error (KLD
  and Δp means from the quality detail, lm-eval scores) or the inputs of llama-perplexity's own one (top-1
  agreement: a share p of n positions, se = √(p(1 − p)/(n − 1))). Marked where |B − A| > 2·√(se_A² + se_B²),
  i.e. where the two estimates sit about two combined standard errors apart. Tokens of one window are not
  independent, so these standard errors (llama.cpp's too) understate the noise: a mark here is not proof, an
  absent mark is a fair sign of no change.
- `repeats`: a speed figure is the median of the bench's timed repeats and its record keeps their min and max.
  Marked where the two min–max ranges do not overlap: every repeat of one run was faster than every repeat of the
  other. With three repeats each, two runs of the same distribution do this one time in ten, so read a single
  mark among many speed rows with that in mind. The repeats run in one process, and two processes on one host
  differ by more than that (10–30% on the 2-core hosts, results/README.md): a speed mark says the runs differ, not
  yet that the artifacts do. A $/1M figure is price ÷ decode speed, so it carries the same repeats, turned into
  prices (a marked speed usually brings a marked price with it).
- `requests`: a served latency is the median over the level's requests, and its record keeps their p90 (no lower
  percentile). Marked where the [median, p90] bands do not overlap: the typical request of the slower run took
  longer than nine in ten requests of the faster one.
- `exact`: a byte count of the artifact's files, not a measurement; any difference is real, so any is marked.
- `none`: the record holds one number and nothing about its noise (ppl, peak memory, a served level's
  throughput, quantization time, ...). Never marked: the output says "no spread recorded" instead, because a
  difference of any size may be the host's run-to-run noise.

A figure whose rule needs a spread that one of the two records lacks (a record made before the quality detail was
measured, a single repeat, a level with one request) is treated as `none` for that pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Rule = Literal["stderr", "repeats", "requests", "exact", "none"]
Verdict = Literal["beyond", "within", "no spread"]

Z = 2.0  # combined standard errors apart before a difference is marked

RULES: dict[Rule, str] = {
    "stderr": f"standard error: marked where |B − A| > {Z:g}·√(se_A² + se_B²)",
    "repeats": "min–max over the timed repeats of one process: marked where the two ranges do not overlap "
    "(processes on one host differ by more than their repeats do, so this says the runs differ, not yet the "
    "artifacts)",
    "requests": "median to p90 over the level's requests: marked where the two bands do not overlap",
    "exact": "a byte count, not a measurement: marked where it differs at all",
    "none": "no spread recorded: never marked",
}

SPREAD_NOTE: dict[Rule, str] = {  # what the table's "spread" column says
    "stderr": f"± se; mark beyond {Z:g}·combined se",
    "repeats": "[min–max] of repeats; mark where disjoint",
    "requests": "(p90) of requests; mark where p50–p90 disjoint",
    "exact": "exact; mark any difference",
    "none": "no spread recorded",
}


@dataclass(frozen=True)
class Measure:
    """One figure of one record, with the spread its rule reads (or None where the record does not hold it)."""

    value: float
    rule: Rule
    se: float | None = None  # rule stderr
    low: float | None = None  # rules repeats (min) and requests (median)
    high: float | None = None  # rules repeats (max) and requests (p90)
    n: int | None = None  # repeats or requests behind low/high

    def has_spread(self) -> bool:
        if not math.isfinite(self.value):
            return False
        if self.rule == "stderr":
            return self.se is not None and math.isfinite(self.se) and self.se >= 0
        if self.rule in ("repeats", "requests"):
            band = (self.low, self.high)
            return None not in band and all(math.isfinite(x) for x in band) and (self.n or 0) >= 2
        return self.rule == "exact"


def verdict(a: Measure, b: Measure) -> Verdict:
    """Whether B differs from A beyond both runs' spread, under the figure's rule (the module's docstring)."""
    if a.rule != b.rule or not (a.has_spread() and b.has_spread()):
        return "no spread"
    if a.rule == "stderr":
        beyond = abs(b.value - a.value) > Z * math.hypot(a.se, b.se)
    elif a.rule == "exact":
        beyond = a.value != b.value
    else:
        beyond = b.low > a.high or a.low > b.high
    return "beyond" if beyond else "within"


def ratio(a: Measure, b: Measure) -> float | None:
    """B/A, or None where it means nothing (A is zero, or either is not a finite number)."""
    if a.value == 0 or not (math.isfinite(a.value) and math.isfinite(b.value)):
        return None
    return b.value / a.value
