"""Measurements into `Result` records: the parts every bench (in-process and served) writes the same way."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from quantlab.artifact import Artifact
from quantlab.bench.config import BenchConfig
from quantlab.corpus import TokenStream, token_fingerprint
from quantlab.env import host_info, library_versions, quantlab_version
from quantlab.results import (
    ArtifactRef,
    BenchSettings,
    CostPoint,
    MemoryMetrics,
    QualityMetrics,
    Result,
    RigRef,
    Roofline,
    RuntimeDescription,
    SpeedPoint,
    TaskResults,
)
from quantlab.rigs import Rig, usd_per_million
from quantlab.roofline import BytesPerToken, host_bandwidth, roofline


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


def artifact_ref(artifact: Artifact) -> ArtifactRef:
    manifest = artifact.manifest
    return ArtifactRef(
        path=str(artifact.path),
        digest=artifact.digest,
        method=manifest.spec.method,
        backend=manifest.spec.backend or "",
        label=manifest.spec.label(),
        format=manifest.format,
        weight_bytes=manifest.weight_bytes,
        disk_bytes=artifact.disk_bytes,
        source_ref=manifest.source.ref,
        source_sha256=manifest.source.content_sha256,
        source_description=manifest.source.description,
        quantize_seconds=manifest.quantize_seconds,
        gguf=manifest.gguf,
    )


def rig_ref(rig: Rig) -> RigRef:
    return RigRef(
        name=rig.name, description=rig.description, price_per_hour=rig.price_per_hour, price_note=rig.price_note
    )


def memory_metrics(raw: dict, device: str, gpus: int = 1) -> MemoryMetrics:
    """The speed worker's memory readings, said with how they were taken."""
    if device.startswith("cuda"):
        where = f", summed over the {gpus} GPUs the model spans (each GPU's own peak)" if gpus > 1 else ""
        return MemoryMetrics(
            kind="cuda-peak-allocated",
            peak_bytes=raw["cuda_peak_allocated_bytes"],
            after_load_bytes=raw["cuda_after_load_bytes"],
            before_load_bytes=0,
            cuda_peak_reserved_bytes=raw["cuda_peak_reserved_bytes"],
            note=f"torch.cuda.max_memory_allocated over load and the speed runs, fresh process{where}",
        )
    return MemoryMetrics(
        kind="cpu-peak-rss-fresh-process",
        peak_bytes=raw["peak_rss_bytes"],
        after_load_bytes=raw["after_load_bytes"],
        before_load_bytes=raw["before_load_bytes"],
        note=f"peak RSS ({raw['peak_rss_source']}) of a fresh process over load and the speed "
        "runs; includes the Python/torch runtime itself (before_load_bytes)",
    )


def roofline_of(per_token: dict | None, speed: list[SpeedPoint], device: str, name: str) -> Roofline | None:
    """Batch-1 decode against this host's read bandwidth (measured once per host and device, and cached)."""
    point = next((p for p in speed if p.batch_size == 1), None)
    if per_token is None or point is None:
        return None
    per_token = BytesPerToken.model_validate(per_token)
    result = roofline(host_bandwidth(device, name), per_token, point.decode_tok_s.median)
    if result.pct_of_limit > 100:
        # Faster than the cached bandwidth allows: that measurement was low (a busy host); measure again.
        result = roofline(host_bandwidth(device, name, refresh=True), per_token, point.decode_tok_s.median)
    return result


def in_process_result(
    run_id: str,
    artifact: Artifact,
    description: RuntimeDescription,
    rig: Rig,
    config: BenchConfig,
    stream: TokenStream,
    *,
    quality: QualityMetrics | None,
    speed: list[SpeedPoint],
    memory: MemoryMetrics | None,
    roof: Roofline | None,
    tasks: TaskResults | None,
) -> Result:
    cost = [
        CostPoint(
            batch_size=p.batch_size,
            tokens_per_second=p.decode_tok_s.median,
            usd_per_1m_tokens=usd_per_million(rig.price_per_hour, p.decode_tok_s.median),
        )
        for p in speed
    ]
    return Result(
        run_id=run_id,
        timestamp=datetime.now(UTC),
        quantlab_version=quantlab_version(),
        artifact=artifact_ref(artifact),
        runtime=description,
        rig=rig_ref(rig),
        settings=BenchSettings(
            dataset=stream.source,
            n_tokens=len(stream.ids),
            token_fingerprint=token_fingerprint(stream.ids),
            ctx=config.ctx,
            batch_sizes=config.batch_sizes,
            prompt_tokens=config.prompt_tokens,
            new_tokens=config.new_tokens,
            warmup=config.warmup,
            repeats=config.repeats,
        ),
        quality=quality,
        speed=speed,
        memory=memory,
        cost=cost,
        libraries=library_versions(),
        host=host_info(),
        roofline=roof,
        tasks=tasks,
    )
