"""`bench(artifacts, ...)`: measure artifacts the same way and append one Result per artifact.

Quality runs in this process: the baseline (if any) is loaded once to write its reference file (or not at all,
when the cache holds it already) and unloaded before the first artifact, which is then scored against the file on
exactly the same windows. Speed and memory run in a fresh subprocess per artifact (see `worker`), so peak memory is the
artifact's own. Every input is checked before the first model is loaded (`prepare`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from quantlab.artifact import Artifact
from quantlab.bench import records
from quantlab.bench.config import BenchConfig
from quantlab.bench.prepare import Prepared, Subject, device_name, prepare, tokenizer_dir
from quantlab.bench.quality import score, windows
from quantlab.bench.reference import Shelf, cached, cached_path, load_label, make_reference
from quantlab.bench.worker import measure_in_worker
from quantlab.errors import BenchError
from quantlab.reference import Reference
from quantlab.results import CellRef, Result, RuntimeDescription, SpeedPoint, TaskScore, append_result

Progress = Callable[[str], None]


def bench(
    artifacts: list[str | Path],
    *,
    baseline: str | Path | None = None,
    config: BenchConfig | None = None,
    results_path: str | Path | None = None,
    progress: Progress = lambda _: None,
    cells: list[CellRef] | None = None,
    baseline_tasks: list[TaskScore] | None = None,
    shelf: Shelf | None = None,
) -> list[Result]:
    """`cells` (quantlab run): one CellRef per artifact, recorded in its Result. `baseline_tasks`: the baseline's
    lm-eval scores under this very config, measured already (a Ray run's baseline cell): not scored again.
    `shelf`: where the baseline's reference is fetched from, or published to, when this machine lacks it."""
    config = config or BenchConfig()
    if not (config.quality or config.speed):
        raise BenchError("nothing to measure: --no-quality and --no-speed together")
    plan = prepare(artifacts, baseline, config)
    run_id = records.new_run_id()
    reference, base_tasks = plan.reference, None
    if plan.baseline is not None:
        reference, base_tasks = _baseline(plan.baseline, config, baseline_tasks, plan.device, progress, shelf)
    out: list[Result] = []
    for i, subject in enumerate(plan.subjects):
        result = _measure(subject, plan, config, run_id, reference, base_tasks, progress)
        if cells is not None:
            result.cell = cells[i]
        if results_path is not None:
            append_result(results_path, result)
        out.append(result)
    return out


def _baseline(
    base: Subject,
    config: BenchConfig,
    known_tasks: list[TaskScore] | None,
    device: str,
    progress: Progress,
    shelf: Shelf | None = None,
) -> tuple[Reference, list[TaskScore] | None]:
    """The baseline's reference (found in the cache, fetched from the shelf, or made now) and its task scores, the
    baseline loaded only for as long as they take: it is closed before any cell loads, so no cell is measured
    beside it."""
    name = base.artifact.path.name
    load = load_label(base.runtime.name, base.quality)
    path = cached_path(base.artifact, load, base.stream, config.ctx)
    reference = cached(path)
    fetched = reference is None and shelf is not None and _fetch(shelf, path, progress)
    if fetched:
        reference = cached(path)
    tasks = known_tasks if config.tasks else None
    if reference is not None:
        progress(
            f"{name}: reference {reference.path} {'fetched' if fetched else 'made already'}, baseline not loaded for it"
        )
    if reference is None or (config.tasks and tasks is None):
        progress(f"loading baseline {name}")
        session = base.runtime.load_as(base.artifact, base.quality)
        try:
            if config.tasks and tasks is None:
                progress(f"{name}: lm-eval tasks {', '.join(config.tasks)}")
                tasks = _tasks(session, base.artifact, config, device)
            if reference is None:
                reference = make_reference(
                    session,
                    base.artifact,
                    load,
                    base.stream,
                    config.ctx,
                    on_window=lambda i, n: progress(f"{name}: reference window {i}/{n}"),
                )
                progress(f"{name}: reference written to {reference.path}; baseline unloaded")
        finally:
            session.close()
    if shelf is not None and not fetched:
        _publish(shelf, reference.path, progress)
    return reference, tasks


def _fetch(shelf: Shelf, path: Path, progress: Progress) -> bool:
    try:
        return shelf.fetch(path.name, path)
    except BenchError as exc:  # a shelf that cannot be reached only costs this machine a baseline load
        progress(f"{exc}; making the reference here")
        return False


def _publish(shelf: Shelf, path: Path, progress: Progress) -> None:
    try:
        if shelf.publish(path):
            progress(f"reference {path.name} published to {shelf.where}")
    except BenchError as exc:
        progress(f"{exc}; other machines will make their own")


def _measure(
    subject: Subject,
    plan: Prepared,
    config: BenchConfig,
    run_id: str,
    reference: Reference | None,
    base_tasks,
    progress: Progress,
) -> Result:
    artifact, name = subject.artifact, subject.artifact.path.name
    quality = description = task_results = None
    if config.quality:
        progress(f"{name}: loading for quality")
        session = subject.runtime.load_as(artifact, subject.quality)
        description = session.describe()
        total, done = len(windows(subject.stream.ids, config.ctx)), itertools.count(1)
        base = plan.baseline.artifact if plan.baseline else None
        try:
            quality = score(
                session,
                subject.stream.ids,
                config.ctx,
                baseline=reference,
                baseline_digest=reference.header.baseline_digest if reference else "",
                baseline_label=reference.header.baseline_label if reference else "",
                on_window=lambda: progress(f"{name}: perplexity window {next(done)}/{total}"),
            )
            if config.tasks:
                task_results = _subject_tasks(session, artifact, base, base_tasks, config, plan.device, progress)
        finally:
            session.close()
    speed: list[SpeedPoint] = []
    memory = roof = None
    if config.speed:
        answer = measure_in_worker(
            _worker_request(subject, config),
            f"speed/memory measurement of {artifact.path}",
            lambda msg: progress(f"{name}: speed, {msg}"),
        )
        description = RuntimeDescription.model_validate(answer["runtime"])
        speed = [SpeedPoint.model_validate(p) for p in answer["speed"]]
        memory = records.memory_metrics(answer["memory"], plan.device, config.tensor_parallel)
        roof = records.roofline_of(answer.get("bytes_per_token"), speed, plan.device, device_name(plan.device))
    return records.in_process_result(
        run_id,
        artifact,
        description,
        plan.rig,
        config,
        subject.stream,
        quality=quality,
        speed=speed,
        memory=memory,
        roof=roof,
        tasks=task_results,
    )


def _worker_request(subject: Subject, config: BenchConfig) -> dict:
    ids = subject.stream.ids
    needed = max(config.batch_sizes) * config.prompt_tokens
    return {
        "artifact": str(subject.artifact.path),
        "runtime": subject.runtime.name,
        "load": asdict(subject.speed),
        "profile": config.profile if config.profile is not None else subject.speed.device.startswith("cuda"),
        "ids": np.resize(ids, max(needed, 1)).tolist() if len(ids) < needed else ids[:needed].tolist(),
        "batch_sizes": config.batch_sizes,
        "prompt_tokens": config.prompt_tokens,
        "new_tokens": config.new_tokens,
        "warmup": config.warmup,
        "repeats": config.repeats,
    }


def _tasks(session, artifact: Artifact, config: BenchConfig, device: str):
    from transformers import AutoTokenizer

    from quantlab.bench.tasks import run_tasks

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(artifact))
    return run_tasks(
        session.hf_model(),
        tokenizer,
        config.tasks,
        task_path=config.task_path,
        limit=config.task_limit,
        num_fewshot=config.num_fewshot,
        batch_size=config.task_batch_size,
        device=device,
    )


def _subject_tasks(session, artifact: Artifact, base: Artifact | None, base_tasks, config, device, progress):
    if base is not None and base.digest == artifact.digest and base_tasks is not None:
        scores = base_tasks  # the baseline itself: the same model under the same config, scored once
    else:
        progress(f"{artifact.path.name}: lm-eval tasks {', '.join(config.tasks)}")
        scores = _tasks(session, artifact, config, device)
    return _task_results(scores, base_tasks, base, config)


def _task_results(scores, base_scores, base: Artifact | None, config: BenchConfig):
    from quantlab.bench.tasks import harness_version, with_recovery
    from quantlab.results import TaskResults

    if base_scores is not None:
        scores = with_recovery(scores, base_scores)
    return TaskResults(
        harness=harness_version(),
        tasks=config.tasks,
        task_path=config.task_path,
        limit=config.task_limit,
        num_fewshot=config.num_fewshot,
        batch_size=config.task_batch_size,
        baseline_digest=base.digest if base else None,
        scores=scores,
    )


def reference(
    baseline: str | Path, *, config: BenchConfig | None = None, progress: Progress = lambda _: None
) -> Reference:
    """The reference file of `baseline` (an artifact) for `config`'s stream, ctx and load settings: found in the
    quantlab cache, or made now, with the same checks and the same code as a bench's."""
    config = (config or BenchConfig()).model_copy(update={"quality": True, "speed": False, "tasks": None})
    plan = prepare([baseline], baseline, config)
    made, _ = _baseline(plan.baseline, config, None, plan.device, progress)
    return made
