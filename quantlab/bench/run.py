"""`bench(artifacts, ...)`: measure artifacts the same way and append one Result per artifact.

Quality runs in this process, with the baseline (if any) loaded once and each artifact scored on exactly the
same windows. Speed and memory run in a fresh subprocess per artifact (see `worker`), so peak memory is the
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
from quantlab.bench.quality import ReusedBaseline, score, windows
from quantlab.bench.worker import measure_in_worker
from quantlab.errors import BenchError
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
) -> list[Result]:
    """`cells` (quantlab run): one CellRef per artifact, recorded in its Result. `baseline_tasks`: the baseline's
    lm-eval scores under this very config, measured already (a Ray run's baseline cell): not scored again."""
    config = config or BenchConfig()
    if not (config.quality or config.speed):
        raise BenchError("nothing to measure: --no-quality and --no-speed together")
    plan = prepare(artifacts, baseline, config)
    run_id = records.new_run_id()
    base_session = base_tasks = None
    if plan.baseline is not None:
        base = plan.baseline
        progress(f"loading baseline {base.artifact.path.name}")
        base_session = ReusedBaseline(base.runtime.load_as(base.artifact, base.quality))
        if config.tasks and baseline_tasks is not None:
            base_tasks = baseline_tasks
        elif config.tasks:
            progress(f"{base.artifact.path.name}: lm-eval tasks {', '.join(config.tasks)}")
            base_tasks = _tasks(base_session.inner, base.artifact, config, plan.device)
    out: list[Result] = []
    try:
        for i, subject in enumerate(plan.subjects):
            result = _measure(subject, plan, config, run_id, base_session, base_tasks, progress)
            if cells is not None:
                result.cell = cells[i]
            if results_path is not None:
                append_result(results_path, result)
            out.append(result)
    finally:
        if base_session is not None:
            base_session.close()
    return out


def _measure(
    subject: Subject, plan: Prepared, config: BenchConfig, run_id: str, base_session, base_tasks, progress: Progress
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
                baseline=base_session,
                baseline_digest=base.digest if base else "",
                baseline_label=records.artifact_ref(base).display_label(backend=False) if base else "",
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
