"""Task accuracy through lm-eval, and recovery against the baseline.

The model lm-eval scores is the one quantlab's transformers runtime already loaded (`HFLM(pretrained=model)`):
the same weights, dtype and kernel path as the perplexity run, loaded once. Task names go to lm-eval's
TaskManager; `--task-path` adds a folder of task YAMLs (a local file is how tasks run offline, e.g.
`dataset_path: json` with `dataset_kwargs.data_files`). quantlab ships one such task, `quantlab_wikitext_nextword`,
built from the embedded WikiText-2 test split, so CI and offline hosts have a real task to run; the standard
tasks (hellaswag, arc_easy, ...) need their hub datasets.

Recovery = score(quantized) / score(baseline) for metrics where higher is better, baseline / quantized where
lower is better (perplexities): 100 % means no loss either way.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from quantlab.errors import BenchError
from quantlab.results.metrics import TaskScore
from quantlab.util.files import write_atomic

BUILTIN_TASK = "quantlab_wikitext_nextword"
TASK_ITEMS = 400
TASK_VERSION = 2


def builtin_task_dir() -> Path:
    """`quantlab_wikitext_nextword`: LAMBADA's protocol on 400 positions of WikiText-2 test, written once into
    the cache. Context = the first 10-30 words (seeded) of a line of ≥ 40 words; target = the next word
    (alphabetic, ≥ 3 letters). acc = the word is the model's greedy continuation, all of its tokens;
    perplexity = over the word's tokens. Multiple choice against random words was tried first: a 135M model
    scored 94 % and 4-bit RTN kept 99.7 % of it, too easy to tell formats apart."""
    from quantlab.corpus import load_text
    from quantlab.paths import cache_dir

    folder = cache_dir() / "tasks" / f"{BUILTIN_TASK}-v{TASK_VERSION}"
    yaml_path = folder / f"{BUILTIN_TASK}.yaml"
    if yaml_path.is_file():
        return folder
    text, source = load_text("embedded", "test")
    rng = random.Random(1234)
    lines = [ln.strip() for ln in text.splitlines() if len(ln.split()) >= 40 and not ln.strip().startswith("=")]
    items = []
    for line in rng.sample(lines, len(lines)):
        words = line.split()
        cut = rng.randint(10, 30)
        if re.fullmatch(r"[A-Za-z]{3,}", words[cut]):
            items.append({"context": " ".join(words[:cut]), "target": words[cut]})
        if len(items) == TASK_ITEMS:
            break
    data = folder / "nextword.jsonl"
    write_atomic(data, "".join(json.dumps(item) + "\n" for item in items))
    # the YAML last: its presence is what says the task is complete
    write_atomic(
        yaml_path,
        f"# Built by quantlab from {source.description} (sha256 {source.text_sha256[:16]}); see "
        "quantlab/bench/tasks.py.\n"
        f"task: {BUILTIN_TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
        "test_split: test\n"
        "output_type: loglikelihood\n"
        "doc_to_text: context\n"
        # lm-eval puts no delimiter between context and a loglikelihood target (its LAMBADA YAML adds the
        # space in the target the same way); without it "as" + "part" tokenizes as one word.
        "doc_to_target: \"{{' ' + target}}\"\n"
        "metric_list:\n  - metric: perplexity\n    aggregation: perplexity\n    higher_is_better: false\n"
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n",
    )
    return folder


def harness_version() -> str:
    import importlib.metadata

    try:
        return f"lm-eval {importlib.metadata.version('lm_eval')}"
    except importlib.metadata.PackageNotFoundError:
        raise BenchError("--tasks needs lm-eval (pip install 'quantlab[tasks]')") from None


def _manager(task_path: str | None):
    from lm_eval.tasks import TaskManager

    paths = [str(builtin_task_dir())]
    if task_path is not None:
        if not Path(task_path).is_dir():
            raise BenchError(f"--task-path {task_path} is not a directory of lm-eval task YAMLs")
        paths.append(task_path)
    return TaskManager(include_path=paths)


def check_tasks(tasks: list[str], task_path: str | None) -> None:
    """Unknown task names fail before any model loads."""
    harness_version()
    manager = _manager(task_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise BenchError(
            f"unknown lm-eval task(s) {', '.join(unknown)}; local YAMLs go in a folder given with "
            f"--task-path (quantlab ships {BUILTIN_TASK})"
        )


def run_tasks(
    model,
    tokenizer,
    tasks: list[str],
    *,
    task_path: str | None,
    limit: int | None,
    num_fewshot: int | None,
    batch_size: int,
    device: str,
) -> list[TaskScore]:
    """Score a loaded transformers model; one TaskScore per task × metric (stderr kept where lm-eval gives it)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=_manager(task_path),
        log_samples=False,
        bootstrap_iters=1000,
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
        fewshot_random_seed=0,
    )
    scores = []
    for task in tasks:
        metrics = out["results"][task]
        better = out.get("higher_is_better", {}).get(task, {})
        n = out.get("n-samples", {}).get(task, {}).get("effective", 0)
        for key, value in metrics.items():
            name, _, _filter = key.partition(",")
            # only the task's metrics (lm-eval also reports bookkeeping such as sample_len here)
            if name not in better or not isinstance(value, int | float):
                continue
            stderr = metrics.get(f"{name}_stderr,{_filter}")
            scores.append(
                TaskScore(
                    task=task,
                    metric=name,
                    value=float(value),
                    stderr=float(stderr) if isinstance(stderr, int | float) else None,
                    higher_is_better=bool(better.get(name, True)),
                    n_samples=int(n),
                )
            )
    return scores


def with_recovery(scores: list[TaskScore], baseline: list[TaskScore]) -> list[TaskScore]:
    base = {(s.task, s.metric): s.value for s in baseline}
    out = []
    for s in scores:
        b = base.get((s.task, s.metric))
        recovery = None
        if b is not None and b > 0 and s.value > 0:
            recovery = 100 * (s.value / b if s.higher_is_better else b / s.value)
        out.append(s.model_copy(update={"baseline": b, "recovery_pct": recovery}))
    return out
