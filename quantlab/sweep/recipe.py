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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from quantlab.bench.config import CELL_FIELDS, RIG_FIELDS, BenchConfig, given
from quantlab.errors import QuantlabError, describe_validation_error
from quantlab.memfit import MemoryFitQuestion
from quantlab.spec import Calibration, MethodSpec
from quantlab.sweep.cluster import RaySettings
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
    tensor_parallel: int = Field(
        1,
        ge=1,
        le=64,
        description="GPUs one copy of the model spans: vLLM --tensor-parallel-size, transformers device_map over "
        "that many GPUs. The cell is measured on a rig of exactly that many GPUs.",
    )

    def spec(self) -> MethodSpec:
        return MethodSpec.model_validate(self.model_dump(exclude={"name", "tensor_parallel"}, exclude_none=True))


def _recipe_bench_fields() -> dict:
    """Every bench setting but the rig keys (a recipe names its rigs in `rigs`) and the cell keys (each method
    entry declares its own `tensor_parallel`), with the same type, bounds and help: the section is derived from
    the one bench configuration, never typed again. A recipe records only the keys it sets; the defaults are
    applied when it runs (`Recipe.bench_config`), so they live in one place."""
    skip = (*RIG_FIELDS, *CELL_FIELDS)
    return {name: (info.annotation, info) for name, info in BenchConfig.model_fields.items() if name not in skip}


RecipeBench = create_model(
    "RecipeBench",
    __config__=ConfigDict(extra="forbid"),
    __doc__="A recipe's `bench:` section: the bench settings it overrides, and the cells served under load.",
    load_cells=(
        list[str] | Literal["all"] | None,
        Field(
            None,
            description="the cells served under load (names, or `all`); none: no served sweep. A sweep "
            "costs minutes per cell on a CPU",
        ),
    ),
    **_recipe_bench_fields(),
)


class RigEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

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
    bench: RecipeBench = Field(default_factory=RecipeBench)
    memory_fit: MemoryFitQuestion = Field(default_factory=MemoryFitQuestion)
    rigs: list[str | RigEntry] = Field(default_factory=lambda: ["cpu"], min_length=1)
    rigs_file: str | None = None
    ray: RaySettings | None = Field(None, description="run the cells on a Ray cluster (`quantlab run --ray`)")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data):
        if isinstance(data, dict) and "fit" in data:
            raise ValueError("`fit:` is now `memory_fit:` (the dry-run's memory question)")
        return data

    @model_validator(mode="after")
    def _unique_names(self) -> Recipe:
        names = [m.name for m in self.methods] + ([self.baseline.name] if self.baseline else [])
        seen = {n for n in names if names.count(n) > 1}
        if seen:
            raise ValueError(f"method names must be unique; repeated: {', '.join(sorted(seen))}")
        load_cells = self.bench.load_cells
        unknown = [n for n in (load_cells if isinstance(load_cells, list) else []) if n not in names]
        if unknown:
            shown = ", ".join(n if n.isprintable() else repr(n) for n in unknown)  # a line break would end the line
            raise ValueError(f"bench.load_cells names no cell: {shown}; cells: {', '.join(names)}")
        if load_cells is None and "concurrency" in self.bench.model_fields_set:
            raise ValueError(
                "bench.concurrency is set but bench.load_cells is not: name the cells to serve under load, or `all`"
            )
        return self

    def served(self, name: str) -> bool:
        """Whether the cell gets a load sweep."""
        cells = self.bench.load_cells
        return cells == "all" or (isinstance(cells, list) and name in cells)

    def bench_config(self, overrides: dict | None = None) -> BenchConfig:
        """The recipe's settings over the defaults, under `overrides` (the command line)."""
        section = given(self.bench)
        section.pop("load_cells", None)
        return BenchConfig.merged(section, overrides or {})

    def rig_entries(self) -> list[RigEntry]:
        return [RigEntry(name=r) if isinstance(r, str) else r for r in self.rigs]


@dataclass(frozen=True)
class Cell:
    model: ModelEntry
    name: str
    spec: MethodSpec  # normalized by its backend: what would be made
    is_baseline: bool
    tensor_parallel: int = 1

    def key(self) -> str:
        """The cell's identity: its artifact's folder, its records. A tensor-parallel cell is its own cell (its
        own artifact, the same bytes): the key of every single-GPU cell is what it was before the key existed."""
        fields: dict = {"model": self.model.id, "spec": self.spec.model_dump(mode="json", exclude_none=True)}
        if self.tensor_parallel != 1:
            fields["tensor_parallel"] = self.tensor_parallel
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]

    def artifact_dir(self, root: Path) -> Path:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "--", self.model.id)
        return root / slug / f"{self.name}-{self.key()}"


def load_recipe(path: str | Path) -> Recipe:
    """Parse and check a recipe; every failure is one line naming the file, the key and the reason."""
    path = Path(path)
    recipe = load_yaml_model(path, Recipe, RecipeError, "recipe")
    cells(recipe, path)  # methods resolve through their backends
    _check_rigs(recipe, path)
    try:
        recipe.bench_config()  # the section's keys together with the defaults (e.g. max_tokens ≥ ctx)
    except ValidationError as exc:
        raise RecipeError(f"recipe {path}: bench: {describe_validation_error(exc)}") from exc
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
    return relative_to_recipe(path, recipe.rigs_file) if recipe.rigs_file else None


def relative_to_recipe(recipe_path: Path, value: str) -> str:
    try:
        candidate = Path(value).expanduser()
    except RuntimeError:  # `~user` of a user this host does not have: the path as written, which is not there
        candidate = Path(value)
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
        normalized.append((entry.name, resolved, is_baseline, entry.tensor_parallel))
    made = [
        Cell(model=model, name=name, spec=spec, is_baseline=is_baseline, tensor_parallel=tp)
        for model in recipe.models
        for name, spec, is_baseline, tp in normalized
    ]
    _check_distinct(made, path)
    return made


def _check_distinct(made: list[Cell], path: Path) -> None:
    """Two cells that would make the same artifact and the same records are one cell under two names: refused,
    since a run keys artifacts and records by the cell's key."""
    first: dict[str, Cell] = {}
    for cell in made:
        other = first.setdefault(cell.key(), cell)
        if other is not cell:
            raise RecipeError(
                f"recipe {path}: cells {other.name} and {cell.name} ask for the same thing (same method, settings "
                "and tensor_parallel); keep one"
            )
