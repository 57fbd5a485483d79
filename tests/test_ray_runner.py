"""`quantlab run --ray` on a real local Ray cluster (a head and a worker node, each its own raylet, no mocks): the
records equal a serial run's, a worker process killed mid-cell is retried with its record written once, a driver
killed mid-run is continued by the same command, and a cluster that cannot run the recipe fails before any cell
starts."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray  # an extra `make` installs: a missing install fails here, never skips

from quantlab.results import read_results
from quantlab.sweep.runner import run_recipe
from tests.conftest import CELLS
from tests.conftest import tiny_recipe as _recipe
from tests.test_runner import _bench_records, _created

RAY = [str(Path(sys.executable).parent / "ray")]
# Fields that say when, where and how fast: everything else of a record is the same wherever the cell ran.
VOLATILE = {"run_id", "timestamp", "host", "speed", "memory", "cost", "roofline"}


# Each run builds its artifacts in its own work_dir: where, when and how fast differ, and the manifest digest
# with them (it covers created_at); the files themselves are compared by hash below.
BUILD = {".artifact.path", ".artifact.digest", ".artifact.quantize_seconds", ".quality.vs_baseline.baseline_digest"}


AGENT_PORTS = (
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
)


def _ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Cluster:
    """`ray start --block` processes in their own sessions, so the teardown kills exactly this cluster's
    processes (`ray stop` would kill every Ray process of the machine)."""

    def __init__(self, root: Path) -> None:
        self.root, self.procs = root, []
        self.free = _ports(16)  # one draw, all distinct: ports drawn one by one may repeat before Ray binds them
        self.port = self.free.pop()
        self.address = f"127.0.0.1:{self.port}"

    def _start(self, args: list[str], prefix: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        log = open(self.root / f"node-{len(self.procs)}.log", "w")  # noqa: SIM115 (closed with the process)
        self.procs.append(
            subprocess.Popen(
                [
                    *(prefix or []),
                    *RAY,
                    "start",
                    "--block",
                    "--disable-usage-stats",
                    "--node-ip-address=127.0.0.1",
                    *args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        )

    def head(self) -> Cluster:
        extra = [f"{flag}={self.free.pop()}" for flag in AGENT_PORTS]
        self._start(["--head", f"--port={self.port}", "--num-cpus=0", "--include-dashboard=false", *extra])
        return self

    def worker(self, cpus: int = 2, prefix: list[str] | None = None, env: dict[str, str] | None = None) -> Cluster:
        ports = [f"{flag}={self.free.pop()}" for flag in AGENT_PORTS]
        self._start([f"--address={self.address}", f"--num-cpus={cpus}", *ports], prefix, env)
        return self

    def wait(self, nodes: int, timeout: float = 180) -> Cluster:
        deadline = time.monotonic() + timeout
        while True:  # ray.init has no timeout: wait for the head's GCS port first
            self._check(deadline)
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            time.sleep(0.5)
        ray.init(address=self.address, logging_level="error")
        try:
            while sum(n["Alive"] for n in ray.nodes()) < nodes:
                self._check(deadline)
                time.sleep(0.5)
        finally:
            ray.shutdown()
        return self

    def _check(self, deadline: float) -> None:
        dead = [i for i, p in enumerate(self.procs) if p.poll() is not None]
        tails = {i: (self.root / f"node-{i}.log").read_text()[-1500:] for i in dead}
        assert not dead and time.monotonic() < deadline, f"cluster did not come up: {tails or 'timeout'}"

    def stop(self) -> None:
        """SIGTERM to each `ray start --block` (it stops its node's processes), then SIGKILL to what is left of
        its process group."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module", autouse=True)
def no_token_auth() -> Iterator[None]:
    """Ray ≥ 2.5x turns token auth on for a cluster `ray.init()` starts and saves the token to ~/.ray, where
    clusters started otherwise then disagree about it: these tests' clusters, drivers and CLI runs say `disabled`
    explicitly, whatever ran on this machine before."""
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    yield
    if saved is None:
        del os.environ["RAY_AUTH_MODE"]
    else:
        os.environ["RAY_AUTH_MODE"] = saved


@pytest.fixture(scope="module")
def cluster(no_token_auth) -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="qlray-"))  # short: Ray's unix sockets live below it
    running = Cluster(root)
    try:
        # the worker node's references cache is not the driver's, as on machines that share no disk but the work dir
        yield running.head().worker(cpus=2, env={"QUANTLAB_REFERENCES": str(root / "node-references")}).wait(nodes=2)
    finally:
        running.stop()
        shutil.rmtree(root, ignore_errors=True)


def _flat(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _flat(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def _stable(results: Path) -> dict:
    """Every field but the volatile ones, flattened, per cell."""
    records = {r.cell.name: _flat(r.model_dump(mode="json", exclude=VOLATILE)) for r in read_results(results)}
    return {(name, k): v for name, fields in records.items() for k, v in fields.items() if k not in BUILD}


@pytest.mark.slow  # a serial run and a Ray run of the recipe, plus a retry: a few minutes on 2 cores
def test_ray_run_equals_serial_and_a_killed_worker_is_retried_once(serial_run, tmp_path, cluster):
    recipe = serial_run.recipe
    killed: list[int] = []

    def progress(message: str) -> None:
        messages.append(message)
        if not killed and "w8 bench: running on " in message:  # the Ray worker process running that cell
            killed.append(int(message.rsplit("pid ", 1)[1].split(")")[0]))
            os.kill(killed[0], signal.SIGKILL)

    messages: list[str] = []
    results = tmp_path / "ray.jsonl"
    done = run_recipe(recipe, results=results, work_dir=tmp_path / "ray-work", progress=progress, ray=cluster.address)
    assert killed and any("w8 bench: running on " in m and "attempt 2 of 3" in m for m in messages), messages
    assert done.failed == {}
    # the baseline's bench made its reference on the worker node and published it to the driver's machine; the
    # other benches found it on their node (the next test's run fetches one from the driver)
    loaded = [m for m in messages if "loading baseline" in m]
    assert len(loaded) == 1 and "] fp32 bench: loading baseline " in loaded[0], messages
    assert any("] fp32 bench: reference " in m and " published to " in m for m in messages)
    assert _bench_records(results) == Counter(CELLS)  # the killed attempt left no record
    ray_run, serial = _stable(results), _stable(serial_run.results)
    assert {
        k: (ray_run.get(k), serial.get(k)) for k in ray_run.keys() | serial.keys() if ray_run.get(k) != serial.get(k)
    } == {}
    assert results.with_suffix(".md").is_file()
    assert _files(tmp_path / "ray-work") == _files(serial_run.work)  # the same bytes quantized


@pytest.mark.slow  # a serial and a Ray run of the recipe with lm-eval tasks (the artifacts reused)
def test_benches_on_ray_reuse_the_baselines_own_task_scores(serial_run, tmp_path, cluster):
    """With lm-eval tasks the model's other benches wait for the baseline's bench and take its scores: lm-eval
    runs once per artifact, as in a serial batch, and the records are the serial run's."""
    from quantlab.bench.tasks import BUILTIN_TASK

    settings = {"tasks": [BUILTIN_TASK], "task_limit": 16, "speed": False}
    serial, on_ray = tmp_path / "serial.jsonl", tmp_path / "ray.jsonl"
    said: dict[str, list[str]] = {"serial": [], "ray": []}
    run_recipe(serial_run.recipe, results=serial, work_dir=serial_run.work, overrides=settings,
               progress=said["serial"].append)  # fmt: skip
    done = run_recipe(serial_run.recipe, results=on_ray, work_dir=serial_run.work, overrides=settings,
                      progress=said["ray"].append, ray=cluster.address)  # fmt: skip
    assert done.failed == {}
    scored = {run: [m for m in messages if ": lm-eval tasks" in m] for run, messages in said.items()}
    assert len(scored["ray"]) == len(scored["serial"]) == len(CELLS), scored  # the baseline once, in its own bench
    ray_log = said["ray"]
    # the serial run made the reference on the driver's machine, for these artifacts; the worker node, whose
    # references cache lacks it, fetched it from there instead of computing it (the baseline is loaded only for
    # its lm-eval tasks)
    assert any("fp32 bench: " in m and " fetched, baseline not loaded" in m for m in ray_log), ray_log
    assert not any("reference window" in m for m in ray_log)
    baseline_done = next(i for i, m in enumerate(ray_log) if m.endswith("fp32 bench: done"))
    assert all(i > baseline_done for i, m in enumerate(ray_log) if m.endswith(("w8 bench: queued", "w4 bench: queued")))
    ray_run, serial_records = _stable(on_ray), _stable(serial)
    assert any(".tasks.scores[0].recovery_pct" in key for _, key in ray_run)
    assert {
        k: (ray_run.get(k), serial_records.get(k))
        for k in ray_run.keys() | serial_records.keys()
        if ray_run.get(k) != serial_records.get(k)
    } == {}


def _files(work: Path) -> dict:
    return {p.parent.name: json.loads(p.read_text())["files"] for p in work.glob("*/*/quantlab.json")}


def _cli(*args: str, log: Path | None = None) -> subprocess.Popen:
    """The CLI in its own process; stderr to `log` when given (a pipe nobody reads would fill and block it)."""
    err = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115 (the child holds it; closed at exit)
    command = [sys.executable, "-m", "quantlab.cli", "run", *args]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, text=True)


@pytest.mark.slow  # two Ray runs of the recipe
def test_driver_killed_mid_run_then_the_same_command_finishes_the_rest(tiny_model, tmp_path, cluster):
    """The recipe also holds a model that cannot load: its cells fail on every run, with their reason, while
    the other model's cells go on."""
    recipe = _recipe(tmp_path, tiny_model)
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    text = recipe.read_text()
    recipe.write_text(text.replace("models: [", f"models: [{{id: {json.dumps(str(broken))}}}, "))
    results, work = tmp_path / "r.jsonl", tmp_path / "work"
    args = (str(recipe), "--ray-address", cluster.address, "--results", str(results), "--work-dir", str(work))
    driver = _cli(*args, log=tmp_path / "first.log")
    deadline = time.monotonic() + 600
    while not (results.is_file() and results.stat().st_size) and driver.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    driver.kill()
    driver.wait()
    first = _bench_records(results)
    before = _created(work)
    assert 0 < sum(first.values()) < len(CELLS), "the kill landed after the run"
    again = _cli(*args, log=tmp_path / "again.log")
    again.wait(timeout=600)
    err = (tmp_path / "again.log").read_text()
    assert _bench_records(results) == Counter(CELLS)  # every cell once: the recorded ones were not run again
    assert err.count("bench: recorded already") == sum(first.values()), err[-3000:]
    after = _created(work)
    assert {k: after[k] for k in before} == before and len(after) == len(CELLS)
    failures = [line for line in err.splitlines() if line.startswith(f"error: {broken} ")]
    assert again.returncode == 1 and len(failures) == 2 * len(CELLS), err[-3000:]  # quantize and bench per cell
    assert err.strip().splitlines()[-1].startswith(f"error: {2 * len(CELLS)} cell stage(s) failed")


def test_a_rig_the_cluster_cannot_host_fails_before_any_cell(tiny_model, tmp_path, cluster):
    """The recipe's own `ray:` section picks the cluster here (no --ray on the command line)."""
    recipe = _recipe(tmp_path, tiny_model)
    section = f"rigs: [h100]\nray: {{address: '{cluster.address}', retries: 1}}"
    recipe.write_text(recipe.read_text().replace("rigs: [cpu]", section))
    proc = _cli(str(recipe), "--results", str(tmp_path / "r.jsonl"))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert err.strip().splitlines() == [
        "error: rig h100 needs 1 GPU(s) on one node; this cluster's nodes have at most 0"
    ]
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare for a node with its own mounts")
def test_a_work_dir_one_node_cannot_see_fails_before_any_cell(tiny_model, tmp_path):
    """A second worker node runs in its own mount namespace with an empty tmpfs over the work_dir's parent: the
    same path, other storage, as a node without the shared mount."""
    root = Path(tempfile.mkdtemp(prefix="qlray-"))
    shared = root / "shared"
    shared.mkdir()
    hide = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'mount -t tmpfs none "{shared}" && exec "$0" "$@"',
    ]
    blind = Cluster(root)
    try:
        probe = subprocess.run([*hide[:-1], f'mount -t tmpfs none "{shared}"'], capture_output=True, check=False)
        if probe.returncode != 0:
            pytest.skip(f"no private mount namespace here: {probe.stderr.decode().strip()}")
        blind.head().worker(cpus=2).wait(nodes=2).worker(cpus=2, prefix=hide).wait(nodes=3)
        recipe = _recipe(tmp_path, tiny_model)
        args = (str(recipe), "--ray-address", blind.address, "--work-dir", str(shared / "work"))
        proc = _cli(*args, "--results", str(tmp_path / "r.jsonl"))
        _, err = proc.communicate(timeout=300)
    finally:
        blind.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: work_dir {shared / 'work'} is not visible from node(s) ")
    assert not (tmp_path / "r.jsonl").exists()


def test_ctrl_c_cancels_the_cells_and_leaves_no_server(tiny_model, tmp_path, cluster):
    """SIGINT while a cell serves its artifact under load: the driver exits 130, and the Ray worker running the
    cell and the server it started are gone."""
    import psutil

    recipe = _recipe(tmp_path, tiny_model)
    text = recipe.read_text().replace(
        "warmup: 0, repeats: 1}", "warmup: 0, repeats: 1, concurrency: [1, 2],\n        load_cells: [fp32]}"
    )
    recipe.write_text(text)
    log, work = tmp_path / "driver.log", tmp_path / "work"
    args = (str(recipe), "--ray-address", cluster.address, "--no-quality", "--no-speed", "--work-dir", str(work))
    driver = _cli(*args, "--results", str(tmp_path / "r.jsonl"), log=log)
    deadline = time.monotonic() + 300
    while "waiting for the server" not in log.read_text():
        assert driver.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
    worker = int(log.read_text().split("fp32 load: running on ", 1)[1].split("pid ", 1)[1].split(")")[0])
    serving = [p for p in psutil.process_iter(["cmdline"]) if str(work) in " ".join(p.info["cmdline"] or [])]
    assert serving, "no server process names the artifact"
    watched = [psutil.Process(worker), *serving]
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=60) == 130, log.read_text()[-2000:]
    _, alive = psutil.wait_procs(watched, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    assert "cancelled" in log.read_text()
