"""`quantlab recommend` on committed results: the winner is the cheapest candidate that meets the
constraints (checked against the records independently), with the runner-up and the exclusions."""

from __future__ import annotations

import pytest

from quantlab.errors import ResultsError
from quantlab.report import select
from quantlab.report.recommend import explain, recommend
from quantlab.results import read_results

from .conftest import REPO, run_cli

FORMATS = REPO / "results" / "fp-formats-smollm2.jsonl"


@pytest.fixture(scope="module")
def records():
    return select(read_results(FORMATS))


def test_the_winner_is_the_cheapest_that_meets_the_constraints(records):
    rec = recommend(records, rig="cpu", min_quality=80, max_memory_gb=1.0)
    expected = []
    for r in records:
        cost = next(c for c in r.cost if c.batch_size == 1)
        quality = 100 * r.quality.vs_baseline.baseline_ppl / r.quality.ppl
        if quality >= 80 and r.memory.peak_bytes <= 1e9:
            expected.append((cost.usd_per_1m_tokens, r.artifact.digest))
    expected.sort()
    assert rec.winner.digest == expected[0][1] and rec.runner_up.digest == expected[1][1]
    assert len(rec.considered) == len(expected)
    assert len(rec.considered) + len(rec.excluded) == len(records)
    assert all("quality" in reason or "memory" in reason for _, reason in rec.excluded)


def test_impossible_constraints_and_wrong_rigs(records):
    assert recommend(records, rig="cpu", min_quality=101).winner is None
    with pytest.raises(ResultsError, match="no results measured on rig 'h100'"):
        recommend(records, rig="h100")
    served = select(read_results(REPO / "results" / "served-smollm2.jsonl"))
    rec = recommend(served, rig="cpu", basis="served", at=8)
    assert rec.winner is None and all(reason == "no quality record against a baseline" for _, reason in rec.excluded)


def test_cli_says_why_and_fails_when_nothing_fits():
    proc = run_cli("recommend", str(FORMATS), "--rig", "cpu", "--min-quality", "80", "--max-memory", "1")
    assert proc.returncode == 0
    assert "Recommended on cpu" in proc.stdout and "Runner-up" in proc.stdout and "Excluded" in proc.stdout
    proc = run_cli("recommend", str(FORMATS), "--rig", "cpu", "--min-quality", "101")
    assert proc.returncode == 1 and "No format on rig cpu meets" in proc.stdout


def test_records_of_another_host_or_baseline_are_set_aside_and_the_answer_says_what_it_rests_on(records):
    """The report's comparability rule: a cheaper record measured on another machine, or scored against another
    baseline, is excluded with that reason instead of winning (it used to win: the newest record per digest was
    taken whatever its host or baseline)."""
    from datetime import timedelta

    plain = recommend(records, rig="cpu", min_quality=80, max_memory_gb=1.0)
    winner = next(r for r in records if r.artifact.digest == plain.winner.digest)
    elsewhere = winner.model_copy(deep=True)
    elsewhere.host.cpu, elsewhere.timestamp = "Another CPU", winner.timestamp + timedelta(hours=1)
    elsewhere.cost = [c.model_copy(update={"usd_per_1m_tokens": c.usd_per_1m_tokens / 100}) for c in winner.cost]
    rebased = elsewhere.model_copy(deep=True)
    rebased.host.cpu = winner.host.cpu
    rebased.quality.vs_baseline.baseline_digest = "0" * 16
    for odd, reason in ((elsewhere, "measured on Another CPU"), (rebased, "scored against another baseline")):
        rec = recommend([*records, odd], rig="cpu", min_quality=80, max_memory_gb=1.0)
        assert rec.winner.digest == plain.winner.digest and rec.winner.usd_per_1m == plain.winner.usd_per_1m
        assert any(why.startswith(reason) for _, why in rec.excluded), rec.excluded
    base = winner.quality.vs_baseline
    assert plain.host == winner.host.cpu and base.baseline_digest in plain.baseline
    text = explain(plain, rig="cpu", min_quality=80, max_memory_gb=1.0, at=1)
    assert f"Compared on {winner.host.cpu}" in text and base.baseline_label in text
