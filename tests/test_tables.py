"""The report's tables, checked against the committed results: every committed report is what `quantlab report`
makes of its JSONL today, the quality % column is perplexity recovery, every cell whose speed is not the
format's own has its own numbered footnote, and the "which format to choose" table says what the numbers say."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta

import pytest

from quantlab.report import html, markdown, plots, select, tables, write_report
from quantlab.report.choose import choose_table
from quantlab.report.notes import footnotes
from quantlab.report.selection import host
from quantlab.results import read_results

from .conftest import REPO, run_cli

COMMITTED = sorted(p for p in (REPO / "results").rglob("*.jsonl") if p.with_suffix(".md").is_file())
DEMO_CPU = REPO / "results" / "demo-cpu.jsonl"


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(REPO / "results")))
def test_committed_reports_regenerate_byte_for_byte(path):
    records = select(read_results(path))
    assert markdown(records) == path.with_suffix(".md").read_text(encoding="utf-8")


def test_the_demo_run_is_committed_and_the_cli_regenerates_it(tmp_path):
    assert DEMO_CPU in COMMITTED
    out = tmp_path / "report.md"
    proc = run_cli("report", str(DEMO_CPU), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == DEMO_CPU.with_suffix(".md").read_bytes()
    for plot in ("quality-vs-size", "cost-vs-quality", "throughput-vs-concurrency"):
        assert (REPO / "results" / f"demo-cpu-{plot}.png").is_file()
    page = DEMO_CPU.with_suffix(".html").read_text(encoding="utf-8")
    assert page.count('<svg class="chart"') == 4 and "Which format to choose" in page
    assert page == html(select(read_results(DEMO_CPU)))  # the committed page is today's renderer's


def test_write_report_writes_the_report_next_to_the_results(tmp_path):
    records = select(read_results(DEMO_CPU))
    written = write_report(records, tmp_path / DEMO_CPU.name)
    images = plots.render_all(records)
    assert list(images) == ["quality-vs-size", "cost-vs-quality", "throughput-vs-concurrency"]
    names = ["demo-cpu.md", "demo-cpu.html", "demo-cpu.csv"] + [f"demo-cpu-{name}.png" for name in images]
    assert [p.name for p in written] == names
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # and no temporary file
    for name in ("demo-cpu.md", "demo-cpu.csv"):  # what `quantlab run` committed
        assert (tmp_path / name).read_bytes() == (DEMO_CPU.parent / name).read_bytes(), name
    assert (tmp_path / "demo-cpu.html").read_text(encoding="utf-8") == html(records)
    for name, png in images.items():
        assert (tmp_path / f"demo-cpu-{name}.png").read_bytes() == png


@pytest.fixture(scope="module")
def demo():
    return select(read_results(DEMO_CPU))


def test_quality_pct_is_perplexity_recovery(demo):
    table = tables.main_table(demo)
    in_process = [r for r in demo if r.load is None]
    assert len(table) == len(in_process)
    for (_, row), r in zip(table.iterrows(), in_process, strict=True):
        expected = 100 * r.quality.vs_baseline.baseline_ppl / r.quality.ppl
        assert row["quality %"] == f"{expected:,.1f}"
    baseline = [i for i, r in enumerate(in_process) if r.artifact.digest == r.quality.vs_baseline.baseline_digest]
    assert [table["quality %"][i] for i in baseline] == ["100.0"]


def test_every_cell_off_its_own_kernel_has_one_numbered_footnote(demo):
    report = markdown(demo)
    own = {"dense", "native"}
    cells = {(r.artifact.digest, r.runtime.runtime, r.runtime.kernel) for r in demo if r.runtime.kernel not in own}
    assert cells  # the demo holds dequantized and emulated cells
    notes = [n for n in footnotes(demo) if re.match(r"†\d+ ", n)]
    assert [int(n[1 : n.index(" ")]) for n in notes] == list(range(1, len(cells) + 1))
    table_marks = {int(m) for m in re.findall(r"†(\d+)", report.split("## How these numbers were made")[0])}
    assert table_marks == set(range(1, len(cells) + 1))
    for r in demo:  # each such row carries its own number, in the main table and the served table
        if r.runtime.kernel not in own:
            n = tables.mark_numbers(demo)[tables.cell_key(r)]
            assert f"†{n} {r.artifact.method} ({r.artifact.backend}) {r.artifact.label}" in "\n".join(notes)
    main = tables.main_table(demo)
    for _, row in main.iterrows():
        marked = "†" in row["decode tok/s"]
        assert marked == (row["runtime/kernel"].split("/")[1].split()[0] not in own)


def test_which_format_to_choose_follows_the_numbers(demo):
    choose = choose_table(demo)
    in_process = [r for r in demo if r.load is None and r.quality and r.quality.vs_baseline]
    assert set(choose["method"]) == {f"{r.artifact.method} ({r.artifact.backend})" for r in in_process}
    best_for = dict(zip(choose["method"], choose["best for (measured here)"], strict=True))

    own = [r for r in in_process if r.runtime.kernel in ("dense", "native")]
    fastest = max(own, key=lambda r: min(r.speed, key=lambda p: p.batch_size).decode_tok_s.median)
    assert f"{fastest.artifact.label}: " in best_for[f"{fastest.artifact.method} ({fastest.artifact.backend})"]
    winner_rows = [m for m, text in best_for.items() if "fastest batch-1 decode" in text]
    assert winner_rows == [f"{fastest.artifact.method} ({fastest.artifact.backend})"]

    smallest = min(in_process, key=lambda r: r.artifact.disk_bytes)
    assert "smallest file" in best_for[f"{smallest.artifact.method} ({smallest.artifact.backend})"]
    baseline = in_process[0].quality.vs_baseline.baseline_digest
    best = max(
        (r for r in in_process if r.artifact.digest != baseline),
        key=lambda r: r.quality.vs_baseline.baseline_ppl / r.quality.ppl,
    )
    assert "highest quality" in best_for[f"{best.artifact.method} ({best.artifact.backend})"]
    # speed is never awarded to a cell whose speed is its kernel path's
    for r in in_process:
        if r.runtime.kernel not in ("dense", "native"):
            won = _segments(best_for[f"{r.artifact.method} ({r.artifact.backend})"]).get(r.artifact.label, "")
            assert "fastest" not in won and "served" not in won
    # a method that wins nothing names the row that beats it, and that row really is smaller and better
    for method, text in best_for.items():
        if text.startswith("nothing here: "):
            rival = text.removeprefix("nothing here: ").split(" is smaller")[0]
            mine = [r for r in in_process if f"{r.artifact.method} ({r.artifact.backend})" == method]
            theirs = next(
                r for r in in_process if f"{r.artifact.method} ({r.artifact.backend}) {r.artifact.label}" == rival
            )
            top = max(mine, key=lambda r: r.quality.vs_baseline.baseline_ppl / r.quality.ppl)
            assert theirs.artifact.disk_bytes <= top.artifact.disk_bytes
            assert theirs.quality.ppl <= top.quality.ppl


def _segments(text: str) -> dict[str, str]:
    """'label: wins; label: wins' → {label: wins}."""
    return dict(seg.split(": ", 1) for seg in text.split("; ") if not seg.startswith("nothing here"))


def test_the_choose_table_needs_two_comparable_rows():
    records = select(read_results(REPO / "results" / "served-smollm2.jsonl"))
    assert choose_table(records).empty  # served runs only: no quality against a baseline


OTHER_CPU = "AMD EPYC 9R14 96-Core Processor"


def _elsewhere(r, *, cpu: str | None = None, gpu: str | None = None):
    """The same record, as if another machine had made it: nothing else differs."""
    if gpu is not None:
        return r.model_copy(update={"runtime": r.runtime.model_copy(update={"device": "cuda:0", "device_name": gpu})})
    return r.model_copy(update={"host": r.host.model_copy(update={"cpu": cpu})})


def test_the_host_is_the_gpu_on_cuda_else_the_cpu(demo):
    r = demo[0]
    assert host(r) == r.host.cpu
    assert host(_elsewhere(r, gpu="NVIDIA H200")) == "NVIDIA H200"
    assert host(_elsewhere(r, cpu=OTHER_CPU)) == OTHER_CPU


def test_select_keeps_the_same_configuration_measured_on_two_hosts(demo):
    r = demo[0]
    other, rerun = _elsewhere(r, cpu=OTHER_CPU), r.model_copy(update={"timestamp": r.timestamp + timedelta(hours=1)})
    assert select([r, other]) == [r, other]
    assert select([r, rerun]) == [rerun]  # on one host a newer record still supersedes


@pytest.mark.parametrize(
    "table", [tables.main_table, tables.batch_table, tables.load_table, tables.tasks_table, tables.gguf_table]
)
def test_rows_from_two_hosts_say_which_host(demo, table):
    single = table(demo)
    assert not single.empty and "host" not in single.columns  # one host: the report as it always was
    both = select(demo + [_elsewhere(r, cpu=OTHER_CPU) for r in demo])
    rows = table(both)
    after = list(single.columns).index("scheme") + 1
    assert list(rows.columns) == [*single.columns[:after], "host", *single.columns[after:]]
    assert Counter(rows["host"]) == {host(demo[0]): len(single), OTHER_CPU: len(single)}


def test_each_host_has_its_own_footnotes_naming_it(demo):
    both = select(demo + [_elsewhere(r, cpu=OTHER_CPU) for r in demo])
    assert len(tables.mark_numbers(both)) == 2 * len(tables.mark_numbers(demo))
    notes = [n for n in footnotes(both) if re.match(r"†\d+ ", n)]
    assert len(notes) == len(tables.mark_numbers(both))
    assert sum(f"({OTHER_CPU}), kernel" in n for n in notes) == len(notes) // 2
    assert sum(f"({host(demo[0])}), kernel" in n for n in notes) == len(notes) // 2


def test_the_choose_table_compares_the_rows_of_one_host(demo):
    in_process = [r for r in demo if r.load is None and r.quality and r.quality.vs_baseline]
    fewer = [_elsewhere(r, cpu=OTHER_CPU) for r in in_process[:3]]  # the other host has fewer comparable rows
    single, mixed = choose_table(demo), choose_table(select(demo + fewer))
    assert set(mixed["host"]) == {host(demo[0])}
    same = ["method", "schemes", "quality %", "best for (measured here)"]
    assert mixed[same].equals(single[same])  # the other host's copies neither join nor change the ranking
    note = next(n for n in footnotes(select(demo + fewer)) if n.startswith("Which format to choose"))
    assert f"rig cpu, host {host(demo[0])} only" in note
    assert "host" not in next(n for n in footnotes(demo) if n.startswith("Which format to choose"))


@pytest.fixture(scope="module")
def detailed(demo):
    """The demo's records with llama-perplexity's statistics, as a bench writes them today, from per-token values
    drawn at random (the table's arithmetic is checked here; the statistics' own in tests/test_quality.py)."""
    import numpy as np

    from quantlab.bench.quality import divergence_detail

    rng, out = np.random.default_rng(0), []
    for r in demo:
        vs = r.quality.vs_baseline if r.quality else None
        if vs is not None:
            nll = rng.gamma(2.0, 1.5, 4000)
            detail = divergence_detail(rng.exponential(vs.kld_mean, 4000), nll, nll + rng.normal(0, 0.1, 4000))
            quality = r.quality.model_copy(update={"vs_baseline": vs.model_copy(update={"detail": detail})})
            r = r.model_copy(update={"quality": quality})
        out.append(r)
    return out


def test_the_quality_detail_table_prints_llama_perplexity_statistics(demo, detailed):
    from quantlab.report.quality_detail import quality_detail_table

    assert quality_detail_table(demo).empty  # records made before the statistics: no table, no note
    assert "Quality in detail" not in markdown(demo)
    table = quality_detail_table(detailed)
    measured = [r for r in detailed if r.load is None and r.quality and r.quality.vs_baseline]
    assert len(table) == len(measured) > 3
    for (_, row), r in zip(table.iterrows(), measured, strict=True):
        vs = r.quality.vs_baseline
        assert row["scheme"] == r.artifact.label
        assert row["KLD 99.9 %"] == tables.kld(vs.detail.kld.p99_9)
        assert row["KLD mean ± se"].startswith(tables.kld(vs.kld_mean) + " ± ")
        assert row["RMS Δp %"] == f"{100 * vs.detail.delta_p_rms:.3f}"
        assert row["same top p %"] == f"{100 * vs.top1_agreement:.2f}"
    assert tables.main_table(detailed).equals(tables.main_table(demo))  # the main table stays as it is
    report = markdown(detailed)
    assert "## Quality in detail (llama-perplexity's statistics)" in report
    assert any(n.startswith("Quality in detail: llama-perplexity's") for n in footnotes(detailed))
    both = quality_detail_table(select(detailed + [_elsewhere(r, cpu=OTHER_CPU) for r in detailed]))
    assert list(both.columns).index("host") == 2 and Counter(both["host"])[OTHER_CPU] == len(table)


def test_one_file_under_three_kv_caches_is_three_rows_each_with_its_own_wins():
    """results/levers-smollm2.jsonl scores one Q8_0 file with an f16, q8_0 and q4_0 cache: each is its own row,
    so "least memory" and "fastest" go to one cache each, and the shared file size is said to be shared."""
    records = select(read_results(REPO / "results" / "levers-smollm2.jsonl"))
    best_for = choose_table(records).iloc[0]["best for (measured here)"]
    parts = {part.split(": ", 1)[0]: part.split(": ", 1)[1] for part in best_for.split("; ")}
    assert set(parts) == {"Q8_0, KV f16", "Q8_0, KV q8_0", "Q8_0, KV q4_0"}
    assert [k for k, v in parts.items() if "least memory" in v] == ["Q8_0, KV q4_0"]  # 463 MB peak, the least
    assert [k for k, v in parts.items() if "fastest batch-1 decode" in v] == ["Q8_0, KV f16"]  # 144 tok/s
    assert all("smallest file (tied with 2 others)" in v for v in parts.values())
