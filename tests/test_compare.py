"""`quantlab compare`: committed records perturbed by known amounts within and beyond their spread (exactly the
latter marked), two real runs of the same cells, properties over fuzzed results files, and the command itself.

No model runs: every record comes from a committed results file, copied and changed here."""

from __future__ import annotations

import copy
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantlab.report.compare import compare, html, markdown
from quantlab.report.compare.spread import Measure, verdict
from quantlab.results import Result, read_results
from tests import fuzz_properties as fp
from tests.conftest import REPO, error_lines, run_cli
from tests.fuzz_strategies import fuzz_settings

RESULTS = REPO / "results"


def _line(name: str, index: int) -> dict:
    return json.loads((RESULTS / name).read_text(encoding="utf-8").splitlines()[index])


@pytest.fixture(scope="module")
def seeds() -> dict[str, dict]:
    """Committed records of each kind: in-process speed + tasks (GPTQ), quality with llama-perplexity's detail
    (AutoRound), served (GGUF Q4_K_M behind llama-server), and two artifacts for the unpaired rows."""
    return {
        "speed": _line("demo-cpu.jsonl", 4),
        "quality": _line("autoround-smollm2.jsonl", 1),
        "served": _line("demo-cpu.jsonl", 16),
        "only a": _line("demo-cpu.jsonl", 5),
        "only b": _line("demo-cpu.jsonl", 7),
    }


def _results(*records: dict) -> list[Result]:
    return [Result.model_validate(r) for r in records]


def _marked(c) -> set[tuple[str, str]]:
    return {(row.title.split(" · ")[0], line.metric) for row, line, _ in c.marked()}


def _get(c, artifact: str, metric: str):
    row = next(r for r in c.rows if r.title.startswith(artifact + " · "))
    return next(line for line in row.lines if line.metric == metric)


def _scale_spread(spread: dict, factor: float) -> None:
    for key in ("median", "min", "max"):
        spread[key] *= factor


def _perturb_speed(d: dict) -> None:
    """Batch 1 decode moved past its own range (and its price with it), batch 8 within it; the file one byte
    longer; figures without a spread moved a lot; one task score 3 se away, the other 1 se."""
    d["artifact"]["disk_bytes"] += 1
    b1, b8 = (next(p for p in d["speed"] if p["batch_size"] == b) for b in (1, 8))
    beyond = 1.2 * b1["decode_tok_s"]["max"] / b1["decode_tok_s"]["min"]  # B's slowest repeat beats A's fastest
    within = math.sqrt(b8["decode_tok_s"]["max"] / b8["decode_tok_s"]["min"])  # the ranges still overlap
    _scale_spread(b1["decode_tok_s"], beyond)
    _scale_spread(b8["decode_tok_s"], within)
    for cost in d["cost"]:
        cost["usd_per_1m_tokens"] /= beyond if cost["batch_size"] == 1 else within
    d["memory"]["peak_bytes"] = int(d["memory"]["peak_bytes"] * 1.5)
    d["quality"]["ppl"] *= 1.1
    d["artifact"]["quantize_seconds"] *= 3
    d["roofline"]["pct_of_limit"] *= 2
    first, second = d["tasks"]["scores"]
    first["value"] += 3 * first["stderr"]  # beyond 2·√2·se
    second["value"] += second["stderr"]


def _perturb_quality(d: dict) -> None:
    vs, detail = d["quality"]["vs_baseline"], d["quality"]["vs_baseline"]["detail"]
    vs["kld_mean"] += 4 * detail["kld_mean_stderr"]
    detail["delta_p_mean"] += 2.5 * detail["delta_p_mean_stderr"]  # under the rule's 2·√2·se ≈ 2.83 se
    p, n = vs["top1_agreement"], d["quality"]["tokens_scored"]
    vs["top1_agreement"] = p + math.sqrt(p * (1 - p) / (n - 1))  # one binomial se
    d["quality"]["ppl"] *= 1.5
    vs["kld_p99"] *= 10


def _perturb_served(d: dict) -> None:
    level = next(lv for lv in d["load"]["levels"] if lv["concurrency"] == 8)
    ttft, tpot = level["ttft_ms"], level["tpot_ms"]
    ttft |= {"median": 1.1 * ttft["p90"], "p90": 1.3 * ttft["p90"], "p99": 1.4 * ttft["p99"]}  # median past p90
    tpot["median"] = (tpot["median"] + tpot["p90"]) / 2  # inside A's median–p90 band
    for lv in d["load"]["levels"]:
        lv["output_tok_s"] *= 2
    d["load"]["startup_s"] *= 2


@pytest.fixture(scope="module")
def perturbed(seeds):
    b = {k: copy.deepcopy(seeds[k]) for k in ("speed", "quality", "served")}
    _perturb_speed(b["speed"])
    _perturb_quality(b["quality"])
    _perturb_served(b["served"])
    a_records = _results(seeds["speed"], seeds["quality"], seeds["served"], seeds["only a"])
    b_records = _results(b["speed"], b["quality"], b["served"], seeds["only b"])
    return compare([("a.jsonl", a_records), ("b.jsonl", b_records)])


def test_exactly_the_differences_beyond_spread_are_marked(perturbed):
    gptq, autoround, gguf = (
        "gptq (llmcompressor) w4 g64 sym",
        "autoround (llmcompressor) w4 g64 sym 10 iters",
        ("gguf (llamacpp) Q4_K_M"),
    )
    assert _marked(perturbed) == {
        (gptq, "size on disk, bytes"),
        (gptq, "decode tok/s, batch 1"),
        (gptq, "$/1M tokens, batch 1"),
        (gptq, "task quantlab_wikitext_nextword perplexity"),
        (autoround, "KLD mean"),
        (gguf, "served c=8: TTFT ms p50"),
    }
    within = [
        (gptq, "decode tok/s, batch 8"),
        (gptq, "$/1M tokens, batch 8"),
        (gptq, "task quantlab_wikitext_nextword acc"),
        (autoround, "Δp mean %"),
        (autoround, "top-1 agreement %"),
        (gguf, "served c=8: TPOT ms p50"),
    ]
    assert [_get(perturbed, *w).verdicts for w in within] == [["within"]] * len(within)
    unspread = [(gptq, "peak memory MB"), (gptq, "ppl"), (autoround, "KLD 99 %"), (gguf, "served c=8: output tok/s")]
    assert [_get(perturbed, *u).verdicts for u in unspread] == [["no spread"]] * len(unspread)


def test_ratios_are_b_over_a(perturbed, seeds):
    gptq = "gptq (llmcompressor) w4 g64 sym"
    assert _get(perturbed, gptq, "peak memory MB").ratios[0] == pytest.approx(1.5, rel=1e-6)
    assert _get(perturbed, gptq, "ppl").ratios[0] == pytest.approx(1.1)
    assert _get(perturbed, gptq, "quantize s").ratios[0] == pytest.approx(3)
    assert _get(perturbed, "gguf (llamacpp) Q4_K_M", "served c=1: output tok/s").ratios[0] == pytest.approx(2)
    assert _get(perturbed, gptq, "prefill tok/s, batch 1").ratios == [1.0]
    b1 = next(p for p in seeds["speed"]["speed"] if p["batch_size"] == 1)["decode_tok_s"]
    assert _get(perturbed, gptq, "decode tok/s, batch 1").ratios[0] == pytest.approx(1.2 * b1["max"] / b1["min"])


def test_unpaired_artifacts_are_listed(perturbed):
    assert len(perturbed.rows) == 3
    assert {(u.run, u.title.split(" · ")[0], u.why) for u in perturbed.unpaired} == {
        ("A", "awq (llmcompressor) w4 g64 asym", "only in A"),
        ("B", "fp8 (llmcompressor) FP8_W8A16", "only in B"),
    }
    text = markdown(perturbed)
    assert "| A     | awq (llmcompressor) w4 g64 asym · transformers, in-process | only in A |" in text


def test_the_markdown_says_where_no_spread_is_recorded(perturbed):
    text = markdown(perturbed)
    ppl = next(line for line in text.splitlines() if line.startswith("| ppl "))
    assert ppl.rstrip(" |").endswith("no spread recorded") and "◆" not in ppl
    decode = next(line for line in text.splitlines() if line.startswith("| decode tok/s, batch 1 "))
    assert "◆" in decode and "[" in decode  # the mark, and the min–max it was judged on
    assert text.count("◆") == 1 + 6  # the legend, and the six marked cells


def test_a_missing_standard_error_is_no_spread_not_a_mark(seeds):
    """A record made before the quality detail was measured has no KLD standard error: a KLD twice as large is
    then shown without a mark, and the cell says why."""
    old, new = copy.deepcopy(seeds["quality"]), copy.deepcopy(seeds["quality"])
    old["quality"]["vs_baseline"]["detail"] = None
    new["quality"]["vs_baseline"]["kld_mean"] *= 2
    c = compare([("a", _results(old)), ("b", _results(new))])
    line = _get(c, "autoround (llmcompressor) w4 g64 sym 10 iters", "KLD mean")
    assert line.verdicts == ["no spread"] and line.ratios[0] == pytest.approx(2)
    assert "2.000 (no spread recorded)" in markdown(c)


def test_pairing_prefers_the_digest_then_the_recipe_cell_then_method_and_source(seeds):
    a = seeds["speed"]
    rebuilt = copy.deepcopy(a) | {"artifact": a["artifact"] | {"digest": "0" * 16}}
    no_cell = rebuilt | {"cell": None}
    for b, how in ((a, "artifact digest"), (rebuilt, "recipe cell"), (no_cell, "method/backend/scheme/source")):
        c = compare([("a", _results(a)), ("b", _results(b))])
        assert [row.pairing for row in c.rows] == [[f"B paired by {how}"]] and not c.unpaired


def test_two_candidates_are_not_guessed_between(seeds):
    """Two rebuilt GPTQ artifacts in B, measured on two hosts, with no recipe cell: either could be A's."""
    a = seeds["speed"]
    twins = [copy.deepcopy(a) | {"artifact": a["artifact"] | {"digest": f"{i}" * 16}, "cell": None} for i in (1, 2)]
    twins[1]["host"]["cpu"] = "another CPU"
    c = compare([("a", _results(a)), ("b", _results(*twins))])
    assert c.rows == [] and len(c.unpaired) == 3
    assert all(u.why.startswith("ambiguous: 1 in A and 2 in B") for u in c.unpaired if u.run == "A")


def test_settings_that_differ_are_named_beside_the_pair(seeds):
    a = seeds["speed"]
    b = copy.deepcopy(a)
    b["host"]["cpu"] = "another CPU"
    b["libraries"]["torch"] = "9.9.9"
    c = compare([("a", _results(a)), ("b", _results(b))])
    (row,) = c.rows
    assert row.differences == [
        "host: A AMD EPYC, B another CPU",
        f"libraries (A → B): torch {a['libraries']['torch']} → 9.9.9",
    ]


def test_three_runs_are_each_set_against_the_first(seeds):
    a, b = seeds["speed"], copy.deepcopy(seeds["speed"])
    b["memory"]["peak_bytes"] *= 2
    runs = [
        ("a", _results(a, seeds["served"], seeds["only a"])),
        ("b", _results(b, seeds["served"])),
        ("c", _results(a, seeds["only b"])),
    ]
    c = compare(runs)
    assert {(u.run, u.why) for u in c.unpaired} == {("A", "only in A"), ("C", "in C, not in A")}
    assert [row.pairing for row in c.rows] == [
        ["B paired by artifact digest", "C paired by artifact digest"],
        ["B paired by artifact digest", "not in C"],
    ]
    assert _get(c, "gptq (llmcompressor) w4 g64 sym", "peak memory MB").ratios == [2.0, 1.0]
    header = next(line for line in markdown(c).splitlines() if line.startswith("| metric"))
    assert [h.strip() for h in header.strip("|").split("|")] == ["metric", "A", "B", "B/A", "C", "C/A", "spread"]


# --- two real runs --------------------------------------------------------------------------------------------


def _disjoint(a_low: float, a_high: float, b_low: float, b_high: float) -> bool:
    return b_low > a_high or a_low > b_high


def test_two_real_runs_of_one_benchmark():
    """results/compiled-decode-smollm2.jsonl holds two runs of the compiled-vs-eager crosscheck, same settings
    and the same two artifacts (8 records each, about half an hour apart): every configuration pairs by digest,
    nothing else differs, and a speed figure is marked exactly where its two min–max ranges miss each other."""
    records = read_results(RESULTS / "compiled-decode-smollm2.jsonl")
    first, second = records[:8], records[8:]
    assert len({r.run_id for r in first}) == len({r.run_id for r in second}) == 8
    assert max(r.timestamp for r in first) < min(r.timestamp for r in second)
    c = compare([("first", first), ("second", second)])
    assert len(c.rows) == 4 and not c.unpaired
    assert all(row.pairing == ["B paired by artifact digest"] and row.differences == [] for row in c.rows)
    seen = {True: 0, False: 0}
    for row in c.rows:
        a, b = row.records
        for pa in a.speed:
            pb = next(p for p in b.speed if p.batch_size == pa.batch_size)
            for kind in ("prefill_tok_s", "decode_tok_s"):
                sa, sb = getattr(pa, kind), getattr(pb, kind)
                apart = _disjoint(sa.min, sa.max, sb.min, sb.max)
                name = f"{kind.split('_')[0]} tok/s, batch {pa.batch_size}"
                assert next(ln for ln in row.lines if ln.metric == name).verdicts == ["beyond" if apart else "within"]
                seen[apart] += 1
        marked = {line.metric for line in row.lines if line.verdicts == ["beyond"]}
        assert all("tok/s" in m or "$/1M" in m for m in marked), marked  # same files: sizes equal
    assert seen[True] and seen[False]  # both cases occur in these runs, so the check above can fail either way
    assert _get(c, "none (transformers) bf16", "size on disk, bytes").verdicts == ["within"]


def test_two_real_runs_of_the_demo_recipe():
    """results/demo-two-runs/: `quantlab run recipes/demo.yaml` twice, one after the other on one host (the second
    reused the first's artifacts): the 7 cells pair by digest with no setting named as different, no quality
    figure is marked (the same files score the same tokens identically), and a speed or price figure is marked
    exactly where the two runs' min–max ranges of its repeats miss each other."""
    folder = RESULTS / "demo-two-runs"
    first, second = read_results(folder / "first.jsonl"), read_results(folder / "second.jsonl")
    assert len({r.run_id for r in first}) == len({r.run_id for r in second}) == 1
    assert first[0].run_id != second[0].run_id and max(r.timestamp for r in first) < min(r.timestamp for r in second)
    c = compare([("first", first), ("second", second)])
    assert len(c.rows) == 7 and not c.unpaired
    assert all(row.pairing == ["B paired by artifact digest"] and row.differences == [] for row in c.rows)
    seen = {True: 0, False: 0}
    for row in c.rows:
        a, b = row.records
        for pa in a.speed:
            pb = next(p for p in b.speed if p.batch_size == pa.batch_size)
            for kind in ("prefill_tok_s", "decode_tok_s"):
                sa, sb = getattr(pa, kind), getattr(pb, kind)
                apart = _disjoint(sa.min, sa.max, sb.min, sb.max)
                name = f"{kind.split('_')[0]} tok/s, batch {pa.batch_size}"
                assert next(ln for ln in row.lines if ln.metric == name).verdicts == ["beyond" if apart else "within"]
                seen[apart] += 1
        marked = {line.metric for line in row.lines if line.verdicts == ["beyond"]}
        assert all("tok/s" in m or "$/1M" in m for m in marked), marked
    assert seen[True] and seen[False]  # both cases occur in these runs, so the check above can fail either way
    # the committed comparison is the command's output (`quantlab compare A B` from the repository's root)
    names = [f"results/demo-two-runs/{n}.jsonl" for n in ("first", "second")]
    again = markdown(compare([(names[0], first), (names[1], second)]))
    assert (folder / "compare.md").read_text(encoding="utf-8") == again


def test_the_same_served_cells_in_two_real_runs():
    """The served cells of results/served-smollm2.jsonl and of results/demo-cpu.jsonl are the same recipe cells
    (model + spec) served with the same settings by two runs: paired by the cell, the rebuilt artifacts the only
    setting that differs, throughput never marked (one number per level), latency only where the bands miss."""
    served = read_results(RESULTS / "served-smollm2.jsonl")
    demo = read_results(RESULTS / "demo-cpu.jsonl")
    c = compare([("served", served), ("demo", demo)])
    assert len(c.rows) == 3 and all(row.pairing == ["B paired by recipe cell"] for row in c.rows)
    assert all([d.split(":")[0] for d in row.differences] == ["artifact digest"] for row in c.rows)
    assert len(c.unpaired) == len(demo) - 3 and {u.why for u in c.unpaired} == {"only in B"}
    for row in c.rows:
        a, b = row.records
        for la, lb in zip(a.load.levels, b.load.levels, strict=True):
            for name in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
                da, db = getattr(la, name), getattr(lb, name)
                metric = f"served c={la.concurrency}: {name.split('_')[0].upper()} ms p50"
                apart = _disjoint(da.median, da.p90, db.median, db.p90)
                assert next(ln for ln in row.lines if ln.metric == metric).verdicts == ["beyond" if apart else "within"]
        assert not [ln for ln in row.lines if "tok/s" in ln.metric and ln.verdicts != ["no spread"]]


# --- properties -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("compare-fuzz")


@fuzz_settings(0.5)
@given(data=fp.results_files())
def test_any_accepted_file_against_itself_pairs_and_marks_nothing(folder, data):
    """Whatever the reader accepts, compared with itself: every row pairs with itself (or, where one file holds
    look-alikes, is listed as ambiguous), no figure is marked, every ratio is 1 or undefined, and both formats
    render; the HTML page loads nothing from elsewhere."""
    _, records = fp.results_outcome(folder, data)
    if not records:
        return
    c = compare([("a", records), ("b", records)])
    assert c.marked() == []
    assert {u.run for u in c.unpaired} <= {"A", "B"}
    assert all(u.why.startswith("ambiguous") for u in c.unpaired)
    assert all(r in (None, 1.0) for row in c.rows for line in row.lines for r in line.ratios)
    assert markdown(c).startswith("# quantlab compare")
    page = html(c)
    assert page.startswith("<!doctype html>") and "http://" not in page and "https://" not in page


RULES = st.sampled_from(["stderr", "repeats", "requests", "exact", "none"])
NUMBER = st.floats(-1e6, 1e6, allow_nan=False)


@st.composite
def measures(draw, rule: str) -> Measure:
    low, high = sorted([draw(NUMBER), draw(NUMBER)])
    se = draw(st.one_of(st.none(), st.floats(0, 1e3)))
    return Measure(draw(NUMBER), rule, se=se, low=low, high=high, n=draw(st.integers(0, 100)))


@fuzz_settings()
@given(data=st.data(), rule=RULES)
def test_the_verdict_is_symmetric_and_never_marks_a_figure_against_itself(data, rule):
    a, b = data.draw(measures(rule)), data.draw(measures(rule))
    assert verdict(a, b) == verdict(b, a)
    assert verdict(a, a) != "beyond"
    if rule == "none":
        assert verdict(a, b) == "no spread"


# --- the command ----------------------------------------------------------------------------------------------


def test_the_command_prints_markdown_and_writes_html(tmp_path):
    a, b = RESULTS / "served-smollm2.jsonl", RESULTS / "demo-cpu.jsonl"
    proc = run_cli("compare", str(a), str(b), timeout=120)
    assert proc.returncode == 0, proc.stderr
    expected = markdown(compare([(str(a), read_results(a)), (str(b), read_results(b))]))
    assert proc.stdout == expected
    out = tmp_path / "cmp.html"
    proc = run_cli("compare", str(a), str(b), "--format", "html", "--out", str(out), timeout=120)
    assert proc.returncode == 0 and out.read_text(encoding="utf-8").startswith("<!doctype html>"), proc.stderr
    assert "<h2>Unpaired</h2>" in out.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{a}"], "error: compare needs two or more results files, got 1"),
        ([], "error: compare needs two or more results files, got 0"),
        (["{a}", "{missing}"], "error: results file {missing} does not exist"),
        (["{a}", "{junk}"], "error: {junk} line 1: not JSON (Expecting value at column 1)"),
        (["{a}", "{a}", "--format", "pdf"], "error: --format must be one of md, html, not pdf"),
    ],
)
def test_the_command_fails_in_one_line(tmp_path, args, message):
    (tmp_path / "junk.jsonl").write_text("not a record\n", encoding="utf-8")
    names = {
        "a": str(RESULTS / "demo.jsonl"),
        "missing": str(tmp_path / "none.jsonl"),
        "junk": str(tmp_path / "junk.jsonl"),
    }
    proc = run_cli("compare", *[arg.format(**names) for arg in args], timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert error_lines(proc.stderr) == [message.format(**names)]


def test_help_fits_80_columns():
    proc = run_cli("compare", "--help", env={"COLUMNS": "80"}, timeout=120)
    assert proc.returncode == 0 and "--format" in proc.stdout and "--out" in proc.stdout
    assert "…" not in proc.stdout and max(len(line) for line in proc.stdout.splitlines()) <= 80
