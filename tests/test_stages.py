"""A recipe's plan of stages and the orchestration both executors share, without running anything: the lm-eval
rule, what waits for what, resuming from records, and how a failure spreads."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantlab.bench.config import BenchConfig
from quantlab.sweep.orchestrate import Sweep
from quantlab.sweep.recipe import cells, load_recipe
from quantlab.sweep.stages import plan_stages

RECIPE = """
name: stages
models: [{id: default}]
baseline: {name: base, method: none, dtype: fp32}
methods:
  - {name: w4, method: rtn, bits: 4, group_size: 64}
  - {name: q8, method: gguf, scheme: Q8_0}
  - {name: w8-tp2, method: rtn, bits: 8, tensor_parallel: 2}
bench: {load_cells: [w4]}
"""


@pytest.fixture
def recipe(tmp_path) -> tuple:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    loaded = load_recipe(path)
    return loaded, cells(loaded, path)


def _by(plan) -> dict:
    return {(s.cell.name, s.kind): s for s in plan.stages}


def test_tasks_only_where_both_runtimes_score_them_and_benches_wait_for_the_baselines(recipe):
    """A bench waits for its baseline's bench (same span) when it can reuse what that made: tasks, reference."""
    loaded, made = recipe
    config = BenchConfig(tasks=["quantlab_wikitext_nextword"])
    stages = _by(plan_stages(loaded, made, {1: config, 2: config}, {}))
    base_bench = (made[0].key(), "bench")
    assert stages[("w4", "bench")].config.tasks and stages[("w4", "bench")].after == (base_bench,)
    # GGUF (llama.cpp) scores no tasks, but it reads the reference the baseline's bench makes
    assert stages[("q8", "bench")].config.tasks is None and stages[("q8", "bench")].after == (base_bench,)
    assert stages[("w8-tp2", "bench")].after == (base_bench,)  # another span: the same reference and task scores
    assert stages[("base", "bench")].needs == ((made[0].key(), "quantize"),)
    assert (made[0].key(), "quantize") in stages[("w4", "bench")].needs
    assert ("w4", "load") in stages and ("q8", "load") not in stages
    quality_only = _by(plan_stages(loaded, made, {1: BenchConfig(), 2: BenchConfig()}, {}))
    assert quality_only[("w4", "bench")].after == (base_bench,)  # the baseline's reference, made once
    speed = BenchConfig(quality=False)
    speed_only = _by(plan_stages(loaded, made, {1: speed, 2: speed}, {}))
    assert speed_only[("w4", "bench")].after == ()  # nothing to reuse


def test_a_gguf_baseline_takes_the_tasks_from_every_cell(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        RECIPE.replace("{name: base, method: none, dtype: fp32}", "{name: base, method: gguf, scheme: F16}")
    )
    loaded = load_recipe(path)
    config = BenchConfig(tasks=["quantlab_wikitext_nextword"])
    plan = plan_stages(loaded, cells(loaded, path), {1: config}, {2: "no rig"})
    assert all(s.config is None or s.config.tasks is None for s in plan.stages if s.kind == "bench")


def test_a_failed_baseline_fails_its_models_benches_not_the_loads_and_a_refused_span_is_recorded(recipe, tmp_path):
    loaded, made = recipe
    plan = plan_stages(loaded, made, {1: BenchConfig()}, {2: "rig h100 has 1 GPU(s)"})
    said: list[str] = []
    sweep = Sweep(loaded, plan, tmp_path / "r.jsonl", said.append)
    assert sweep.failed == {(made[3].key(), "bench"): "rig h100 has 1 GPU(s)"}
    assert [(s.cell.name, s.kind) for s in sweep.ready()] == [(c.name, "quantize") for c in made]
    stages = _by(plan)
    for name in ("w4", "q8", "w8-tp2"):
        sweep.obtained(stages[(name, "quantize")], Path("/nowhere") / name, name)
    ready = [(s.cell.name, s.kind) for s in sweep.ready()]
    assert ready == [("base", "quantize"), ("w4", "load")]  # every bench needs the baseline's artifact
    sweep.fail(stages[("base", "quantize")], "boom")
    failed = {(s.cell.name, s.kind) for s in plan.stages if s.key in sweep.failed}
    assert failed == {("base", "quantize"), ("base", "bench"), ("w4", "bench"), ("q8", "bench"), ("w8-tp2", "bench")}
    assert sweep.failed[(made[1].key(), "bench")] == "base quantize failed"
    assert [(s.cell.name, s.kind) for s in sweep.ready()] == [("w4", "load")]
    assert any("base quantize: failed: boom" in m for m in said)
    done = sweep.finish()
    assert done.failed[("default", "w4", "bench")] == "base quantize failed" and done.records == {}
