"""`bench_target(url, ...)`: measure a server quantlab did not start (`quantlab bench --load --target URL`).

The same load generator, prompts and levels as `bench_load`, against any OpenAI-compatible endpoint (a production
vLLM, TGI or llama-server). What quantlab cannot know of such a server it does not claim: the record has no
artifact (so no digest, no quality, no kernel path), its host and device are "unknown", and the server's own
settings (slots, cache, speculation) are whatever its owner chose. What it can learn it asks (`target_probe`).

Each request adds `ignore_eos` and `min_tokens` (vLLM's and llama-server's ways of forcing the length; a server
that honours neither stops early, and the load generator counts that request as an error with its reason, never
as a shorter success). The warm-up request must succeed, or nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from quantlab.bench import records
from quantlab.bench.config import BenchConfig, given
from quantlab.bench.loadgen import Request, run_level
from quantlab.bench.served_plan import Prompts, cut_prompts_with
from quantlab.bench.target_probe import Probed, base_url, probe
from quantlab.corpus import token_fingerprint
from quantlab.env import host_info, library_versions, quantlab_version
from quantlab.errors import BenchError, ServeError
from quantlab.results import (
    LATENCY_DEFINITIONS,
    UNKNOWN,
    BenchSettings,
    CostPoint,
    ExternalTarget,
    LoadLevel,
    LoadSweep,
    NamedArtifact,
    Result,
    RigRef,
    RuntimeDescription,
    append_result,
)
from quantlab.rigs import get_rig, usd_per_million

Progress = Callable[[str], None]

# Settings of a server quantlab starts: an external server was set up by its owner, so these cannot apply.
SERVER_SETTINGS = (
    "engine", "threads", "kv_cache_dtype", "prefix_cache", "draft", "draft_tokens", "tensor_parallel", "device",
)  # fmt: skip
NO_RIG = RigRef(
    name=UNKNOWN,
    description="an external server: its hardware is not known to quantlab",
    price_per_hour=0.0,
    price_note="no rig named (--rig), so no $/1M tokens",
)


def bench_target(
    url: str,
    *,
    config: BenchConfig | None = None,
    artifact: str | Path | None = None,
    results_path: str | Path | None = None,
    progress: Progress = lambda _: None,
    request_timeout_s: float = 600.0,
) -> Result:
    config = config or BenchConfig()
    refused = [name for name in SERVER_SETTINGS if name in given(config)]
    if refused:
        flags = ", ".join("--" + name.replace("_", "-") for name in refused)
        raise BenchError(f"{flags}: set(s) up a server quantlab starts; --target measures one it did not start")
    url = base_url(url)
    progress(f"{url}: asking what it serves")
    probed = probe(url)
    named, tokenizer = _named_and_tokenizer(artifact, progress)
    prompts = cut_prompts_with(tokenizer, config)
    model = probed.model_ids[0] if probed.model_ids else UNKNOWN
    fields = {"ignore_eos": True, "min_tokens": config.new_tokens}

    def level(requests: list[Request], concurrency: int) -> LoadLevel:
        return run_level(
            url, model=model, requests=requests, concurrency=concurrency, max_tokens=config.new_tokens,
            extra_fields=fields, request_rate=config.request_rate, timeout_s=request_timeout_s, slo=config.slo,
        )  # fmt: skip

    progress(f"{url}: one warm-up request")
    first = level(prompts.requests[:1], 1)
    if first.errors:
        raise ServeError(f"--target {url}: the warm-up request failed: {first.error_examples[0]}")
    levels, offset = [], 1
    for concurrency in config.concurrency:
        n = config.requests_at(concurrency)
        progress(f"{url}: concurrency {concurrency}, {n} requests")
        levels.append(level(prompts.requests[offset : offset + n], concurrency))
        offset += n
    target = ExternalTarget(
        url=url, model_ids=probed.model_ids, props=probed.props, probes=probed.lines, request_model=model,
        request_fields=fields, tokenizer=str(tokenizer), named_artifact=named,
    )  # fmt: skip
    result = target_result(target, config, prompts, levels, probed)
    if results_path is not None:
        append_result(results_path, result)
    return result


def _named_and_tokenizer(artifact: str | Path | None, progress: Progress) -> tuple[NamedArtifact | None, Path]:
    """The artifact the user named (identity only, not verified) and the tokenizer that cuts the prompts: the
    named artifact's, else the default model's (the one every quantlab workload is cut with by default)."""
    if artifact is None:
        from quantlab.default_model import ensure_default_model

        progress("no artifact named: cutting prompts with the default model's tokenizer")
        return None, ensure_default_model(log=progress)
    from quantlab.artifact import load_artifact
    from quantlab.bench.prepare import tokenizer_dir

    loaded = load_artifact(artifact)
    ref = records.artifact_ref(loaded)
    named = NamedArtifact(path=ref.path, digest=ref.digest, label=ref.display_label(backend=True))
    return named, tokenizer_dir(loaded)


def target_result(
    target: ExternalTarget, config: BenchConfig, prompts: Prompts, levels: list[LoadLevel], probed: Probed
) -> Result:
    rig = NO_RIG
    if config.rig:  # the user's word for the hardware behind the URL, priced as such; quantlab cannot check it
        rig = records.rig_ref(get_rig(config.rig, rigs_file=config.rigs_file, price_per_hour=config.price_per_hour))
    version = probed.props.build_info if probed.props else UNKNOWN
    return Result(
        run_id=records.new_run_id(),
        timestamp=datetime.now(UTC),
        quantlab_version=quantlab_version(),
        artifact=None,
        target=target,
        runtime=_runtime(version),
        rig=rig,
        settings=_settings(config, prompts),
        quality=None,
        speed=[],
        memory=None,
        cost=[
            CostPoint(
                batch_size=lv.concurrency,
                tokens_per_second=lv.output_tok_s,
                basis="served",
                usd_per_1m_tokens=usd_per_million(rig.price_per_hour, lv.output_tok_s),
            )
            for lv in levels
            if config.rig and lv.output_tok_s > 0
        ],
        libraries=library_versions(),
        host=host_info(),
        load=_sweep(target, config, prompts, levels, version),
    )


def _runtime(version: str) -> RuntimeDescription:
    return RuntimeDescription(
        runtime="external server",
        runtime_version=version,
        device=UNKNOWN,
        device_name=UNKNOWN,
        threads=0,
        compute_dtype=UNKNOWN,
        kernel="unknown",
        batching=UNKNOWN,
        kernel_detail="an external server: its device, threads (0 here means unknown) and kernels are not known "
        "to quantlab",
    )


def _settings(config: BenchConfig, prompts: Prompts) -> BenchSettings:
    used = prompts.ids[: len(prompts.requests) * config.prompt_tokens]
    return BenchSettings(
        dataset=prompts.source,
        n_tokens=len(used),
        token_fingerprint=token_fingerprint(used),
        ctx=0,  # the server's context is its owner's (llama-server's is in `target.props`)
        batch_sizes=config.concurrency,
        prompt_tokens=config.prompt_tokens,
        new_tokens=config.new_tokens,
        warmup=1,
        repeats=1,
    )


def _sweep(
    target: ExternalTarget, config: BenchConfig, prompts: Prompts, levels: list[LoadLevel], version: str
) -> LoadSweep:
    shared = f"the first {config.shared_prefix_tokens} tokens of the stream (shared), then "
    return LoadSweep(
        engine="external",
        engine_version=version,
        engine_verified=False,
        batches=False,
        batching="unknown: an external server batches as its owner set it up",
        startup_s=None,
        prompt_tokens=config.shared_prefix_tokens + config.prompt_tokens,
        output_tokens=config.new_tokens,
        prompts=(shared if config.shared_prefix_tokens else "")
        + f"{len(prompts.requests)} consecutive {config.prompt_tokens}-token slices of {prompts.source.description}"
        f" (tokenizer of {target.tokenizer}), decoded to text (the warm-up request is the first)",
        memfit=None,
        levels=levels,
        shared_prefix_tokens=config.shared_prefix_tokens,
        slo=config.slo,
        latency_definitions=dict(LATENCY_DEFINITIONS),
    )
