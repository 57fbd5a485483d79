"""`quantize(model, spec, out)`: the one entry point the CLI, recipes and notebooks share.

Order matters: everything that can be checked without loading weights is checked first (spec, backend
availability, output path, architecture fit), so a bad request fails in seconds and writes nothing.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from quantlab import methods
from quantlab.artifact import (
    Artifact,
    Manifest,
    building,
    check_out_free,
    list_files,
    load_artifact,
    weight_bytes,
    write_manifest,
)
from quantlab.env import host_info, library_versions
from quantlab.errors import BackendUnavailableError
from quantlab.methods.base import Log
from quantlab.models import model_info, resolve_model
from quantlab.results.gguf import TuneRecord
from quantlab.spec import MethodSpec


def _quiet(_: str) -> None:
    return None


def quantize(
    model: str,
    spec: MethodSpec,
    out: str | Path,
    *,
    force: bool = False,
    trust_remote_code: bool = False,
    log: Log = _quiet,
    tune: TuneRecord | None = None,
) -> Artifact:
    """`tune`: how `quantlab tune` chose a GGUF's tensor types, recorded in the manifest's GGUF record."""
    backend = methods.get_backend(spec.method, spec.backend)
    availability = backend.availability()
    if not availability.usable:
        raise BackendUnavailableError(f"{spec.method}/{backend.name} cannot run here: {availability.reason}")
    spec = backend.normalize(spec)
    out = Path(out)
    check_out_free(out, force=force)
    source = resolve_model(model, log=log)
    info = model_info(source.path, trust_remote_code=trust_remote_code)
    spec = backend.for_model(spec, info)
    with building(out, force=force) as tmp:
        started = time.perf_counter()
        outcome = backend.quantize(source, spec, tmp, log, trust_remote_code=trust_remote_code)
        elapsed = time.perf_counter() - started
        if tune is not None and outcome.gguf is not None:
            outcome.gguf = outcome.gguf.model_copy(update={"tune": tune})
        log("hashing files, writing manifest")
        files = list_files(tmp)
        manifest = Manifest(
            spec=spec,
            format=outcome.format,
            loads_in=list(backend.loads_in),
            source=source,
            calibration=outcome.calibration,
            libraries=library_versions(),
            files=files,
            weight_bytes=weight_bytes(files),
            n_params_source=info.n_params,
            created_at=datetime.now(UTC),
            quantize_seconds=round(elapsed, 3),
            host=host_info(),
            gguf=outcome.gguf,
            notes=outcome.notes,
        )
        write_manifest(tmp, manifest)
    return load_artifact(out)


def reusable(out: str | Path, model: str, spec: MethodSpec) -> Artifact | None:
    """The artifact at `out` if it is what `quantize(model, spec, out)` would make now, else None.

    Same request (spec), same source weights (content hash), and the tokenizer it carries is the source's
    current one: a tokenizer fix (e.g. the default model's, which changes what llama.cpp's converter writes
    into a GGUF) must invalidate artifacts built before it even though the weights did not change.
    """
    from quantlab.errors import ArtifactError
    from quantlab.spec import same_request
    from quantlab.util.files import file_sha256

    try:
        artifact = load_artifact(out)
    except ArtifactError:
        return None
    backend = methods.get_backend(spec.method, spec.backend)
    requested = backend.normalize(spec)
    source = resolve_model(model, log=lambda _: None)
    # A cached artifact made before a check existed must not slip past it.
    backend.for_model(requested, model_info(source.path))
    manifest = artifact.manifest
    if not same_request(manifest.spec, requested) or manifest.source.content_sha256 != source.content_sha256:
        return None
    for name in ("tokenizer.json", "tokenizer.model"):
        mine, theirs = artifact.path / name, Path(source.path) / name
        if mine.is_file() != theirs.is_file() or (mine.is_file() and file_sha256(mine) != file_sha256(theirs)):
            return None
    return artifact


def obtain(model: str, spec: MethodSpec, out: str | Path, *, log: Log = _quiet) -> Artifact:
    """The artifact at `out` if it is what `quantize(model, spec, out)` would make now (`reusable`), else a fresh
    one in its place: the one "reuse or quantize" every sweep (recipes, the demo, the benchmarks, the tests'
    shared artifacts) goes through."""
    artifact = reusable(out, model, spec)
    if artifact is not None:
        log(f"reusing {Path(out)}")
        return artifact
    log("quantizing")
    return quantize(model, spec, out, force=True, log=log)
