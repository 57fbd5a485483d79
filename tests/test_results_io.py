"""A results file whose last line a kill cut short mid-append stays readable: every reader skips that one line
and says so, and the next append drops it before writing. Anything else unreadable is still an error."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from quantlab.errors import ResultsError
from quantlab.results import Result, append_result, read_results
from quantlab.results.io import TornRecordWarning
from tests.conftest import run_cli

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "demo.jsonl"


def _torn(tmp_path: Path, whole: int = 3) -> tuple[Path, list[str]]:
    """`whole` committed records, then the first half of the next one without its newline."""
    lines = COMMITTED.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) > whole
    path = tmp_path / "torn.jsonl"
    path.write_text("".join(lines[:whole]) + lines[whole][: len(lines[whole]) // 2], encoding="utf-8")
    return path, lines[:whole]


def test_report_renders_every_whole_record_and_names_the_torn_line(tmp_path):
    path, whole = _torn(tmp_path)
    proc = run_cli("report", str(path), "--all", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    assert f"line {len(whole) + 1}: skipped, cut short" in proc.stderr and "warning:" in proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1 + len(whole)  # the header, then one row per whole record


def test_library_readers_warn_and_the_next_append_repairs(tmp_path):
    path, whole = _torn(tmp_path)
    with pytest.warns(TornRecordWarning, match="line 4"):
        records = read_results(path)
    assert [r.model_dump_json() for r in records] == [
        Result.model_validate(json.loads(line)).model_dump_json() for line in whole
    ]
    append_result(path, records[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_results(path)) == len(whole) + 1
    assert path.read_text(encoding="utf-8").endswith("\n")


def test_a_broken_line_that_is_not_the_last_is_still_an_error(tmp_path):
    path, whole = _torn(tmp_path)
    path.write_text(path.read_text(encoding="utf-8") + "\n" + whole[0], encoding="utf-8")
    with pytest.raises(ResultsError, match="line 4: not JSON"):
        read_results(path)


def test_a_diverged_measurement_is_written_and_read_back(tmp_path):
    """An infinite perplexity or a NaN divergence is a real outcome (an fp16 overflow, a broken quantization), so
    its record must stay readable: written as the string "Infinity"/"NaN", read back as the same float, rendered
    by the report. Pydantic's default wrote null, which the float field then refused, losing the whole file."""
    record = next(r for r in read_results(COMMITTED) if r.quality and r.quality.vs_baseline)
    quality = record.quality.model_copy(
        update={
            "ppl": float("inf"),
            "vs_baseline": record.quality.vs_baseline.model_copy(update={"kld_mean": float("nan")}),
        }
    )
    path = tmp_path / "diverged.jsonl"
    append_result(path, record.model_copy(update={"quality": quality}))
    assert '"ppl":"Infinity"' in path.read_text(encoding="utf-8")
    (back,) = read_results(path)
    assert back.quality.ppl == float("inf") and back.quality.vs_baseline.kld_mean != back.quality.vs_baseline.kld_mean
    proc = run_cli("report", str(path), "--format", "csv")
    assert proc.returncode == 0 and "inf" in proc.stdout.lower(), proc.stderr
