"""`bench --tasks`: lm-eval on the model the transformers runtime loaded, offline, with recovery."""

from __future__ import annotations

import json

import pytest

from quantlab.bench import BenchConfig, bench
from quantlab.bench.tasks import BUILTIN_TASK, builtin_task_dir, with_recovery
from quantlab.errors import BenchError
from quantlab.quantizer import quantize
from quantlab.results import TaskScore
from quantlab.spec import MethodSpec
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def tiny_pair(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    return (
        quantize(str(tiny_model), MethodSpec(method="none", dtype="fp32"), root / "base"),
        quantize(str(tiny_model), MethodSpec(method="rtn", bits=4, group_size=64), root / "w4"),
    )


def test_the_shipped_task_is_well_formed_next_word_prediction():
    from quantlab.corpus import load_text

    folder = builtin_task_dir()
    items = [json.loads(line) for line in (folder / "nextword.jsonl").read_text().splitlines()]
    assert len(items) == 400 and len({item["context"] for item in items}) == 400
    text, _ = load_text("embedded", "test")
    for item in items:
        assert 10 <= len(item["context"].split()) <= 30 and item["target"].isalpha()
        assert f"{item['context']} {item['target']}" in text  # a real continuation of the corpus
    assert builtin_task_dir() == folder  # built once


def test_recovery_follows_the_metric_direction():
    scores = [
        TaskScore(task="t", metric="acc", value=0.45, stderr=None, higher_is_better=True, n_samples=10),
        TaskScore(task="t", metric="ppl", value=20.0, stderr=None, higher_is_better=False, n_samples=10),
    ]
    base = [s.model_copy(update={"value": v}) for s, v in zip(scores, [0.5, 16.0], strict=True)]
    acc, ppl = with_recovery(scores, base)
    assert acc.recovery_pct == pytest.approx(90.0) and ppl.recovery_pct == pytest.approx(80.0)
    assert acc.baseline == 0.5


def test_bench_tasks_with_recovery_and_a_local_yaml(tiny_pair, tmp_path):
    base, w4 = tiny_pair
    own = tmp_path / "tasks"
    own.mkdir()
    docs = [{"q": f"The number after {i} is", "choices": [str(i + 1), str(i + 7)], "label": 0} for i in range(6)]
    (own / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (own / "counting.yaml").write_text(
        "task: tiny_counting\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(own / 'docs.jsonl'))}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: choices\n"
        "doc_to_target: label\nmetric_list:\n  - metric: acc\nmetadata:\n  version: 1.0\n"
    )
    options = BenchConfig(
        dataset="embedded",
        ctx=128,
        max_tokens=512,
        speed=False,
        tasks=[BUILTIN_TASK, "tiny_counting"],
        task_path=str(own),
        task_limit=24,
    )
    (result,) = bench([w4.path], baseline=base.path, config=options)
    scores = {(s.task, s.metric): s for s in result.tasks.scores}
    assert set(scores) == {("tiny_counting", "acc"), (BUILTIN_TASK, "acc"), (BUILTIN_TASK, "perplexity")}
    nextword = scores[(BUILTIN_TASK, "acc")]
    assert nextword.n_samples == 24 and 0 <= nextword.value <= 1 and nextword.stderr is not None
    assert not scores[(BUILTIN_TASK, "perplexity")].higher_is_better
    assert scores[("tiny_counting", "acc")].n_samples == 6
    for score in scores.values():
        assert score.baseline is not None
        if score.value > 0 and score.baseline > 0:
            ratio = score.value / score.baseline if score.higher_is_better else score.baseline / score.value
            assert score.recovery_pct == pytest.approx(100 * ratio)
    assert result.tasks.baseline_digest == base.digest and result.tasks.harness.startswith("lm-eval")

    from quantlab.report import markdown

    text = markdown([result])
    assert "Task accuracy (lm-eval) and recovery" in text and "Recovery = score / baseline" in text


def test_unknown_tasks_and_misplaced_options_fail_before_loading(tiny_pair):
    _, w4 = tiny_pair
    with pytest.raises(BenchError, match="unknown lm-eval task"):
        bench([w4.path], config=BenchConfig(tasks=["no_such_task_anywhere"], speed=False))
    proc = run_cli("bench", str(w4.path), "--load", "--tasks", BUILTIN_TASK)
    assert proc.returncode != 0 and "--tasks" in proc.stderr and "not --load" in proc.stderr
    proc = run_cli("bench", str(w4.path), "--tasks", BUILTIN_TASK, "--no-quality")
    assert proc.returncode == 1 and "--no-quality" in proc.stderr
