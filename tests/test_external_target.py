"""`quantlab bench --load --target URL`: a server quantlab did not start, measured with the same load generator.

The server is a real llama-server started here by hand (the tiny random Q8_0 GGUF), not through quantlab's engine
plans, so the command sees it exactly as it would see someone else's. What the server says of itself is parsed
from JSON that may be anything: arbitrary JSON must come back as "unknown", never as a crash."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.bench.target_probe import base_url, model_ids, server_props
from quantlab.errors import ServeError
from quantlab.results import LATENCY_DEFINITIONS, UNKNOWN, Result, ServerProps, read_results
from quantlab.serve.engines import LaunchPlan
from quantlab.serve.process import ServerProcess, free_port

from .conftest import error_lines, run_cli

ALIAS = "tiny-q8-by-hand"
LEVELS = {"1": 3, "2": 4}  # concurrency → requests asked for (--requests applies to every level: two runs)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
# answers shaped like the real ones, with any value in any field
shaped = st.fixed_dictionaries({"data": st.lists(st.dictionaries(st.sampled_from(["id", "object"]), json_values))})
props_like = st.dictionaries(
    st.sampled_from(["build_info", "model_path", "model_alias", "total_slots", "default_generation_settings"]),
    json_values | st.dictionaries(st.just("n_ctx"), json_values),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, shaped, props_like))
def test_any_json_from_a_server_parses_to_known_fields_or_unknown(data):
    ids = model_ids(data)
    assert ids is None or (ids and all(isinstance(i, str) and i for i in ids))
    props = server_props(json.loads(json.dumps(data)))
    if props is not None:
        ServerProps.model_validate_json(props.model_dump_json())  # what is kept is writable and reads back
        assert props.total_slots is None or isinstance(props.total_slots, int)


def test_the_parsers_read_real_shapes():
    assert model_ids({"object": "list", "data": [{"id": "a"}, {"id": 3}, {"id": "b"}]}) == ["a", "b"]
    assert model_ids({"data": []}) is None and model_ids([1]) is None
    props = server_props({"build_info": "b1-abc", "total_slots": 4, "default_generation_settings": {"n_ctx": 512}})
    assert (props.build_info, props.model_path, props.total_slots, props.n_ctx) == ("b1-abc", UNKNOWN, 4, 512)
    assert server_props({"total_slots": True, "other": 1}) is None  # a bool is not a count; nothing else known


def test_target_urls_are_normalized_or_refused_in_one_line():
    assert base_url("http://127.0.0.1:8080/v1/") == "http://127.0.0.1:8080"
    assert base_url("https://host/prefix") == "https://host/prefix"
    for bad in ("127.0.0.1:8080", "ftp://host", "http://host:port"):
        with pytest.raises(ServeError, match="--target"):
            base_url(bad)


@pytest.fixture(scope="module")
def by_hand(q8):
    """llama-server on the tiny Q8_0 GGUF, started the way a user would, with no quantlab engine plan."""
    from quantlab.llamacpp import build

    port = free_port()
    server = build.ensure().tool("llama-server")
    command = [str(server), "--model", str(q8.path / q8.manifest.gguf.file), "--alias", ALIAS, "--parallel", "2"]
    command += ["--ctx-size", "1024", "--threads", "2", "--host", "127.0.0.1", "--port", str(port)]
    plan = LaunchPlan(command=command, env={}, base_url=f"http://127.0.0.1:{port}", health_path="/health", model=ALIAS)
    with ServerProcess(plan, name="llama-server started by hand") as process:
        process.wait_ready(120.0)
        yield plan.base_url


@pytest.mark.slow
def test_a_running_llama_server_is_measured_as_external(by_hand, tmp_path):
    from quantlab import report

    results = tmp_path / "external.jsonl"
    for concurrency, n in LEVELS.items():
        args = ["--concurrency", concurrency, "--requests", str(n), "--prompt-tokens", "16", "--new-tokens", "4"]
        proc = run_cli("bench", "--load", "--target", by_hand + "/v1", *args, "--dataset", "embedded", "--results",
                       str(results), timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    records = read_results(results)
    assert [len(r.load.levels) for r in records] == [1, 1]
    for r, (concurrency, n) in zip(records, LEVELS.items(), strict=True):
        Result.model_validate_json(r.model_dump_json())
        assert r.artifact is None and r.quality is None and r.target.named_artifact is None
        assert r.target.url == by_hand and r.target.model_ids and r.target.model_ids[0] == ALIAS
        assert r.target.props.total_slots == 2 and r.target.props.build_info != UNKNOWN
        assert r.target.props.model_path.endswith(".gguf") and r.runtime.runtime_version == r.target.props.build_info
        assert r.load.engine == "external" and r.load.latency_definitions == LATENCY_DEFINITIONS
        level = r.load.levels[0]
        assert (level.concurrency, level.requests, level.completed, level.errors) == (int(concurrency), n, n, 0)
        assert level.output_tokens == 4 * n and level.output_tokens_counted_by == "usage"
        assert level.ttft_ms.median <= level.e2e_ms.median and level.ttft_ms.p99 <= level.e2e_ms.p99
        assert level.ttft_ms.mean <= level.e2e_ms.mean
        assert r.cost == [] and r.rig.name == UNKNOWN  # no rig named: no price invented
    table = report.markdown(report.select(records), title="external")
    assert f"external: {ALIAS} @ {by_hand.removeprefix('http://')}" in table, table
    assert "batching unknown" in table and "no artifact, so no digest" in table
    proc = run_cli("report", str(results))
    assert proc.returncode == 0 and f"external: {ALIAS}" in proc.stdout, proc.stderr
    proc = run_cli("recommend", str(results), "--rig", UNKNOWN, "--basis", "served")
    assert proc.returncode == 1 and "no artifact measured, so no quality" in proc.stdout, proc.stdout + proc.stderr


def test_target_errors_are_one_line_and_write_nothing(tmp_path):
    results = tmp_path / "r.jsonl"
    port = free_port()  # nothing listens there
    cases = [
        (["--load", "--target", f"http://127.0.0.1:{port}"], "cannot reach the server"),
        (["--target", f"http://127.0.0.1:{port}"], "add --load"),
        (["--load", "--target", "http://127.0.0.1:1", "--engine", "llamacpp"], "--engine"),
        (["--load", "--target", "localhost:8080"], "base URL"),
    ]
    for args, expected in cases:
        proc = run_cli("bench", *args, "--results", str(results), timeout=120)
        lines = error_lines(proc.stderr)
        assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
        assert expected in lines[0], lines
    assert not results.exists()
