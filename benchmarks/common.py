"""What the quality benchmarks share: make an artifact once and re-use it while its spec still matches."""

from __future__ import annotations

from pathlib import Path


def same_request(recorded, requested) -> bool:
    """Whether an artifact's recorded spec is what `requested` (normalized) asks for. Fields the request
    leaves open (None, or dtype 'auto') are whatever the backend resolved them to, so they match anything."""
    want = requested.model_dump(exclude_none=True)
    have = recorded.model_dump(exclude_none=True)
    if want.get("dtype") == "auto":
        want.pop("dtype")
    for spec in (want, have):  # a calibration file named relatively here and absolutely in the manifest
        dataset = spec.get("calibration", {}).get("dataset")
        if dataset and Path(dataset).exists():
            spec["calibration"]["dataset"] = str(Path(dataset).resolve())
    return all(have.get(key) == value for key, value in want.items())


def artifact_for(model: str, spec, out: Path):
    """The artifact at `out` if it was made from the same request, else a fresh one (replacing it)."""
    from quantlab.artifact import load_artifact
    from quantlab.errors import ArtifactError
    from quantlab.methods import get_backend
    from quantlab.models import model_info, resolve_model
    from quantlab.quantizer import quantize

    backend = get_backend(spec.method, spec.backend)
    requested = backend.normalize(spec)
    # A cached artifact made before a check existed must not slip past it.
    backend.fit(requested, model_info(resolve_model(model).path))
    try:
        artifact = load_artifact(out)
        if same_request(artifact.manifest.spec, requested):
            return artifact
    except ArtifactError:
        pass
    print(f"quantizing {out.name} ...", flush=True)
    artifact = quantize(model, spec, out, force=True)
    print(f"{out.name}: {artifact.manifest.quantize_seconds:.0f} s to quantize", flush=True)
    return artifact
