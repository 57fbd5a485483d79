"""Serving and load: the load generator against a trivial endpoint with known timings, the server lifecycle
(no process survives success, a failed start, a timeout, Ctrl-C or SIGTERM), and a served tiny model end to
end through `transformers serve`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from quantlab.bench.loadgen import Request, run_level
from quantlab.errors import ServeError
from quantlab.quantizer import quantize
from quantlab.serve import trivial
from quantlab.serve.engines import LaunchPlan
from quantlab.serve.process import ServerProcess, free_port
from tests.conftest import run_cli


def _requests(n: int) -> list[Request]:
    return [Request(prompt=f"prompt {i}", prompt_tokens=16) for i in range(n)]


def _processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and any(text in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="module")
def slow_endpoint():
    """20 ms per token: TTFT and ITL have a known floor, and concurrent streams overlap."""
    plan = trivial.plan(free_port(), token_delay_ms=20)
    with ServerProcess(plan, name="trivial endpoint") as server:
        server.wait_ready(60)
        yield plan


def test_load_generator_measures_known_timings(slow_endpoint):
    one = run_level(
        slow_endpoint.base_url, model="trivial", requests=_requests(4), concurrency=1, max_tokens=8, extra_fields={}
    )
    four = run_level(
        slow_endpoint.base_url, model="trivial", requests=_requests(8), concurrency=4, max_tokens=8, extra_fields={}
    )
    for level, n in ((one, 4), (four, 8)):
        assert (level.completed, level.errors, level.requests) == (n, 0, n)
        assert level.output_tokens == 8 * n and level.prompt_tokens == 16 * n
        assert level.output_tokens_counted_by == "finish-length"
        assert 18 <= level.itl_ms.median <= 80, level.itl_ms
        assert level.ttft_ms.median >= 18
        assert level.tpot_ms.n == n and level.itl_ms.n == 7 * n
        assert level.ttft_ms.p99 >= level.ttft_ms.median
    # The endpoint serves streams concurrently: 4 in flight give well over twice the throughput of 1.
    assert four.total_tok_s > 2 * one.total_tok_s


def test_load_generator_counts_failures_instead_of_dropping_them():
    plan = trivial.plan(free_port(), fail_every=3, short_every=4)
    with ServerProcess(plan) as server:
        server.wait_ready(60)
        level = run_level(
            plan.base_url, model="trivial", requests=_requests(12), concurrency=2, max_tokens=6, extra_fields={}
        )
    # requests 3, 6, 9, 12 fail with HTTP 500; 4 and 8 end a token early (every 12th would be both)
    assert level.requests == 12 and level.errors == 6 and level.completed == 6
    assert any("HTTP 500" in e for e in level.error_examples)
    assert any("stream ended (stop)" in e for e in level.error_examples)
    assert level.output_tokens == 6 * 6


def test_server_stops_on_success_with_its_children(tmp_path):
    log = tmp_path / "server.log"
    script = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        "print('child', child.pid, flush=True); time.sleep(120)"
    )
    plan = LaunchPlan(
        command=[sys.executable, "-c", script],
        env=dict(os.environ),
        base_url="http://127.0.0.1:9",
        health_path="/",
        model="x",
    )
    with ServerProcess(plan, log_path=log) as server:
        for _ in range(100):
            if "child" in log.read_text():
                break
            time.sleep(0.05)
        child = int(log.read_text().split()[1])
        pid = server.pid
        assert not _gone(child)
    assert _gone(pid) and _gone(child)


def test_a_server_that_dies_while_starting_is_reported_with_its_log():
    plan = LaunchPlan(
        command=[sys.executable, "-c", "import sys; print('cannot load the model'); sys.exit(3)"],
        env=dict(os.environ),
        base_url=f"http://127.0.0.1:{free_port()}",
        health_path="/health",
        model="x",
    )
    with (
        pytest.raises(ServeError, match=r"exited with code 3.*cannot load the model"),
        ServerProcess(plan, name="broken server") as server,
    ):
        server.wait_ready(30)
    assert _gone(server.pid)


def test_a_server_that_never_answers_times_out_and_is_killed(monkeypatch):
    from quantlab.serve import process

    monkeypatch.setattr(process, "STOP_GRACE_S", 1.0)  # the grace is 10 s; what is checked is what follows it
    plan = LaunchPlan(
        command=[
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)",
        ],
        env=dict(os.environ),
        base_url=f"http://127.0.0.1:{free_port()}",
        health_path="/health",
        model="x",
    )
    started = time.monotonic()
    with pytest.raises(ServeError, match="did not answer"), ServerProcess(plan) as server:
        server.wait_ready(1)
    assert _gone(server.pid)  # it ignored SIGTERM: SIGKILL after the grace period
    assert time.monotonic() - started < 30


# --- real engines on a tiny model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_served(tiny_model, tmp_path_factory):
    from quantlab.spec import MethodSpec

    return quantize(
        str(tiny_model), MethodSpec(method="none", dtype="fp32"), tmp_path_factory.mktemp("served") / "tiny-none"
    )


def test_bench_load_through_transformers_serve(tiny_served, tmp_path):
    from quantlab import report
    from quantlab.bench import BenchConfig, bench_load
    from quantlab.results import read_results

    results = tmp_path / "served.jsonl"
    result = bench_load(
        tiny_served.path,
        config=BenchConfig(concurrency=[1, 4], requests=4, prompt_tokens=16, new_tokens=8),
        results_path=results,
    )
    sweep = result.load
    assert sweep.engine == "transformers" and sweep.batches
    assert result.runtime.runtime == "transformers server" and result.runtime.kernel == "dense"
    assert [lv.concurrency for lv in sweep.levels] == [1, 4]
    for level in sweep.levels:
        assert level.errors == 0 and level.completed == 4 and level.output_tokens == 32
        assert level.output_tokens_counted_by == "usage"  # transformers reports usage in the last chunk
    assert [c.batch_size for c in result.cost] == [1, 4] and all(c.basis == "served" for c in result.cost)
    assert result.memory.kind == "cpu-peak-rss-server" and result.memory.peak_bytes > 100e6
    assert sweep.memfit.batch == 4 and sweep.memfit.ctx == 24
    assert read_results(results)[0].load == sweep
    text = report.markdown([result])
    assert "Served under load" in text and "transformers" in text and "Served cost" in text
    assert not _processes_mentioning(str(tiny_served.path))


def _start_serve_cli(artifact: Path, port: int, preexec_fn=None) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "quantlab.cli", "serve", str(artifact), "--port", str(port)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        preexec_fn=preexec_fn,
    )
    deadline = time.monotonic() + 300
    assert proc.stderr is not None
    for line in proc.stderr:
        if "serving" in line:
            return proc
        assert time.monotonic() < deadline, "quantlab serve did not become ready"
    raise AssertionError(f"quantlab serve exited ({proc.wait()}) before serving")


@pytest.mark.slow  # a real server started and signalled, twice
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_cli_answers_then_stops_everything_on_a_signal(tiny_served, sig):
    import httpx

    port = free_port()
    proc = _start_serve_cli(tiny_served.path, port)
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "no server process under quantlab serve"
        body = {
            "model": str(tiny_served.path),
            "prompt": "hello",
            "max_tokens": 3,
            "generation_config": json.dumps({"max_new_tokens": 3, "eos_token_id": -1}),
        }
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=60)
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 3
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == (0 if sig == signal.SIGINT else 128 + sig)  # Ctrl-C is how a served model is stopped
    assert all(_gone(child.pid) for child in children)
    assert not _processes_mentioning(str(tiny_served.path))


def test_serve_cli_fails_in_one_line_on_a_bad_artifact_and_leaves_nothing(tiny_served, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_served.path, broken)
    weights = broken / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(b"\xff" * size)  # same size (the manifest check passes), unreadable header
    proc = run_cli("serve", str(broken), "--port", str(free_port()), "--startup-timeout", "120", timeout=300)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "server" in lines[0], proc.stderr[-2000:]
    assert not _processes_mentioning(str(broken))


def test_load_options_are_checked_before_anything_starts(tiny_served):
    proc = run_cli("bench", str(tiny_served.path), "--load", "--baseline", str(tiny_served.path))
    assert proc.returncode != 0 and "--baseline" in proc.stderr and "not --load" in proc.stderr
    proc = run_cli("bench", str(tiny_served.path), "--engine", "llamacpp")
    assert proc.returncode != 0 and "only apply with --load" in proc.stderr
    proc = run_cli("bench", str(tiny_served.path), "--load", "--engine", "llamacpp")
    assert proc.returncode == 1 and "cannot serve" in proc.stderr
    proc = run_cli("bench", str(tiny_served.path), "--load", "--concurrency", "0")
    assert proc.returncode == 1 and "--concurrency" in proc.stderr


def test_request_rate_spaces_arrivals_by_a_seeded_poisson_schedule(slow_endpoint):
    import random

    rng = random.Random(0)  # run_level's seed
    gaps = [rng.expovariate(20.0) for _ in range(10)]
    level = run_level(
        slow_endpoint.base_url,
        model="trivial",
        requests=_requests(10),
        concurrency=10,
        max_tokens=2,
        extra_fields={},
        request_rate=20.0,
        seed=0,
    )
    assert level.request_rate == 20.0 and level.completed == 10 and level.errors == 0
    # the last request leaves after the first nine gaps and still streams two tokens (≥ 2 × 20 ms)
    assert level.duration_s >= sum(gaps[:9]) + 0.04


def test_forked_children_get_the_default_sigterm_back():
    """`exit_on_sigterm` turns SIGTERM into SystemExit in quantlab's own process only: a forked worker (lm-eval's
    bootstrap pool, stopped by multiprocessing with SIGTERM) must die of it, or `quantlab run` hangs joining it."""
    code = """
import os, signal, time
from quantlab.util.signals import exit_on_sigterm
exit_on_sigterm()
pid = os.fork()
if pid == 0:
    time.sleep(30)
    os._exit(0)
time.sleep(0.2)
os.kill(pid, signal.SIGTERM)
_, status = os.waitpid(pid, 0)
print(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "True", proc.stderr
