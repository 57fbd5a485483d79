"""The serial executor: a recipe's plan of stages run one after another in this process.

It takes the first stage that may start, in plan order (a model's artifacts, then its benches, then its loads).
Benches that measure one model with the same settings run as one `bench` call, which loads the baseline once
and scores its perplexity windows once for all of them (and its lm-eval tasks, when the baseline is among them).
A stage that raises stops the run: its error is the run's, as when the library is called directly.
"""

from __future__ import annotations

from pathlib import Path

from quantlab.sweep.orchestrate import Sweep
from quantlab.sweep.stages import Stage


def run_serial(sweep: Sweep, root: Path) -> None:
    """Every stage of the plan, artifacts under `root`."""
    while ready := sweep.ready():
        stage = ready[0]
        if stage.kind == "quantize":
            _quantize(sweep, stage, root)
        elif stage.kind == "bench":
            _bench(sweep, _bench_batch(sweep, stage))
        else:
            _load(sweep, stage)


def _quantize(sweep: Sweep, stage: Stage, root: Path) -> None:
    from quantlab.quantizer import obtain

    cell = stage.cell
    sweep.start(stage)
    artifact = obtain(cell.model.id, cell.spec, cell.artifact_dir(root), log=lambda m: sweep.step(f"{cell.name}: {m}"))
    sweep.obtained(stage, artifact.path, artifact.digest)


def _bench_batch(sweep: Sweep, first: Stage) -> list[Stage]:
    """`first` and the other benches of its model under the same settings that may start with it: a bench waiting
    only for the baseline's bench joins it, since one call scores the baseline's tasks once for all."""
    batch = [first]
    for stage in sweep.waiting():
        same = stage.kind == "bench" and stage.cell.model is first.cell.model and stage.config == first.config
        if same and stage is not first and sweep.needs_met(stage):
            batch.append(stage)
    keys = {s.key for s in batch}
    return [s for s in batch if all(k in keys or sweep.ended(k) for k in s.after)]


def _bench(sweep: Sweep, batch: list[Stage]) -> None:
    from quantlab.bench.run import bench

    for stage in batch:
        sweep.start(stage)
    made = bench(
        [sweep.artifacts[s.cell.key()].path for s in batch],
        baseline=sweep.baseline_path(batch[0]),
        config=batch[0].config,
        results_path=sweep.results,
        cells=[sweep.ref(s) for s in batch],
        progress=sweep.step,
        baseline_tasks=next((scores for s in batch if (scores := sweep.baseline_scores(s)) is not None), None),
    )
    for stage, record in zip(batch, made, strict=True):
        sweep.measured(stage, record, write=False)


def _load(sweep: Sweep, stage: Stage) -> None:
    from quantlab.bench.served import bench_load

    sweep.start(stage)
    record = bench_load(
        sweep.artifacts[stage.cell.key()].path, config=stage.config, cell=sweep.ref(stage), progress=sweep.step
    )
    sweep.measured(stage, record)
