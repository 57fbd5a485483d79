"""A recipe as one plan of stages: every cell's artifact is obtained (reused or quantized), then benched in-process
against its model's baseline, then served under load, each stage with the stages it depends on.

Both executors (`sweep.serial`, `sweep.ray_executor`) run this same plan; what they differ in is only where and
how many at a time. The settings each stage measures with are fixed here, once, from the rig its cell is measured
as: so is the rule that lm-eval tasks are scored only where the cell's runtime and its baseline's can score them
(a runtime's declared capability, known from the backend's `loads_in` before any artifact exists).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from quantlab.bench.config import BenchConfig
from quantlab.methods import backend_of
from quantlab.sweep.recipe import Cell, Recipe

Kind = Literal["quantize", "bench", "load"]
StageKey = tuple[str, Kind]  # (cell key, kind)


@dataclass(frozen=True)
class Stage:
    cell: Cell
    kind: Kind
    needs: tuple[StageKey, ...] = ()  # must have succeeded first
    # must have ended first, whatever their outcome: the baseline's bench, whose task scores this bench reuses
    after: tuple[StageKey, ...] = ()
    config: BenchConfig | None = None  # what a bench or load measures with (its rig's); None: a quantize stage
    refused: str | None = None  # why it cannot run on any rig this run measures as (its GPU span's refusal)

    @property
    def key(self) -> StageKey:
        return (self.cell.key(), self.kind)

    def label(self) -> str:
        return f"{self.cell.name} {self.kind}"


@dataclass
class Plan:
    stages: list[Stage]  # in the order a serial run takes them: per model, quantize, then per span bench and load
    baselines: dict[str, Cell] = field(default_factory=dict)  # model id → its baseline cell

    def baseline_of(self, cell: Cell) -> Cell | None:
        return self.baselines.get(cell.model.id)


def scores_tasks(cell: Cell, config: BenchConfig) -> bool:
    """Whether lm-eval can score this cell's artifact: the runtime that will measure it can score a model."""
    from quantlab.runtimes import runtime_for

    runtime = runtime_for(backend_of(cell.spec).loads_in, config.runtime)
    return runtime is not None and runtime.capabilities.scores_tasks


def bench_config(cell: Cell, baseline: Cell | None, config: BenchConfig) -> BenchConfig:
    """The span's settings, less the lm-eval tasks where the cell or its baseline cannot score them (a GGUF cell
    is benched without them; with a GGUF baseline, every cell is, since recovery needs the baseline's scores)."""
    scorers = [cell] + ([baseline] if baseline is not None else [])
    if config.tasks and not all(scores_tasks(c, config) for c in scorers):
        return config.model_copy(update={"tasks": None})
    return config


def plan_stages(recipe: Recipe, cells: list[Cell], configs: dict[int, BenchConfig], refused: dict[int, str]) -> Plan:
    """`configs`: per GPU span (a cell's `tensor_parallel`) the settings of the rig it is measured as;
    `refused`: why the spans no rig here can measure are refused (their cells are made, never measured)."""
    plan = Plan(stages=[], baselines={c.model.id: c for c in cells if c.is_baseline})
    any_config = next(iter(configs.values()))
    in_process = any_config.quality or any_config.speed
    for model in recipe.models:
        mine = [c for c in cells if c.model is model]
        plan.stages += [Stage(cell, "quantize") for cell in mine]
        baseline = plan.baselines.get(model.id)
        for gpus in sorted({c.tensor_parallel for c in mine}):
            group = [c for c in mine if c.tensor_parallel == gpus]
            config, why = configs.get(gpus), refused.get(gpus)
            if in_process:
                plan.stages += [_bench(cell, baseline, config, why) for cell in group]
            plan.stages += [
                Stage(cell, "load", needs=((cell.key(), "quantize"),), config=config, refused=why)
                for cell in group
                if recipe.served(cell.name)
            ]
    return plan


def _bench(cell: Cell, baseline: Cell | None, config: BenchConfig | None, refused: str | None) -> Stage:
    needs = [(cell.key(), "quantize")]
    after: tuple[StageKey, ...] = ()
    if baseline is not None and baseline is not cell:
        needs.append((baseline.key(), "quantize"))
    if config is not None:
        config = bench_config(cell, baseline, config)
        # The baseline's own bench makes its reference and scores its tasks once, on its own GPUs; every other
        # bench of the model waits for it and reuses both, on any span: a one-GPU cell of a 70B model could not
        # load its 2-GPU baseline to make them (and on Ray, cells started together would each make the file).
        if (config.tasks or config.quality) and baseline is not None and baseline is not cell:
            after = ((baseline.key(), "bench"),)
    return Stage(cell, "bench", needs=tuple(needs), after=after, config=config, refused=refused)
