"""What a Ray worker runs for one stage of a cell: the same library calls as the serial executor (`obtain`, `bench`,
`bench_load`), with no results file. A task returns its record as JSON and the driver appends it, so the results
file has one writer and a task retried after its worker died can never leave a second copy.

Each task first says where it runs (host, address, pid) and then forwards its progress lines to an inbox actor
the driver drains; the driver's progress is the only place a user watches. The lines are sent without waiting
for an answer: a task blocked in `ray.get` lends its CPUs back to the scheduler, which would start another cell
on a node this one reserved whole.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quantlab.bench.config import BenchConfig
from quantlab.results import CellRef
from quantlab.spec import MethodSpec

RUNNING = "running on "


class Inbox:
    """A Ray actor (created with num_cpus=0) holding (job id, message) pairs until the driver takes them."""

    def __init__(self) -> None:
        self.items: list[tuple[int, str]] = []

    def put(self, item: tuple[int, str]) -> None:
        self.items.append(item)

    def drain(self) -> list[tuple[int, str]]:
        items, self.items = self.items, []
        return items


@dataclass(frozen=True)
class TaskContext:
    inbox: object  # an Inbox actor handle
    job: int
    cwd: str  # the driver's: relative paths in the recipe (datasets, rigs files) resolve as they did there


def _started(ctx: TaskContext) -> Callable[[str], None]:
    import ray

    from quantlab.util.signals import default_sigterm_in_forked_children

    if Path(ctx.cwd).is_dir():
        os.chdir(ctx.cwd)
    default_sigterm_in_forked_children()

    def say(message: str) -> None:
        ctx.inbox.put.remote((ctx.job, message))  # fire and forget: in order, never blocking

    say(f"{RUNNING}{socket.gethostname()} ({ray.util.get_node_ip_address()}, pid {os.getpid()})")
    return say


def quantize_task(ctx: TaskContext, model: str, spec: MethodSpec, out: str) -> dict:
    """The cell's artifact, reused when finished (a retried task picks up nothing half-made: `building`)."""
    from quantlab.quantizer import obtain

    artifact = obtain(model, spec, out, log=_started(ctx))
    return {"path": str(artifact.path), "digest": artifact.digest}


def bench_task(
    ctx: TaskContext,
    artifact: str,
    baseline: str | None,
    config: BenchConfig,
    cell: CellRef,
    baseline_tasks=None,
    shelf=None,  # a sweep.shelf.Shelf: the driver's references, for a node whose cache lacks one
) -> str:
    from quantlab.bench.run import bench

    (result,) = bench(
        [artifact],
        baseline=baseline,
        config=config,
        cells=[cell],
        progress=_started(ctx),
        baseline_tasks=baseline_tasks,
        shelf=shelf,
    )
    return result.model_dump_json()


def load_task(ctx: TaskContext, artifact: str, config: BenchConfig, cell: CellRef) -> str:
    from quantlab.bench.served import bench_load

    return bench_load(artifact, config=config, cell=cell, progress=_started(ctx)).model_dump_json()
