"""A served sweep as a Result: the plan and what its run measured, with $/1M output tokens per level at the rig's
price, and the server's peak memory on a CPU host (on a GPU the server's device memory is not read here)."""

from __future__ import annotations

from datetime import UTC, datetime

from quantlab.bench import records
from quantlab.bench.served_plan import ServedPlan
from quantlab.bench.served_run import ServedRun
from quantlab.corpus import token_fingerprint
from quantlab.env import host_info, library_versions, quantlab_version
from quantlab.results import LATENCY_DEFINITIONS, BenchSettings, CellRef, CostPoint, LoadSweep, MemoryMetrics, Result
from quantlab.rigs import usd_per_million
from quantlab.serve.base import Engine


def served_result(plan: ServedPlan, run: ServedRun, cell: CellRef | None = None) -> Result:
    config, prompts = plan.config, plan.prompts
    used = prompts.ids[: len(prompts.requests) * config.prompt_tokens]
    return Result(
        run_id=records.new_run_id(),
        timestamp=datetime.now(UTC),
        quantlab_version=quantlab_version(),
        artifact=records.artifact_ref(plan.artifact),
        runtime=run.description,
        rig=records.rig_ref(plan.rig),
        settings=BenchSettings(
            dataset=prompts.source,
            n_tokens=len(used),
            token_fingerprint=token_fingerprint(used),
            ctx=plan.ctx,
            batch_sizes=config.concurrency,
            prompt_tokens=config.prompt_tokens,
            new_tokens=config.new_tokens,
            warmup=1,
            repeats=1,
        ),
        quality=None,
        speed=[],
        memory=_memory(run.peak_rss) if plan.device == "cpu" and run.peak_rss else None,
        cost=[
            CostPoint(
                batch_size=lv.concurrency,
                tokens_per_second=lv.output_tok_s,
                basis="served",
                usd_per_1m_tokens=usd_per_million(plan.rig.price_per_hour, lv.output_tok_s),
            )
            for lv in run.levels
            if lv.output_tok_s > 0
        ],
        libraries=library_versions(),
        host=host_info(),
        load=_load_sweep(plan, run),
        cell=cell,
    )


def _memory(peak: int) -> MemoryMetrics:
    return MemoryMetrics(
        kind="cpu-peak-rss-server",
        peak_bytes=peak,
        after_load_bytes=0,
        before_load_bytes=0,
        note="peak RSS (VmHWM) of the server process and its children over start-up and every "
        "level; includes the engine's own runtime (Python, the HTTP stack)",
    )


def _load_sweep(plan: ServedPlan, run: ServedRun) -> LoadSweep:
    config, engine = plan.config, plan.engine
    shared = f"the first {config.shared_prefix_tokens} tokens of the stream (shared), then "
    return LoadSweep(
        **engine_fields(engine),
        launch=plan.launch.flags,
        startup_s=run.startup_s,
        prompt_tokens=config.shared_prefix_tokens + config.prompt_tokens,
        output_tokens=config.new_tokens,
        prompts=(shared if config.shared_prefix_tokens else "")
        + f"{len(plan.prompts.requests)} consecutive {config.prompt_tokens}-token slices of "
        f"{plan.prompts.source.description}, decoded to text (the warm-up request is the first)",
        memfit=plan.memfit,
        levels=run.levels,
        options=plan.options,
        shared_prefix_tokens=config.shared_prefix_tokens,
        slo=config.slo,
        kv_allocation=run.kv,
        greedy_check=run.greedy,
        latency_definitions=dict(LATENCY_DEFINITIONS),
    )


def engine_fields(engine: Engine) -> dict:
    """What a served record says of the engine: its version as probed where it runs (vLLM: through the interpreter
    that starts it, so a vLLM in a virtualenv of its own is recorded as the one that served) and that
    interpreter."""
    return dict(
        engine=engine.name,
        engine_version=engine.version(),
        engine_verified=engine.verified,
        batches=engine.batches_requests,
        batching=engine.batching_note,
        engine_python=engine.engine_python(),
    )
