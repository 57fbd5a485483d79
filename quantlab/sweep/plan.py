"""The dry-run: what a recipe would make and run, and whether each cell fits each rig's memory, with no weights.

Per model, the architecture comes from the model's config (or the recipe's `config:` file when the model
cannot be reached here); per cell, its nominal bits per weight and the memory-fit verdict on every rig. The
tables are built here, next to the arithmetic, and only printed by the CLI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from quantlab.errors import QuantlabError
from quantlab.sweep.recipe import Cell, ModelEntry, Recipe, RecipeError, cells, relative_to_recipe, rigs_file_of


@dataclass(frozen=True)
class PlanRow:
    cell: Cell
    bits: float
    bits_note: str
    footprints: list  # memfit.Footprint per rig, in the recipe's rig order
    unrunnable: list  # per rig: why the format cannot run there (its backend's device need), or None


def _architecture(model: ModelEntry, path: Path):
    from quantlab import memfit

    if model.config is not None:
        from transformers import AutoConfig

        file = Path(relative_to_recipe(path, model.config))
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            config = AutoConfig.for_model(data.pop("model_type"), **data)
        except (OSError, ValueError, KeyError) as exc:
            raise RecipeError(f"recipe {path}: models ({model.id}): config {file}: {exc}") from exc
        return memfit.architecture(config)
    from quantlab.models import resolve_model

    try:
        return memfit.architecture_of(resolve_model(model.id, log=lambda _: None).path)
    except QuantlabError as exc:
        raise RecipeError(
            f"recipe {path}: models ({model.id}): {exc}; give `config:` (a config.json) to plan "
            "without reaching the model"
        ) from exc


def memory_plan(recipe: Recipe, path: str | Path) -> list[tuple[ModelEntry, object, list[PlanRow]]]:
    """Per model: its architecture and, per cell, the nominal bits and the memory-fit verdict on every rig."""
    from quantlab import memfit
    from quantlab.methods import backend_of
    from quantlab.rigs import load_rigs

    path = Path(path)
    known = load_rigs(rigs_file_of(recipe, path))
    rigs = [known[r.name] for r in recipe.rig_entries()]
    plan = []
    all_cells = cells(recipe, path)
    for model in recipe.models:
        arch = _architecture(model, path)
        rows = []
        for cell in (c for c in all_cells if c.model is model):
            backend = backend_of(cell.spec)
            bits, need = backend.weight_bits(cell.spec), backend.device_need(cell.spec)
            rows.append(
                PlanRow(
                    cell=cell,
                    bits=bits.linear,
                    bits_note=bits.counted,
                    footprints=[
                        memfit.footprint(
                            arch,
                            weight_bits=bits.linear,
                            other_bits=bits.other,
                            kv_dtype=recipe.memory_fit.kv_dtype,
                            batch=recipe.memory_fit.batch,
                            ctx=recipe.memory_fit.ctx,
                            rig=rig,
                            utilization=recipe.memory_fit.utilization,
                            gpus=cell.tensor_parallel,
                        )
                        for rig in rigs
                    ],
                    unrunnable=[need.rig_problem(rig.device) for rig in rigs],
                )
            )
        plan.append((model, arch, rows))
    return plan


def plan_tables(recipe: Recipe, path: str | Path, overrides: dict | None = None, *, more: list[str] = ()) -> list:
    """The dry-run as rich renderables: one memory-fit table per model, the bits notes, and what would run (with
    `more` lines, e.g. what each cell would reserve on a Ray cluster)."""
    models = memory_plan(recipe, path)
    rigs = recipe.rig_entries()
    fit = recipe.memory_fit
    out: list = []
    for model, arch, rows in models:
        table = Table(
            title=f"{recipe.name}: {model.id} ({arch.n_params / 1e9:.2f}B parameters), memory fit at "
            f"batch {fit.batch} × ctx {fit.ctx}, KV {fit.kv_dtype}",
            caption=f"needed = weights (nominal bits per weight) + KV cache; usable = the memory of the GPUs a "
            f"cell spans (tensor_parallel, default 1; the host's on the cpu rig) × {fit.utilization:.0%}",
        )
        for column in ("cell", "method", "bits/weight", "weights GB", *(r.name for r in rigs)):
            table.add_column(column)
        for row in rows:
            spec = row.cell.spec
            table.add_row(
                row.cell.name + (" (baseline)" if row.cell.is_baseline else ""),
                f"{spec.method}/{spec.backend} {spec.label()}"
                + (f", tensor_parallel {row.cell.tensor_parallel}" if row.cell.tensor_parallel > 1 else ""),
                f"{row.bits:.3g}",
                f"{row.footprints[0].weight_bytes / 1e9:.1f}",
                *(
                    f"[red]cannot run[/red] ({why})" if why else _verdict(f)
                    for f, why in zip(row.footprints, row.unrunnable, strict=True)
                ),
            )
        notes = sorted({f"{r.cell.spec.method} {r.cell.spec.label()}: {r.bits_note}" for r in rows})
        out += [table, "bits per weight:\n" + "\n".join(f"  {n}" for n in notes)]
    would = _would_run(recipe, len(models), len(models[0][2]) if models else 0, overrides)
    would += more
    return [*out, "would run:\n" + "\n".join(f"  - {w}" for w in would)]


def _verdict(f) -> str:
    if f.short_of_gpus():
        return f"[red]does NOT fit[/red] (spans {f.gpus} GPUs, {f.rig} has {f.rig_gpus})"
    numbers = f"({f.needed_bytes / 1e9:.1f} / {f.capacity_bytes / 1e9:.1f} GB)"
    return f"fits {numbers}" if f.fits else f"[red]does NOT fit[/red] {numbers}"


def _would_run(recipe: Recipe, n_models: int, n_cells: int, overrides: dict | None) -> list[str]:
    b = recipe.bench_config(overrides)
    would = [
        f"quantize {n_cells} cell(s) per model ({n_models} model(s)), each cached by a hash of model + spec "
        "(calibration included)"
    ]
    if b.quality or b.speed:
        would.append(
            f"bench in-process: {b.dataset}, ctx {b.ctx}, {b.max_tokens} tokens, batch sizes {b.batch_sizes}, "
            f"prompts {b.prompt_tokens} + {b.new_tokens} new tokens"
            + (f", tasks {', '.join(b.tasks)}" if b.tasks else "")
        )
    names = ([recipe.baseline.name] if recipe.baseline else []) + [m.name for m in recipe.methods]
    served = [name for name in names if recipe.served(name)]
    if served:
        would.append(f"bench served: concurrency {b.concurrency}, cells {', '.join(served)}")
    entries = ([recipe.baseline] if recipe.baseline else []) + list(recipe.methods)
    spanning = [f"{e.name} ({e.tensor_parallel} GPUs)" for e in entries if e.tensor_parallel > 1]
    if spanning:
        would.append(
            f"across GPUs: {', '.join(spanning)}, each measured on a rig of exactly that many GPUs (vLLM "
            "--tensor-parallel-size; transformers: a device_map layer split)"
        )
    prices = [r.name + (f" at ${r.price_per_hour}/h" if r.price_per_hour else "") for r in recipe.rig_entries()]
    would.append("on rig(s) " + ", ".join(prices))
    return would
