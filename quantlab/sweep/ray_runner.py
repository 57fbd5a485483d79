"""`quantlab run --ray`: the recipe's cells as Ray tasks, the driver the results file's only writer.

Every cell is up to three tasks: quantize (or reuse) its artifact, bench it against the model's baseline, serve
it under load. A bench is submitted once its own artifact and the baseline's are finished; a served load once
its artifact is. Cells are otherwise independent and run as the cluster's resources allow.

What is the same as a serial run (quantlab.sweep.runner), so the records are too, timings and hosts aside: the
same library calls per cell, the same adoption of records already made (a re-run after the driver died
continues where it stopped), the same report at the end. What differs: a bench loads the baseline and scores
its perplexity windows once per cell, not once per batch (the price of running cells apart), while the
baseline's lm-eval scores come from its own bench, which the model's other benches wait for when tasks are
asked (lm-eval is most of a bench's time on a CPU); a task whose worker process or node died is
retried (`ray.retries`), while one that raised is recorded as failed with its reason and the others go on.
Ctrl-C (or SIGTERM) force-cancels every task: Ray kills their worker processes, and the servers and workers
those started die with them (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from quantlab.bench.config import BenchConfig
from quantlab.results import Result, append_result
from quantlab.sweep import cluster, ray_tasks
from quantlab.sweep.recipe import Cell, Recipe, rigs_file_of
from quantlab.sweep.runner import Progress, RecipeRun, _Run, finish_run, per_span, stages, start_run

POLL_S = 0.5
_WAIT = object()  # a bench that waits for the baseline's own lm-eval scores


@dataclass
class _Job:
    cell: Cell
    stage: str  # quantize | bench | load
    ref: object
    attempts: int = 0

    def label(self) -> str:
        return f"{self.cell.name} {self.stage}"


@dataclass(frozen=True)
class _Made:
    path: Path
    digest: str
    runtime: str


def _rig(recipe: Recipe, path: Path, config: BenchConfig, cluster_nodes: list[cluster.Node], settings):
    """The config with the first of the recipe's rigs (or --rig) the cluster can host, and a cell's resources."""
    from quantlab.bench.prepare import check_span
    from quantlab.errors import RigError
    from quantlab.rigs import get_rig

    names = [config.rig] if config.rig else [r.name for r in recipe.rig_entries()]
    prices = {r.name: r.price_per_hour for r in recipe.rig_entries()}
    refusals = []
    for name in names:
        chosen = config.model_copy(
            update={
                "rig": name,
                "rigs_file": config.rigs_file or rigs_file_of(recipe, path),
                "price_per_hour": config.price_per_hour or prices.get(name),
            }
        )
        rig = get_rig(name, rigs_file=chosen.rigs_file, price_per_hour=chosen.price_per_hour)
        try:
            check_span(rig, config.tensor_parallel)
            return chosen, cluster.cell_resources(rig, settings, cluster_nodes)
        except (cluster.ClusterError, RigError) as exc:
            refusals.append(str(exc))
    raise cluster.ClusterError(refusals[0] if len(refusals) == 1 else "no rig fits: " + "; ".join(refusals))


def _rigs(recipe: Recipe, path: Path, config: BenchConfig, plan: list[Cell], nodes, settings) -> tuple[dict, dict]:
    """Per `tensor_parallel` of the cells: (config, resources) on a rig of that many GPUs the cluster hosts, and
    why not for the others. None it can host: the run fails before any cell starts."""
    return per_span(
        plan, lambda gpus: _rig(recipe, path, config.model_copy(update={"tensor_parallel": gpus}), nodes, settings)
    )


def run_on_ray(
    path: Path,
    recipe: Recipe,
    plan: list[Cell],
    config: BenchConfig,
    root: Path,
    results: Path,
    progress: Progress,
    ray_arg: str | bool | None,
) -> RecipeRun:
    import ray

    settings = recipe.ray or cluster.RaySettings()
    if isinstance(ray_arg, str):
        settings = settings.model_copy(update={"address": ray_arg})
    where = cluster.connect(settings.address)
    try:
        nodes = cluster.nodes()
        rigs, refused = _rigs(recipe, path, config, plan, nodes, settings)
        smallest_config, smallest = rigs[min(rigs)]
        cluster.check_work_dir(root, nodes, smallest)
        memory = _memory(recipe, path, smallest_config.rig) if smallest.num_gpus == 0 else {}
        for gpus, (chosen, need) in rigs.items():
            reserve = need.describe() + (" and its memory-fit estimate" if memory else "")
            span = f"cell spanning {gpus} GPUs" if gpus > 1 else "cell"
            progress(f"{where}: {len(nodes)} node(s); each {span} reserves {reserve} (rig {chosen.rig})")
        run = start_run(recipe, plan, smallest_config, results, progress)
        driver = _Driver(run, plan, rigs, root, settings, {n.host for n in nodes}, memory)
        driver.refuse(refused)
        return driver.run()
    finally:
        ray.shutdown()


def _memory(recipe: Recipe, path: Path, rig: str) -> dict[str, int]:
    """Cell key → the dry-run's memory-fit estimate on `rig` (weights + KV at memory_fit's batch × ctx): a
    logical reservation Ray places CPU cells by, not a limit. Empty when the model's config cannot be read here."""
    from quantlab.errors import QuantlabError
    from quantlab.sweep.plan import memory_plan

    try:
        plan = memory_plan(recipe, path)
    except QuantlabError:
        return {}
    names = [r.name for r in recipe.rig_entries()]
    if rig not in names:  # --rig named one the recipe's plan has no column for
        return {}
    where = names.index(rig)
    return {row.cell.key(): row.footprints[where].needed_bytes for _, _, rows in plan for row in rows}


class _Driver:
    def __init__(
        self,
        run: _Run,
        plan: list[Cell],
        rigs: dict[int, tuple[BenchConfig, cluster.Resources]],  # tensor_parallel → its config and resources
        root: Path,
        settings: cluster.RaySettings,
        hosts: set[str],  # the cluster's nodes: records made on them are this run's (adopt)
        memory: dict[str, int],  # cell key → bytes it reserves (CPU rigs)
    ) -> None:
        import ray

        self.state, self.plan, self.rigs, self.root = run, plan, rigs, root
        self.config = rigs[min(rigs)][0]  # quantizing does not depend on the GPUs a cell is measured on
        self.retries = settings.retries
        self.inbox = ray.remote(num_cpus=0)(ray_tasks.Inbox).remote()
        self.jobs: dict[int, _Job] = {}
        self.ids = itertools.count()
        self.failed: dict[tuple[str, str, str], str] = {}
        self.hosts, self.memory = hosts, memory
        self.in_process = self.config.quality or self.config.speed
        self.benched: set[str] = set()  # cell keys whose bench was submitted or found recorded

    def refuse(self, refused: dict[int, str]) -> None:
        """Cells whose GPU span no rig of the cluster hosts: made, not measured (their stages fail, said why)."""
        for cell in (c for c in self.plan if c.tensor_parallel in refused):
            for stage in stages(self.state.recipe, cell, self.config):
                self.failed[(cell.model.id, cell.name, stage)] = refused[cell.tensor_parallel]

    def _measured_as(self, cell: Cell) -> tuple[BenchConfig, cluster.Resources]:
        return self.rigs.get(cell.tensor_parallel) or self.rigs[min(self.rigs)]

    def run(self) -> RecipeRun:
        import ray

        for cell in self.plan:
            self._submit(
                cell, "quantize", ray_tasks.quantize_task, cell.model.id, cell.spec, str(cell.artifact_dir(self.root))
            )
        try:
            while self.jobs:
                ready, _ = ray.wait([j.ref for j in self.jobs.values()], num_returns=1, timeout=POLL_S)
                self._drain()
                for ref in ready:
                    job_id = next(i for i, j in self.jobs.items() if j.ref == ref)
                    self._finished(self.jobs.pop(job_id), ref)
            self._drain()
        except BaseException:
            self._cancel()
            raise
        return finish_run(self.state, self.plan, self.failed)

    def _submit(self, cell: Cell, stage: str, fn, *args) -> None:
        import ray

        job_id = next(self.ids)
        ctx = ray_tasks.TaskContext(inbox=self.inbox, job=job_id, cwd=os.getcwd())
        _, need = self._measured_as(cell)
        task = ray.remote(fn).options(
            num_cpus=need.num_cpus,
            num_gpus=need.num_gpus,
            memory=self.memory.get(cell.key()),
            max_retries=self.retries,
            retry_exceptions=False,
            name=f"quantlab {cell.name} {stage}",
        )
        self.jobs[job_id] = job = _Job(cell=cell, stage=stage, ref=task.remote(ctx, *args))
        self.state.step(f"{job.label()}: queued")

    def _drain(self) -> None:
        import ray

        for job_id, message in ray.get(self.inbox.drain.remote()):
            job = self.jobs.get(job_id)
            if job is None:
                continue
            if message.startswith(ray_tasks.RUNNING):
                job.attempts += 1
                message += f", attempt {job.attempts} of {self.retries + 1}" if job.attempts > 1 else ""
            self.state.step(f"{job.label()}: {message}")

    def _finished(self, job: _Job, ref) -> None:
        import ray

        try:
            value = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            self._fail(job, str(exc.cause) if exc.cause is not None else str(exc).splitlines()[-1])
            return
        except ray.exceptions.RayError as exc:
            self._fail(job, f"{type(exc).__name__} after {job.attempts} attempt(s): {str(exc).splitlines()[0]}")
            return
        cell = job.cell
        if job.stage == "quantize":
            self.state.artifacts[cell.key()] = _Made(
                path=Path(value["path"]), digest=value["digest"], runtime=value["runtime"]
            )
            self.state.adopt(cell, self.hosts)
            self.state.step(f"{job.label()}: done, artifact ready", count=True)
            self._after_artifact(cell)
            return
        record = Result.model_validate_json(value)
        append_result(self.state.results, record)
        self.state.mine[(cell.key(), job.stage)] = record
        self.state.step(f"{job.label()}: done", count=True)
        if cell.is_baseline and job.stage == "bench":
            self._baseline_benched(cell)

    def _baseline_benched(self, baseline: Cell) -> None:
        """The benches that waited for the baseline's own lm-eval scores (see `_baseline_scores`)."""
        for cell in (c for c in self.plan if c.model is baseline.model and c is not baseline):
            self._maybe_bench(cell)

    def _fail(self, job: _Job, reason: str) -> None:
        self.failed[(job.cell.model.id, job.cell.name, job.stage)] = reason
        self.state.step(f"{job.label()}: failed: {reason}")
        if job.stage == "bench" and job.cell.is_baseline:
            self._baseline_benched(job.cell)  # the others score the baseline themselves
        if job.stage != "quantize":
            return
        for stage in stages(self.state.recipe, job.cell, self.config):  # its own bench and load never start
            self.failed.setdefault((job.cell.model.id, job.cell.name, stage), f"{job.label()} failed")
        if job.cell.is_baseline and self.in_process:  # nor does any bench of its model (its loads still run)
            for cell in (c for c in self.plan if c.model is job.cell.model):
                self.failed.setdefault((cell.model.id, cell.name, "bench"), f"{job.label()} failed")

    def _baseline(self, cell: Cell) -> Cell | None:
        return next((c for c in self.plan if c.model is cell.model and c.is_baseline), None)

    def _after_artifact(self, cell: Cell) -> None:
        """Submit what waited on this artifact: its own bench and load; the model's benches if it is the baseline."""
        waiting = [c for c in self.plan if c.model is cell.model] if cell.is_baseline else [cell]
        for c in waiting:
            self._maybe_bench(c)
        if self.state.recipe.served(cell.name) and (cell.model.id, cell.name, "load") not in self.failed:
            if (cell.key(), "load") in self.state.mine:
                self.state.step(f"{cell.name} load: recorded already", count=True)
            else:
                made, ref = self.state.artifacts[cell.key()], self.state.ref(cell, "load")
                config, _ = self._measured_as(cell)
                self._submit(cell, "load", ray_tasks.load_task, str(made.path), config, ref)

    def _maybe_bench(self, cell: Cell) -> None:
        baseline = self._baseline(cell)
        artifacts = self.state.artifacts
        if not self.in_process or cell.key() not in artifacts or (baseline and baseline.key() not in artifacts):
            return
        if (cell.model.id, cell.name, "bench") in self.failed or cell.key() in self.benched:
            return
        if (cell.key(), "bench") in self.state.mine:
            self.benched.add(cell.key())
            self.state.step(f"{cell.name} bench: recorded already", count=True)
            return
        runtimes = {artifacts[c.key()].runtime for c in (cell, baseline) if c is not None}
        config, _ = self._measured_as(cell)
        if runtimes != {"transformers"}:  # lm-eval scores transformers models only, as in a serial run
            config = config.model_copy(update={"tasks": None})
        scores = self._baseline_scores(cell, baseline, config) if config.tasks else None
        if scores is _WAIT:
            return
        self.benched.add(cell.key())
        base = str(artifacts[baseline.key()].path) if baseline else None
        self._submit(
            cell,
            "bench",
            ray_tasks.bench_task,
            str(artifacts[cell.key()].path),
            base,
            config,
            self.state.ref(cell, "bench"),
            scores,
        )

    def _baseline_scores(self, cell: Cell, baseline: Cell | None, config: BenchConfig):
        """The baseline's lm-eval scores from its own bench record, so a cell's bench does not score the baseline
        again (36 s a cell on demo-cpu): `_WAIT` while that bench runs; None (score it) where there is none to
        wait for: no baseline, this is it, it spans other GPUs, its bench failed, or its record holds no scores
        under these task settings."""
        if baseline is None or cell is baseline or baseline.tensor_parallel != cell.tensor_parallel:
            return None
        if (baseline.model.id, baseline.name, "bench") in self.failed:
            return None
        record = self.state.mine.get((baseline.key(), "bench"))
        if record is None:
            return _WAIT
        t = record.tasks
        asked = (config.tasks, config.task_path, config.task_limit, config.num_fewshot, config.task_batch_size)
        return (
            t.scores
            if t is not None and (t.tasks, t.task_path, t.limit, t.num_fewshot, t.batch_size) == asked
            else None
        )

    def _cancel(self) -> None:
        import ray

        for job in self.jobs.values():
            ray.cancel(job.ref, force=True)
        if self.jobs:
            self.state.progress(f"cancelled {len(self.jobs)} running or queued task(s)")
