"""The dry-run: what a recipe would make and run, and whether each cell fits each rig's memory, with no weights.

Per model, the architecture comes from the model's config (or the recipe's `config:` file when the model
cannot be reached here); per cell, its nominal bits per weight and the memory-fit verdict on every rig; and,
where the bench measures quality, what that measurement holds on every rig (`memfit.quality_footprint`). The
tables are built here, next to the arithmetic, and only printed by the CLI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from quantlab.errors import QuantlabError
from quantlab.sweep.recipe import Cell, ModelEntry, Recipe, RecipeError, cells, relative_to_recipe, rigs_file_of

if TYPE_CHECKING:
    from quantlab.bench.config import BenchConfig
    from quantlab.memfit import Architecture, QualityFootprint, QualityRole


@dataclass(frozen=True)
class PlanRow:
    cell: Cell
    bits: float
    bits_note: str
    footprints: list  # memfit.Footprint per rig, in the recipe's rig order
    unrunnable: list  # per rig: why the format cannot run there (its backend's device need), or None


@dataclass(frozen=True)
class QualityRow:
    """A cell's quality measurement, or (`gpus` set) its baseline loaded alone to make the reference of the cells
    spanning that many GPUs: the bench loads the baseline over the GPUs of the span it scores."""

    cell: Cell
    runtime: str
    footprints: list[QualityFootprint]  # per rig, in the recipe's rig order
    unrunnable: list  # per rig: why the format cannot run there, or None
    gpus: int | None = None


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


def quality_plan(
    recipe: Recipe, path: Path, arch: Architecture, rows: list[PlanRow], config: BenchConfig
) -> list[QualityRow]:
    """One model's quality measurement per rig: a row per cell the bench scores (by the runtime that would measure
    it), and with a baseline a row for the reference they are all scored against, made once by the baseline's own
    bench on its own GPUs before any cell loads. Empty when the bench measures no quality."""
    from quantlab import memfit
    from quantlab.methods import backend_of
    from quantlab.rigs import load_rigs
    from quantlab.runtimes import runtime_for

    if not config.quality:
        return []
    known = load_rigs(rigs_file_of(recipe, path))
    rigs = [known[r.name] for r in recipe.rig_entries()]
    baseline = next((row for row in rows if row.cell.is_baseline), None)

    def row(plan_row: PlanRow, role: QualityRole, gpus: int) -> QualityRow | None:
        cell = plan_row.cell
        backend = backend_of(cell.spec)
        runtime = runtime_for(backend.loads_in, config.runtime)
        if runtime is None:
            return None
        bits = backend.weight_bits(cell.spec)
        dtype = next((d for d in (config.dtype, cell.spec.dtype, arch.dtype) if d and d != "auto"), "fp32")
        on = [
            memfit.quality_footprint(
                arch,
                runtime=runtime.name,
                role=role,
                ctx=config.ctx,
                compute_dtype=dtype,
                weight_bits=bits.linear,
                other_bits=bits.other,
                rig=rig,
                utilization=recipe.memory_fit.utilization,
                gpus=gpus,
            )
            for rig in rigs
        ]
        return QualityRow(cell, runtime.name, on, plan_row.unrunnable, gpus if role == "reference" else None)

    made = [row(baseline, "reference", baseline.cell.tensor_parallel)] if baseline else []
    role = "scored" if baseline else "alone"
    scored = [row(r, role, r.cell.tensor_parallel) for r in rows if not r.cell.is_baseline]
    return [r for r in made + scored if r is not None]


def plan_tables(recipe: Recipe, path: str | Path, overrides: dict | None = None, *, more: list[str] = ()) -> list:
    """The dry-run as rich renderables: per model a memory-fit table, the bits notes and (where quality is
    measured) the quality measurement's table; then what would run (with `more` lines, e.g. what each cell would
    reserve on a Ray cluster)."""
    models = memory_plan(recipe, path)
    rigs = recipe.rig_entries()
    fit = recipe.memory_fit
    config = recipe.bench_config(overrides)
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
        out += _quality_table(recipe, model, arch, quality_plan(recipe, Path(path), arch, rows, config), config)
    would = _would_run(recipe, len(models), len(models[0][2]) if models else 0, overrides)
    would += more
    return [*out, "would run:\n" + "\n".join(f"  - {w}" for w in would)]


def _quality_table(
    recipe: Recipe, model: ModelEntry, arch: Architecture, rows: list[QualityRow], config: BenchConfig
) -> list:
    """A table of its own: it answers another question than serving's (the bench's ctx, batch 1, the logits, the
    host's rows), and beside the serving columns it would double the rig columns past a readable width."""

    if not rows:
        return []
    windows = config.max_tokens // config.ctx
    scored = any(r.gpus for r in rows)  # against a baseline's reference
    measured = "ppl/KLD" if scored else "ppl (no baseline)"
    table = Table(
        title=f"{recipe.name}: {model.id}, quality measurement: {measured} over {windows} windows of ctx "
        f"{config.ctx}, batch 1" + (", no baseline beside the cell" if scored else ""),
        caption="device = weights + KV cache of one window + its logits; host = the window's log-probability "
        "rows; usable as above",
    )
    rigs = [r.name for r in recipe.rig_entries()]
    for column in ("cell", "runtime", "device GB (weights + KV + logits)", "host GB", *rigs):
        table.add_column(column)
    for row in rows:
        f = row.footprints[0]
        m = f.memory
        device = f"{(m.needed_bytes + f.logits_bytes) / 1e9:.1f}"
        parts = f"{m.weight_bytes / 1e9:.1f} + {m.kv_bytes / 1e9:.2f} + {f.logits_bytes / 1e9:.2f}"
        label = row.cell.name
        if row.gpus:
            label += " → reference" + (f", {row.gpus} GPUs" if row.gpus > 1 else "")
        table.add_row(
            label,
            row.runtime,
            f"{device} = {parts}",
            f"{f.host_bytes / 1e9:.1f}",
            *(
                f"[red]cannot run[/red] ({why})" if why else _verdict(q.memory, q.needed_bytes, q.fits)
                for q, why in zip(row.footprints, row.unrunnable, strict=True)
            ),
        )
    notes = _quality_notes(arch, config, windows, scored)
    return [table, "quality measurement:\n" + "\n".join(f"  {n}" for n in notes)]


def _quality_notes(arch: Architecture, config: BenchConfig, windows: int, scored: bool) -> list[str]:
    """What the quality table's columns hold, with the reference file's size when cells are scored against one."""
    from quantlab import memfit

    rows_gb = memfit.window_rows_bytes(arch.vocab_size, config.ctx) / 1e9
    size = memfit.reference_bytes(arch.vocab_size, config.ctx, windows) / 1e9
    made = [
        f"the baseline is read from a reference file, window by window, never loaded beside a cell: {size:.1f} GB on "
        f"disk ({windows} windows × {config.ctx - 1} × {arch.vocab_size} × 4 B, + the ids and a header of a few kB; "
        "windows: max_tokens // ctx, fewer on a shorter text)",
        "the reference is made once, by the baseline's own bench loading it alone on its own GPUs, before any cell "
        "of the model loads; every cell, on any GPU span, reads it (its file is named by the baseline's runtime, "
        "device kind, dtype and KV cache, not its GPU count: an in-process model spans GPUs by a layer split)",
    ]
    making = (
        f", {memfit.HOST_BLOCKS['reference']} for the baseline making its reference (one window written while the "
        "next is computed)"
        if scored
        else ""
    )
    return [
        *(made if scored else []),
        f"host: {memfit.HOST_BLOCKS['scored']} window of float32 rows ({rows_gb:.2f} GB) per cell at the peak (its "
        "logits turned into log-probs in place"
        + ("; the reference's rows read a few at a time" if scored else "")
        + f"){making}; llama.cpp adds its own logits buffers; on a rig without GPUs device and host are one memory, "
        "counted together",
        "logits: transformers, every position in the compute dtype plus its float32 copy; llama.cpp, one 512-token "
        "batch in float32. KV: transformers scores with use_cache=False, so there it is room for the forward",
    ]


def _verdict(f, needed: int | None = None, fits: bool | None = None) -> str:
    """`f`: a memfit Footprint, its figure replaced by `needed` and `fits` where given (a quality measurement's)."""
    needed = f.needed_bytes if needed is None else needed
    fits = f.fits if fits is None else fits

    if f.short_of_gpus():
        return f"[red]does NOT fit[/red] (spans {f.gpus} GPUs, {f.rig} has {f.rig_gpus})"
    numbers = f"({needed / 1e9:.1f} / {f.capacity_bytes / 1e9:.1f} GB)"
    return f"fits {numbers}" if fits else f"[red]does NOT fit[/red] {numbers}"


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
