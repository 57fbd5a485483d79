"""`bench_load(artifact, ...)`: serve an artifact through a real engine and measure it under concurrent load.

Three steps, each in one place: the plan (`served_plan`: engine, serving options, draft, workload, rig, launch
plans; every check, nothing started), the run (`served_run`: the kernel label, the servers, the levels, the greedy
check; no server outlives it), and the record (`served_record`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from quantlab.bench.config import BenchConfig
from quantlab.bench.served_plan import plan_served
from quantlab.bench.served_record import served_result
from quantlab.bench.served_run import run_served
from quantlab.results import CellRef, Result, append_result

Progress = Callable[[str], None]


def bench_load(
    artifact_path: str | Path,
    *,
    config: BenchConfig | None = None,
    results_path: str | Path | None = None,
    progress: Progress = lambda _: None,
    cell: CellRef | None = None,
    port: int | None = None,
    startup_timeout_s: float = 600.0,
    request_timeout_s: float = 600.0,
) -> Result:
    plan = plan_served(artifact_path, config or BenchConfig(), port=port)
    run = run_served(plan, progress, startup_timeout_s=startup_timeout_s, request_timeout_s=request_timeout_s)
    result = served_result(plan, run, cell)
    if results_path is not None:
        append_result(results_path, result)
    return result
