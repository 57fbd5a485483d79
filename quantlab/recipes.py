"""Recipes: a plan as a file (model(s) × methods × bench settings × rigs), validated before any work.

Everything read from YAML is a pydantic model with `extra="forbid"`, so a typo fails at once and names the
file and the key. Validation goes past the schema: every method is resolved through its registered backend
(`normalize`: unknown methods, impossible options and wrong scheme names fail here), every rig must exist, and
cell names must be unique — all before a model is touched.

A cell is one (model, method) pair. Its artifact lives at a path derived from a hash of the model reference and
the normalized spec, so editing a recipe never silently reuses an artifact made for a different request.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from quantlab.errors import QuantlabError
from quantlab.spec import Calibration, MethodSpec
from quantlab.yamlfile import load_yaml_model


class RecipeError(QuantlabError):
    """A recipe that cannot be run as written: names the file, the key and the reason."""


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="hub id, local HF directory, or `default`")
    config: str | None = Field(
        None,
        description="a config.json (relative to the recipe) used to plan when `id` "
        "cannot be read here (a hub id offline)",
    )


class MethodEntry(MethodSpec):
    """A MethodSpec with a cell name (the row label and the artifact's folder name)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

    def spec(self) -> MethodSpec:
        return MethodSpec.model_validate(self.model_dump(exclude={"name"}, exclude_none=True))


class BenchSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = "default"
    ctx: int = Field(512, ge=2)
    max_tokens: int = Field(4096, ge=2)
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8], min_length=1)
    prompt_tokens: int = Field(128, ge=1)
    new_tokens: int = Field(32, ge=2)
    warmup: int = Field(1, ge=0)
    repeats: int = Field(3, ge=1)
    quality: bool = True
    speed: bool = True
    concurrency: list[int] | None = Field(None, description="served load levels (bench --load); none: skipped")
    load_cells: list[str] | None = Field(
        None,
        description="the cells served under load (names); none: every cell. A sweep costs minutes per cell on a CPU",
    )
    requests: int | None = Field(None, ge=1)
    tasks: list[str] | None = None
    task_limit: int | None = Field(None, ge=1)


class FitSection(BaseModel):
    """The question the dry-run answers per rig: weights + KV cache at this batch and context."""

    model_config = ConfigDict(extra="forbid")

    batch: int = Field(1, ge=1)
    ctx: int = Field(4096, ge=1)
    kv_dtype: str = "bf16"
    utilization: float = Field(0.9, gt=0, le=1)


class RigEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    price_per_hour: float | None = Field(None, gt=0)


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    models: list[ModelEntry] = Field(min_length=1)
    baseline: MethodEntry | None = Field(None, description="the reference every cell is scored against")
    methods: list[MethodEntry] = Field(min_length=1)
    calibration: Calibration | None = Field(None, description="for every method that calibrates and names none")
    bench: BenchSection = Field(default_factory=BenchSection)
    fit: FitSection = Field(default_factory=FitSection)
    rigs: list[str | RigEntry] = Field(default_factory=lambda: ["cpu"], min_length=1)
    rigs_file: str | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> Recipe:
        names = [m.name for m in self.methods] + ([self.baseline.name] if self.baseline else [])
        seen = {n for n in names if names.count(n) > 1}
        if seen:
            raise ValueError(f"method names must be unique; repeated: {', '.join(sorted(seen))}")
        unknown = [n for n in self.bench.load_cells or [] if n not in names]
        if unknown:
            raise ValueError(f"bench.load_cells names no cell: {', '.join(unknown)}; cells: {', '.join(names)}")
        if self.bench.load_cells is not None and not self.bench.concurrency:
            raise ValueError("bench.load_cells is set but bench.concurrency is not: no load sweep would run")
        return self

    def served(self, name: str) -> bool:
        """Whether the cell gets a load sweep."""
        return bool(self.bench.concurrency) and (self.bench.load_cells is None or name in self.bench.load_cells)

    def rig_entries(self) -> list[RigEntry]:
        return [RigEntry(name=r) if isinstance(r, str) else r for r in self.rigs]


@dataclass(frozen=True)
class Cell:
    model: ModelEntry
    name: str
    spec: MethodSpec  # normalized by its backend: what would be made
    is_baseline: bool

    def key(self) -> str:
        payload = json.dumps(
            {"model": self.model.id, "spec": self.spec.model_dump(mode="json", exclude_none=True)}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def artifact_dir(self, root: Path) -> Path:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "--", self.model.id)
        return root / slug / f"{self.name}-{self.key()}"


def load_recipe(path: str | Path) -> Recipe:
    """Parse and check a recipe; every failure is one line naming the file, the key and the reason."""
    path = Path(path)
    recipe = load_yaml_model(path, Recipe, RecipeError, "recipe")
    cells(recipe, path)  # methods resolve through their backends
    _check_rigs(recipe, path)
    return recipe


def _check_rigs(recipe: Recipe, path: Path) -> None:
    from quantlab.errors import RigError
    from quantlab.rigs import load_rigs

    try:
        known = load_rigs(rigs_file_of(recipe, path))
    except RigError as exc:
        raise RecipeError(f"recipe {path}: rigs_file: {exc}") from exc
    for i, rig in enumerate(recipe.rig_entries()):
        if rig.name not in known:
            raise RecipeError(f"recipe {path}: rigs.{i}: unknown rig {rig.name!r}; known: {', '.join(known)}")


def rigs_file_of(recipe: Recipe, path: Path) -> str | None:
    """The recipe's `rigs_file`, resolved against the recipe's folder."""
    return _relative(path, recipe.rigs_file) if recipe.rigs_file else None


def _relative(recipe_path: Path, value: str) -> str:
    candidate = Path(value).expanduser()
    return str(candidate if candidate.is_absolute() else recipe_path.parent / candidate)


def cells(recipe: Recipe, path: Path) -> list[Cell]:
    """Every (model, method) cell with its spec normalized by the method's backend; the baseline first."""
    from quantlab.methods import get_backend

    entries = [("baseline", recipe.baseline, True)] if recipe.baseline else []
    entries += [(f"methods.{i}", m, False) for i, m in enumerate(recipe.methods)]
    normalized = []
    for where, entry, is_baseline in entries:
        spec = entry.spec()
        try:
            backend = get_backend(spec.method, spec.backend)
            resolved = backend.normalize(spec)
            if recipe.calibration is not None and resolved.calibration is not None and spec.calibration is None:
                resolved = backend.normalize(spec.model_copy(update={"calibration": recipe.calibration}))
        except QuantlabError as exc:
            raise RecipeError(f"recipe {path}: {where} ({entry.name}): {exc}") from exc
        normalized.append((entry.name, resolved, is_baseline))
    return [
        Cell(model=model, name=name, spec=spec, is_baseline=is_baseline)
        for model in recipe.models
        for name, spec, is_baseline in normalized
    ]


@dataclass(frozen=True)
class FitRow:
    cell: Cell
    bits: float
    bits_note: str
    footprints: list  # memfit.Footprint per rig, in the recipe's rig order


def _architecture(model: ModelEntry, path: Path):
    from quantlab import memfit

    if model.config is not None:
        from transformers import AutoConfig

        file = Path(_relative(path, model.config))
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


def fit_plan(recipe: Recipe, path: str | Path) -> list[tuple[ModelEntry, object, list[FitRow]]]:
    """Per model: its architecture and, per cell, the nominal bits and the memory-fit verdict on every rig."""
    from quantlab import memfit
    from quantlab.rigs import load_rigs

    path = Path(path)
    known = load_rigs(rigs_file_of(recipe, path))
    rigs = [known[r.name] for r in recipe.rig_entries()]
    if recipe.fit.kv_dtype not in memfit.KV_DTYPE_BYTES:
        raise RecipeError(
            f"recipe {path}: fit.kv_dtype: one of {', '.join(memfit.KV_DTYPE_BYTES)}, not {recipe.fit.kv_dtype!r}"
        )
    plan = []
    all_cells = cells(recipe, path)
    for model in recipe.models:
        arch = _architecture(model, path)
        rows = []
        for cell in (c for c in all_cells if c.model is model):
            bits, note = memfit.nominal_weight_bits(cell.spec)
            # GGUF quantizes the embeddings and the output head too; other formats keep them in the dtype
            other = bits if cell.spec.method == "gguf" else 32.0 if cell.spec.dtype == "fp32" else 16.0
            rows.append(
                FitRow(
                    cell=cell,
                    bits=bits,
                    bits_note=note,
                    footprints=[
                        memfit.footprint(
                            arch,
                            weight_bits=bits,
                            other_bits=other,
                            kv_dtype=recipe.fit.kv_dtype,
                            batch=recipe.fit.batch,
                            ctx=recipe.fit.ctx,
                            rig=rig,
                            utilization=recipe.fit.utilization,
                        )
                        for rig in rigs
                    ],
                )
            )
        plan.append((model, arch, rows))
    return plan
