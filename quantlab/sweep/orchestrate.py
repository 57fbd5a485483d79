"""One recipe run, whichever executor runs its plan: the state both the serial and the Ray executor drive.

Written once, here, for both:
- which rig a span of cells is measured as (`choose_rig`, `per_span`): the first rig the executor can measure on;
- which stages may start (`ready`): their needs met, the stages they wait for ended;
- resuming: once a cell's artifact is known, the records already in the results file for it (same recipe, cell
  and stage, made on this artifact, on this machine or on one of the cluster's nodes) are taken as done, and a
  record cut short by a kill is dropped before anything is written;
- reusing the baseline's lm-eval scores from its own bench record (`baseline_scores`);
- failures: a stage that fails, or that no rig here can measure, is recorded with its reason, and so is every
  stage that needed it; the run's report is written from the records it made or took (`finish`).

Matching records on the artifact's digest is also what keeps runs apart: a results file committed from another
host, or records of an artifact since rebuilt, are not this run's, so they are neither skipped nor reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from quantlab.bench.config import BenchConfig
from quantlab.errors import QuantlabError
from quantlab.results import CellRef, Result, TaskScore, append_result, read_results, repair_tail
from quantlab.sweep.recipe import Cell, Recipe, rigs_file_of
from quantlab.sweep.stages import Plan, Stage, StageKey

Progress = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Obtained:
    """A cell's artifact as the run knows it, wherever it was made."""

    path: Path
    digest: str


@dataclass
class RecipeRun:
    results: Path  # the results file; the report of this run is next to it (.md, .html, .csv, plots)
    records: dict[tuple[str, str, str], Result]  # (model id, cell name, stage) → the record this run made or reused
    failed: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (model, cell, stage) → why

    def of(self, name: str, stage: str = "bench") -> dict[str, Result]:
        """Model id → the cell's record of that stage."""
        return {model: r for (model, cell, kind), r in self.records.items() if (cell, kind) == (name, stage)}


def choose_rig(
    recipe: Recipe,
    path: Path,
    config: BenchConfig,
    accept: Callable[[BenchConfig], T],
    none_fit: Callable[[list[str], list[QuantlabError]], QuantlabError],
) -> tuple[BenchConfig, T]:
    """`config` with the first rig `accept` takes (the command line's, else the recipe's in order), the recipe's
    rigs file and prices applied, and what `accept` returned; `accept` raises why it cannot measure as that rig,
    and `none_fit(names, refusals)` says why none would do."""
    entries = recipe.rig_entries()
    names = [config.rig] if config.rig else [r.name for r in entries]
    prices = {r.name: r.price_per_hour for r in entries}
    refusals: list[QuantlabError] = []
    for name in names:
        candidate = config.model_copy(
            update={
                "rig": name,
                "rigs_file": config.rigs_file or rigs_file_of(recipe, path),
                "price_per_hour": config.price_per_hour or prices.get(name),
            }
        )
        try:
            return candidate, accept(candidate)
        except QuantlabError as exc:
            refusals.append(exc)
    raise none_fit(names, refusals)


def per_span(cells: list[Cell], resolve: Callable[[int], T]) -> tuple[dict[int, T], dict[int, str]]:
    """`resolve(n)` for every `tensor_parallel` n among the cells: what it gives, and why not for the spans it
    refuses. When it refuses them all, the first refusal is raised (the run fails at once, as with one rig)."""
    usable: dict[int, T] = {}
    refused: dict[int, QuantlabError] = {}
    for gpus in sorted({c.tensor_parallel for c in cells}):
        try:
            usable[gpus] = resolve(gpus)
        except QuantlabError as exc:
            refused[gpus] = exc
    if not usable:
        raise next(iter(refused.values()))
    return usable, {gpus: str(exc) for gpus, exc in refused.items()}


def same_machine(record: Result) -> bool:
    from quantlab.env import host_info

    here = host_info()
    return (record.host.hostname, record.host.cpu, record.host.gpus) == (here.hostname, here.cpu, here.gpus)


class Sweep:
    """The run's state: the plan, the artifacts obtained, the records made or taken, the failures."""

    def __init__(
        self, recipe: Recipe, plan: Plan, results: Path, progress: Progress, hosts: set[str] | None = None
    ) -> None:
        """`hosts`: the cluster's nodes, whose records are this run's (None: this machine's)."""
        self.recipe, self.plan, self.results, self.progress, self.hosts = recipe, plan, results, progress, hosts
        if repair_tail(results):
            progress(f"dropped a record cut short in {results} (its cell runs again)")
        self.existing = read_results(results) if results.is_file() and results.stat().st_size else []
        self.total, self.finished = len(plan.stages), 0
        self.artifacts: dict[str, Obtained] = {}  # cell key → its artifact
        self.records: dict[StageKey, Result] = {}
        self.failed: dict[StageKey, str] = {}
        self.started: set[StageKey] = set()
        self._stages = {s.key: s for s in plan.stages}
        for stage in plan.stages:
            if stage.refused and stage.key not in self.failed:
                self.fail(stage, stage.refused, say=False)

    def step(self, message: str, *, count: bool = False) -> None:
        self.finished += count
        self.progress(f"[{self.finished}/{self.total}] {message}")

    def ref(self, stage: Stage) -> CellRef:
        cell = stage.cell
        return CellRef(recipe=self.recipe.name, model=cell.model.id, name=cell.name, key=cell.key(), stage=stage.kind)

    def _done(self, key: StageKey) -> bool:
        return key[0] in self.artifacts if key[1] == "quantize" else key in self.records

    def ended(self, key: StageKey) -> bool:
        return self._done(key) or key in self.failed or key not in self._stages

    def waiting(self) -> list[Stage]:
        """Stages not started, done or failed, in plan order."""
        settled = self.started | self.failed.keys()
        return [s for s in self.plan.stages if s.key not in settled and not self._done(s.key)]

    def needs_met(self, stage: Stage) -> bool:
        return all(self._done(key) for key in stage.needs)

    def ready(self) -> list[Stage]:
        """The stages that may start now, in plan order."""
        return [s for s in self.waiting() if self.needs_met(s) and all(self.ended(k) for k in s.after)]

    def start(self, stage: Stage) -> None:
        self.started.add(stage.key)

    def obtained(self, stage: Stage, path: Path, digest: str) -> None:
        """The cell's artifact is ready: its stages already recorded on this artifact are taken, not run again."""
        cell = stage.cell
        self.started.discard(stage.key)
        self.artifacts[cell.key()] = Obtained(path=path, digest=digest)
        self.step(f"{stage.label()}: done, artifact ready", count=True)
        here = (lambda r: r.host.hostname in self.hosts) if self.hosts is not None else same_machine
        taken: dict[StageKey, Result] = {}
        for r in self.existing:
            ours = r.cell is not None and (r.cell.recipe, r.cell.key) == (self.recipe.name, cell.key())
            if ours and r.artifact.digest == digest and here(r) and (cell.key(), r.cell.stage) in self._stages:
                taken[(cell.key(), r.cell.stage)] = r  # the newest wins: the file is in time order
        for key, record in taken.items():
            if key not in self.records and key not in self.failed:
                self.records[key] = record
                self.step(f"{self._stages[key].label()}: recorded already", count=True)

    def measured(self, stage: Stage, record: Result, *, write: bool = True) -> None:
        """A stage's record; `write`: append it to the results file (one writer: the driver), unless the bench
        already did as it went."""
        self.started.discard(stage.key)
        if write:
            append_result(self.results, record)
        self.records[stage.key] = record
        self.step(f"{stage.label()}: done", count=True)

    def fail(self, stage: Stage, reason: str, *, say: bool = True) -> None:
        """Record why `stage` did not run or failed, and fail every stage that needed it."""
        self.started.discard(stage.key)
        self.failed.setdefault(stage.key, reason)
        if say:
            self.step(f"{stage.label()}: failed: {reason}")
        for other in self.plan.stages:
            if stage.key in other.needs and other.key not in self.failed:
                self.fail(other, f"{stage.label()} failed", say=False)

    def baseline_scores(self, stage: Stage) -> list[TaskScore] | None:
        """The baseline's lm-eval scores from its own bench record under the same task settings, so this bench
        does not score the baseline again; None (score it) where there is no such record."""
        record = next((self.records.get(key) for key in stage.after), None)
        t, c = (record.tasks if record else None), stage.config
        if t is None or c is None:
            return None
        asked = (c.tasks, c.task_path, c.task_limit, c.num_fewshot, c.task_batch_size)
        return t.scores if (t.tasks, t.task_path, t.limit, t.num_fewshot, t.batch_size) == asked else None

    def baseline_path(self, stage: Stage) -> Path | None:
        baseline = self.plan.baseline_of(stage.cell)
        return self.artifacts[baseline.key()].path if baseline is not None else None

    def finish(self) -> RecipeRun:
        """The report of this run's records, next to the results file."""
        from quantlab.report import select, write_report

        if self.records:
            write_report(select(list(self.records.values())), self.results)

        def named(key: StageKey) -> tuple[str, str, str]:
            cell = self._stages[key].cell
            return (cell.model.id, cell.name, key[1])

        return RecipeRun(
            results=self.results,
            records={named(k): r for k, r in self.records.items()},
            failed={named(k): why for k, why in self.failed.items()},
        )
