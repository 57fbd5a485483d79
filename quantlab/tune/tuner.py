"""`quantlab tune`: the GGUF of a model that is best under a size budget (or smallest under a KLD), found by
measurement and verified on text the search never saw.

Steps, each logged: one F16 conversion (llama.cpp's converter); one importance matrix (llama-imatrix over the
calibration windows); the sensitivity of every tensor group at every candidate type (`sensitivity`, resumable);
the allocation (`allocate`), each group with or without the importance matrix as measured (`matrix`); the
artifact, made by the ordinary GGUF backend from the allocation as per-tensor types (`--tensor-types`,
`--imatrix-exclude`), so `quantlab quantize` with the recorded spec makes the same file; its size checked against
the budget; then, unless skipped, its held-out quality measured by the ordinary bench on the test split.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from quantlab.artifact import Artifact
from quantlab.errors import QuantizationError, SpecError
from quantlab.paths import cache_dir
from quantlab.results.gguf import TunedGroup, TuneRecord
from quantlab.spec import Calibration, MethodSpec
from quantlab.tune import allocate as alloc
from quantlab.tune.groups import DEFAULT_TYPES, Group, Tensor, make_groups, quantizable
from quantlab.tune.matrix import MatrixChoice, better, choose_matrix

ALLOCATOR = (
    "additive model (predicted KLD = sum of each group's KLD measured alone); greedy hull steps by KLD saved per "
    "byte (the Lagrangian path), then the best single change that still fits"
)
ALIGN = 32  # GGUF's default tensor alignment: the most padding a tensor can add to the file


class TuneRequest(BaseModel):
    """What `quantlab tune` is asked; field descriptions are its `--help`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    budget: str | None = Field(None, description="Largest file: 96MB, 1.5GiB, 5.5bpw (bits per source weight)...")
    max_kld: float | None = Field(
        None, gt=0, description="Instead of --budget: the smallest file whose predicted mean KLD is at most this."
    )
    types: list[str] = Field(list(DEFAULT_TYPES), description="Candidate ggml tensor types.", min_length=1)
    bands: int = Field(5, ge=1, description="Layer bands per weight kind: the groups measured and allocated.")
    windows: int = Field(2, ge=1, description="Calibration-split windows the sensitivity is measured on.")
    ctx: int = Field(512, ge=16, description="Tokens per sensitivity window.")
    negligible: float = Field(
        1e-4,
        ge=0,
        description="A group measuring at most this KLD at some type is not measured at larger ones (they could "
        "save no more).",
    )


@dataclass
class Prepared:
    source_path: str
    n_params: int
    f16: Path
    imatrix: Path
    tensors: list[Tensor]
    groups: list[Group]
    fixed_bytes: int
    work: Path
    weighed: frozenset[str]  # the tensors the importance matrix has an entry for (matmul inputs it saw)


def _types(request: TuneRequest) -> tuple[str, ...]:
    from quantlab.llamacpp.types import TENSOR_BITS

    names = tuple(t.strip().upper() for t in request.types)
    unknown = [t for t in names if t not in TENSOR_BITS]
    if unknown:
        raise SpecError(f"--types: unknown ggml types {', '.join(unknown)}; available: {', '.join(TENSOR_BITS)}")
    return names


def tune_root() -> Path:
    """Where tunes keep their measurements between runs (`--work-dir` overrides it)."""
    return cache_dir() / "tune"


def work_dir(root: Path, source_sha: str, calibration: Calibration, request: TuneRequest) -> Path:
    """One folder of `root` per model, calibration and sensitivity windows."""
    from quantlab.llamacpp import build

    found = build.find()
    key = [source_sha, calibration.model_dump(), request.windows, request.ctx, found.label if found else ""]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return root / digest


def baseline_dir(source_sha: str) -> Path:
    """Where the F16 GGUF artifact the held-out check compares with is kept (llama.cpp's own KLD convention)."""
    return tune_root() / f"baseline-F16-{source_sha[:16]}"


def prepare(source, info, calibration: Calibration, request: TuneRequest, work: Path, log, *, trust_remote_code=False):
    """Convert, compute the importance matrix, and cut the model into groups."""
    from quantlab.llamacpp import ops
    from quantlab.methods import get_backend
    from quantlab.methods.gguf import importance_matrix

    types = _types(request)
    get_backend("gguf", None).for_model(MethodSpec(method="gguf", scheme="Q8_0"), info)  # converter knows it
    f16 = ops.converted_f16(source.path, log)
    found = importance_matrix(f16, source.path, calibration, log, trust_remote_code=trust_remote_code, keep=work)
    imatrix = found.path
    listing = ops.inspect(f16)
    tensors = quantizable(listing)
    groups = make_groups(tensors, request.bands, types)
    empty = [g.name for g in groups if not g.types]
    if empty:
        raise SpecError(f"no candidate type fits the rows of {', '.join(empty[:4])}: add a block-32 type to --types")
    fixed = f16.stat().st_size - sum(g.bytes_at("F16") for g in groups) + ALIGN * len(listing["tensors"])
    weighed = frozenset(
        t["name"].removesuffix(".in_sum2") for t in ops.inspect(imatrix)["tensors"] if t["name"].endswith(".in_sum2")
    )
    return Prepared(source.path, info.n_params, f16, imatrix, tensors, groups, fixed, work, weighed)


def sensitivities(prep: Prepared, calibration: Calibration, request: TuneRequest, log):
    """Every group's KLD at every candidate type, measured or read back (the store); the windows' record; and the
    scorer of the windows (made only when something is scored, and then once: the F16 file's rows cost a full
    pass)."""
    from transformers import AutoTokenizer

    from quantlab.calibration import calibration_samples
    from quantlab.tune.sensitivity import Scorer, Store, add_reference, measure, saturated

    tokenizer = AutoTokenizer.from_pretrained(prep.source_path)
    asked = Calibration(dataset=calibration.dataset, n_samples=request.windows, seq_len=request.ctx, seed=1)
    windows, record = calibration_samples(tokenizer, asked)
    store = Store(
        prep.work / "sensitivity.ndjson", {"windows": record.token_fingerprint, "imatrix": calibration.model_dump()}
    )
    add_reference(store, prep.groups)
    found = store.found
    todo = sum(
        (g.name, t) not in found and not saturated(found, g, request.negligible) for g in prep.groups for t in g.types
    )
    scorer = Scorer(prep.f16, windows)
    if todo:
        log(f"sensitivity: up to {todo} measurements of {len(prep.groups)} groups on {windows.size} tokens")
        measure(prep.groups, prep.tensors, prep.f16, prep.imatrix, scorer, store, prep.work, log, request.negligible)
    return store, record, scorer


def how_measured(prep: Prepared, store, record, request: TuneRequest) -> str:
    runs, spent = len(store.seconds), sum(store.seconds)
    return (
        f"{runs} llama.cpp runs: {len(prep.groups)} groups × their candidate types, each group alone at the "
        f"type and every other weight F16, with the importance matrix (smallest type first; a group's larger types "
        f"not measured once it measured ≤ {request.negligible:g}; F16 is the reference itself, KLD 0, not run), "
        f"and {len(store.plain)} of them without it (types an allocation chose); mean KL(F16 || candidate) over "
        f"{request.windows} windows of {request.ctx} tokens "
        f"of the calibration split ({record.description}, fingerprint {record.token_fingerprint}); "
        f"{spent / 60:.1f} min of measurement ({spent / max(runs, 1):.1f} s each)"
    )


def choose(prep: Prepared, found: dict, request: TuneRequest, budget_bytes: int | None) -> alloc.Allocation:
    if budget_bytes is not None:
        return alloc.for_budget(prep.groups, found, prep.fixed_bytes, budget_bytes)
    return alloc.for_quality(prep.groups, found, prep.fixed_bytes, request.max_kld)


def spec_of(prep: Prepared, choice: MatrixChoice, calibration: Calibration) -> MethodSpec:
    """The allocation as an ordinary GGUF spec: every quantizable tensor named with its type (the file type is the
    most common of them, which llama.cpp records as the file's type; `--pure` keeps any tensor left unnamed at
    it, though none is)."""
    from quantlab.llamacpp.types import GGUF_TYPES

    by_group = {t.name: choice.allocation.choice[g.name] for g in prep.groups for t in g.tensors}
    common = [t for t, _ in Counter(by_group.values()).most_common() if t in GGUF_TYPES]
    imatrix = len(choice.plain) < len(prep.groups)
    return MethodSpec(
        method="gguf",
        scheme=common[0] if common else "Q8_0",
        pure=True,
        imatrix=imatrix,
        calibration=calibration if imatrix else None,
        tensor_types=[f"{name}={kind}" for name, kind in by_group.items()],
        imatrix_exclude=(choice.exclude or None) if imatrix else None,
    )


def record_of(prep, choice: MatrixChoice, request, budget, how, store, started) -> TuneRecord:
    objective = f"budget {budget}" if budget else f"max predicted KLD {request.max_kld:g}"
    allocation, measured = choice.allocation, better(store)
    groups = [
        TunedGroup(
            name=g.name,
            tensors=len(g.tensors),
            type=allocation.choice[g.name],
            bytes=g.bytes_at(allocation.choice[g.name]),
            kld=measured[g.name, allocation.choice[g.name]],
            imatrix=g.name not in choice.plain,
        )
        for g in prep.groups
    ]
    return TuneRecord(
        objective=objective,
        max_bytes=budget.max_bytes if budget else None,
        max_kld=request.max_kld,
        candidate_types=list(_types(request)),
        sensitivity=how,
        allocator=ALLOCATOR,
        groups=groups,
        predicted_bytes=allocation.bytes,
        predicted_kld=allocation.predicted_kld,
        imatrix=choice.said,
        seconds=round(time.perf_counter() - started, 1),
    )


def logged(log: Callable[[str], None], path: Path) -> Callable[[str], None]:
    """`log`, and each line appended with its time to `path` too: a long tune's progress stays readable after the
    terminal is gone, across runs (a resumed run appends)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def both(message: str) -> None:
        log(message)
        with path.open("a") as out:
            out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    return both


def tune(
    model: str,
    out: Path,
    request: TuneRequest,
    calibration: Calibration,
    log: Callable[[str], None],
    *,
    force: bool = False,
    trust_remote_code: bool = False,
    root: Path | None = None,
) -> Artifact:
    """Measure, allocate, and make the artifact at `out`; its size is checked against the budget."""
    from quantlab.artifact import check_out_free
    from quantlab.models import model_info, resolve_model
    from quantlab.quantizer import quantize
    from quantlab.tune.budget import parse_budget

    if (request.budget is None) == (request.max_kld is None):
        raise SpecError("give one of --budget (a size) or --max-kld (a quality)")
    check_out_free(Path(out), force=force)
    started = time.perf_counter()
    source = resolve_model(model, log=log)
    info = model_info(source.path, trust_remote_code=trust_remote_code)
    budget = parse_budget(request.budget, info.n_params) if request.budget else None  # a typo fails before any work
    work = work_dir(root or tune_root(), source.content_sha256, calibration, request)
    log = logged(log, work / "tune.log")
    prep = prepare(source, info, calibration, request, work, log, trust_remote_code=trust_remote_code)
    store, windows, scorer = sensitivities(prep, calibration, request, log)
    limit = budget.max_bytes if budget else None
    choice = choose_matrix(prep, store, lambda figures: choose(prep, figures, request, limit), scorer, log)
    allocation = choice.allocation
    log(f"allocation: {allocation.bytes / 1e6:,.2f} MB predicted, predicted KLD {allocation.predicted_kld:.5f}")
    how = how_measured(prep, store, windows, request)
    record = record_of(prep, choice, request, budget, how, store, started)
    spec = spec_of(prep, choice, calibration)
    artifact = quantize(model, spec, out, force=force, trust_remote_code=trust_remote_code, log=log, tune=record)
    written = (artifact.path / artifact.manifest.gguf.file).stat().st_size
    if budget and written > budget.max_bytes:
        import shutil

        shutil.rmtree(artifact.path)  # an artifact over its budget must not sit at --out looking finished
        raise QuantizationError(
            f"the tuned file was {written:,} bytes, over the budget of {budget.max_bytes:,}: the size model is "
            f"wrong by {written - allocation.bytes:,} bytes; nothing was left at {artifact.path}"
        )
    log(f"wrote {artifact.path}: {written / 1e6:,.2f} MB ({artifact.manifest.gguf.bits_per_weight} bpw)")
    return artifact
