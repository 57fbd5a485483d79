"""Which records a report shows, and which of them may be compared with each other.

A results file is an append-only log: re-running a bench adds records rather than replacing them, so a report
keeps the newest record of each configuration (`select`), and only ranks records measured the same way
(`comparable`). Every table, note and the choose analysis take their rows from here, so they agree on both.
"""

from __future__ import annotations

from quantlab.results import Result, SpeedPoint, speed_is_formats_own


def host(r: Result) -> str:
    """The machine a record's speed, memory and price belong to: the GPU model on CUDA, else the CPU model.

    A model, not a hostname: two machines of one model measure alike, and a hostname tells a reader nothing. An
    external server's machine is unknown (the load generator's host is not the server's).
    """
    if r.target is not None:
        return f"unknown ({r.target.host_port()})"
    return r.runtime.device_name if r.runtime.device.startswith("cuda") else r.host.cpu


def subject(r: Result, *, backend: bool = True, scheme: bool = True) -> str:
    """What a record measured, as a reader sees it: the artifact's label, or "external: <model> @ host:port"."""
    if r.artifact is None:
        return r.target.label()
    return r.artifact.display_label(backend=backend, scheme=scheme)


def with_artifact(results: list[Result]) -> list[Result]:
    """The records of artifacts quantlab measured: what every quality, size, speed and choice table ranks. An
    external server's record has no artifact; only the served table (and its notes) show it."""
    return [r for r in results if r.artifact is not None]


def scheme(r: Result) -> str:
    """The artifact's scheme, plus the KV-cache type a measurement asked for (the same file, another cache)."""
    if r.artifact is None:
        return "–"
    return r.artifact.label + (f", KV {r.runtime.kv_cache_dtype}" if r.runtime.kv_cache_dtype else "")


def spans_hosts(results: list[Result]) -> bool:
    """Whether rows must say which host made them; a single-host report then stays exactly as it was."""
    return len({host(r) for r in results}) > 1


def _key(r: Result) -> tuple:
    return (
        r.artifact.digest if r.artifact else r.target.model_dump_json(include={"url", "model_ids", "named_artifact"}),
        r.runtime.runtime,
        r.runtime.kernel,
        r.runtime.device,
        r.runtime.compute_dtype,
        r.rig.name,
        r.settings.token_fingerprint,
        r.settings.ctx,
        r.quality.vs_baseline.baseline_digest if r.quality and r.quality.vs_baseline else None,
        host(r),  # the same configuration on another machine is another measurement, not a re-run
        r.runtime.kv_cache_dtype,  # the serving levers: another KV type, serving option or workload is
        # another configuration (a draft by its label: its digest, recorded later, would split re-runs in two)
        r.load.options.model_dump_json(exclude={"draft_digest"}) if r.load else None,
        r.load.shared_prefix_tokens if r.load else None,
        compiled(r),  # the compiled decode loop is another measurement of the same artifact
        r.runtime.kernel_option,  # and so is another matmul kernel for the same weights
    )


def compiled(r: Result) -> bool:
    """Whether the speed figures came from the compiled decode loop (a fallback to eager is eager)."""
    return r.runtime.decode is not None and r.runtime.decode.mode == "compiled"


def select(results: list[Result], latest_only: bool = True) -> list[Result]:
    """The newest record of each configuration, baseline first, then largest weights first.

    A re-run supersedes the numbers it repeats instead of adding a row; `latest_only=False` keeps the history.
    """
    if not latest_only:
        return list(results)
    newest: dict[tuple, Result] = {}
    for result in results:
        key = _key(result)
        if key not in newest or result.timestamp >= newest[key].timestamp:
            newest[key] = result
    return sorted(newest.values(), key=_order)


def _order(r: Result) -> tuple:
    """Baseline first, then largest weights first; external servers (no artifact) last, by their label."""
    if r.artifact is None:
        return (True, True, 0, r.target.label())
    return (False, r.artifact.method != "none", -r.artifact.weight_bytes, r.artifact.label)


def speed_at(result: Result, batch: int | None = None) -> SpeedPoint | None:
    """The speed point at `batch`, or at the smallest batch measured: the main table's one-number speed."""
    if not result.speed:
        return None
    if batch is None:
        return min(result.speed, key=lambda p: p.batch_size)
    return next((p for p in result.speed if p.batch_size == batch), None)


def own_speed(result: Result) -> bool:
    return speed_is_formats_own(result.runtime.kernel)


def quality_pct(result: Result) -> float | None:
    return result.quality.recovery_pct() if result.quality else None


def comparable(results: list[Result]) -> list[Result]:
    """The in-process records scored against one baseline on one rig and one host with one token stream: the
    largest such group, because rows measured against different references or on different machines do not
    rank."""
    scored = [r for r in results if r.load is None and r.quality and r.quality.vs_baseline]
    groups: dict[tuple, list[Result]] = {}
    for r in scored:
        key = (
            r.quality.vs_baseline.baseline_digest,
            r.rig.name,
            r.settings.token_fingerprint,
            r.settings.ctx,
            host(r),
        )
        groups.setdefault(key, []).append(r)
    return max(groups.values(), key=len) if groups else []
