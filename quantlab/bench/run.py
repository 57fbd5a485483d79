"""`bench(artifacts, ...)`: measure artifacts the same way and append one Result per artifact.

Quality runs in this process, with the baseline (if any) loaded once and each artifact scored on exactly the
same windows. Speed and memory run in a fresh subprocess per artifact (see `worker`), so peak memory is the
artifact's own. Every input is checked before the first model is loaded.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import quantlab
from quantlab.artifact import Artifact, load_artifact
from quantlab.bench.quality import ReusedBaseline, score, windows
from quantlab.corpus import TokenStream, load_text, token_fingerprint, tokenize
from quantlab.env import host_info, library_versions
from quantlab.errors import BenchError, RigError
from quantlab.results import (
    ArtifactRef,
    BenchSettings,
    CostPoint,
    MemoryMetrics,
    QualityMetrics,
    Result,
    RigRef,
    RuntimeDescription,
    SpeedPoint,
    append_result,
)
from quantlab.rigs import check_matches, get_rig, usd_per_million
from quantlab.roofline import BytesPerToken, Roofline, host_bandwidth, roofline
from quantlab.runtimes import default_device, select_runtime

Progress = Callable[[str], None]


@dataclass
class BenchOptions:
    dataset: str = "default"
    ctx: int = 512
    max_tokens: int | None = 4096
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    prompt_tokens: int = 128
    new_tokens: int = 32
    warmup: int = 1
    repeats: int = 3
    rig: str | None = None  # None: `cpu` on a CPU host; required on GPU hosts
    rigs_file: str | None = None
    price_per_hour: float | None = None
    runtime: str | None = None
    device: str | None = None
    dtype: str = "auto"
    quality: bool = True
    speed: bool = True
    tasks: list[str] | None = None  # lm-eval task names (run with the quality pass, on the same loaded model)
    task_path: str | None = None
    task_limit: int | None = None
    num_fewshot: int | None = None
    task_batch_size: int = 8

    def check(self) -> None:
        if self.ctx < 2:
            raise BenchError(f"--ctx must be at least 2, not {self.ctx}")
        if self.max_tokens is not None and self.max_tokens < self.ctx:
            raise BenchError(f"--max-tokens {self.max_tokens} is shorter than one window of --ctx {self.ctx}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise BenchError(f"--batch-sizes must be positive integers, got {self.batch_sizes}")
        if self.new_tokens < 2:
            raise BenchError("--new-tokens must be at least 2 (one for prefill, the rest timed as decode)")
        if self.prompt_tokens < 1 or self.repeats < 1 or self.warmup < 0:
            raise BenchError("--prompt-tokens and --repeats must be ≥ 1, --warmup ≥ 0")
        if self.dtype not in ("auto", "fp32", "bf16", "fp16"):
            raise BenchError(f"--dtype must be auto, fp32, bf16 or fp16, not {self.dtype}")
        if not (self.quality or self.speed):
            raise BenchError("nothing to measure: --no-quality and --no-speed together")
        if self.tasks and not self.quality:
            raise BenchError("--tasks runs with the quality pass; drop --no-quality")
        if self.task_limit is not None and self.task_limit < 1:
            raise BenchError(f"--task-limit must be ≥ 1, not {self.task_limit}")


def tokenizer_dir(artifact: Artifact) -> Path:
    """The tokenizer the source model was published with: saved inside HF artifacts, else the source."""
    if (artifact.path / "tokenizer_config.json").is_file():
        return artifact.path
    return Path(artifact.manifest.source.path)


class _Streams:
    """Tokenizes the dataset once per distinct tokenizer."""

    def __init__(self, text: str, source, max_tokens: int | None) -> None:
        self.text, self.source, self.max_tokens = text, source, max_tokens
        self._cache: dict[str, TokenStream] = {}

    def for_artifact(self, artifact: Artifact) -> TokenStream:
        from transformers import AutoTokenizer

        directory = tokenizer_dir(artifact)
        key = _tokenizer_key(directory)
        if key not in self._cache:
            tokenizer = AutoTokenizer.from_pretrained(directory)
            ids = tokenize(tokenizer, self.text, self.max_tokens)
            self._cache[key] = TokenStream(ids=ids, source=self.source, tokenizer=str(directory))
        return self._cache[key]


def _tokenizer_key(directory: Path) -> str:
    digest = hashlib.sha256()
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        file = directory / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def resolve_rig(name: str | None, device: str, *, rigs_file: str | None = None, price_per_hour: float | None = None):
    """The rig a measurement on `device` is labelled and priced with; `cpu` by default on a CPU host."""
    name_of_device = device_name(device)
    rig_name = name or ("cpu" if device == "cpu" else None)
    if rig_name is None:
        raise RigError(f"benching on {name_of_device}: name the rig with --rig (see 'quantlab rigs')")
    rig = get_rig(rig_name, rigs_file=rigs_file, price_per_hour=price_per_hour)
    check_matches(rig, device, name_of_device)
    if rig.n_gpus > 1:
        raise RigError(f"rig {rig.name!r} has {rig.n_gpus} GPUs; quantlab measures on one device")
    return rig


def check_device(device: str) -> None:
    import torch

    if device == "cpu":
        return
    if not device.startswith("cuda"):
        raise BenchError(f"--device must be cpu or cuda[:N], not {device!r}")
    if not torch.cuda.is_available():
        raise BenchError(f"--device {device}: this host has no CUDA device")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise BenchError(f"--device {device}: this host has {torch.cuda.device_count()} CUDA device(s)")


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return host_info().cpu


def bench(
    artifacts: list[str | Path],
    *,
    baseline: str | Path | None = None,
    options: BenchOptions | None = None,
    results_path: str | Path | None = None,
    progress: Progress = lambda _: None,
    cells: list | None = None,
) -> list[Result]:
    """`cells` (quantlab run): one CellRef per artifact, recorded in its Result."""
    options = options or BenchOptions()
    options.check()
    loaded = [load_artifact(a) for a in artifacts]
    if not loaded:
        raise BenchError("no artifact to bench")
    base = load_artifact(baseline) if baseline is not None and options.quality else None
    runtimes = [select_runtime(a, options.runtime) for a in loaded]
    base_runtime = select_runtime(base, options.runtime) if base is not None else None
    device = options.device or default_device()
    check_device(device)
    rig = resolve_rig(options.rig, device, rigs_file=options.rigs_file, price_per_hour=options.price_per_hour)
    text, source = load_text(options.dataset, "test")
    streams = _Streams(text, source, options.max_tokens)
    # Every stream is tokenized and checked before the first model loads: a mismatch found half-way
    # would leave a results file with half a comparison in it.
    artifact_streams = [streams.for_artifact(a) for a in loaded]
    base_stream = streams.for_artifact(base) if base is not None else None
    for artifact, stream in zip(loaded, artifact_streams, strict=True):
        windows(stream.ids, options.ctx)
        if base_stream is not None and not np.array_equal(stream.ids, base_stream.ids):
            raise BenchError(
                f"baseline {base.path} and {artifact.path} tokenize the dataset differently: "
                "they are not the same source model, so their logits cannot be compared"
            )
    if options.tasks:
        from quantlab.bench.tasks import check_tasks

        check_tasks(options.tasks, options.task_path)
        pairs = list(zip(loaded, runtimes, strict=True)) + ([(base, base_runtime)] if base is not None else [])
        for artifact, runtime in pairs:
            if runtime.name != "transformers":
                raise BenchError(
                    f"--tasks scores a transformers model; {artifact.path.name} is served by "
                    f"{runtime.name} (GGUF task accuracy is not supported)"
                )
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]

    base_session = None
    base_tasks = None
    if base is not None:
        progress(f"loading baseline {base.path.name}")
        base_session = ReusedBaseline(base_runtime.load(base, device=device, dtype=options.dtype))
        if options.tasks:
            progress(f"{base.path.name}: lm-eval tasks {', '.join(options.tasks)}")
            base_tasks = _tasks(base_session.inner, base, options, device)
    out: list[Result] = []
    try:
        for artifact, runtime, stream in zip(loaded, runtimes, artifact_streams, strict=True):
            name = artifact.path.name
            quality = description = task_results = None
            if options.quality:
                progress(f"{name}: loading for quality")
                session = runtime.load(artifact, device=device, dtype=options.dtype)
                description = session.describe()
                total, done = len(windows(stream.ids, options.ctx)), itertools.count(1)
                try:
                    quality = score(
                        session,
                        stream.ids,
                        options.ctx,
                        baseline=base_session,
                        baseline_digest=base.digest if base else "",
                        baseline_label=artifact_ref(base).display_label(backend=False) if base else "",
                        on_window=lambda name=name, done=done, total=total: progress(
                            f"{name}: perplexity window {next(done)}/{total}"
                        ),
                    )
                    if options.tasks:
                        progress(f"{name}: lm-eval tasks {', '.join(options.tasks)}")
                        task_results = _task_results(
                            _tasks(session, artifact, options, device), base_tasks, base, options
                        )
                finally:
                    session.close()
            speed: list[SpeedPoint] = []
            memory = roof = None
            if options.speed:
                answer = _run_worker(
                    artifact,
                    runtime.name,
                    device,
                    options,
                    stream.ids,
                    lambda msg, name=name: progress(f"{name}: speed, {msg}"),
                )
                description = RuntimeDescription.model_validate(answer["runtime"])
                speed = [SpeedPoint.model_validate(p) for p in answer["speed"]]
                memory = _memory(answer["memory"], device)
                roof = _roofline(answer.get("bytes_per_token"), speed, device)
            result = _result(
                run_id, artifact, description, rig, options, stream, quality, speed, memory, roof, task_results
            )
            if cells is not None:
                result.cell = cells[len(out)]
            if results_path is not None:
                append_result(results_path, result)
            out.append(result)
    finally:
        if base_session is not None:
            base_session.close()
    return out


def _tasks(session, artifact: Artifact, options: BenchOptions, device: str):
    from transformers import AutoTokenizer

    from quantlab.bench.tasks import run_tasks

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(artifact))
    return run_tasks(
        session.hf_model(),
        tokenizer,
        options.tasks,
        task_path=options.task_path,
        limit=options.task_limit,
        num_fewshot=options.num_fewshot,
        batch_size=options.task_batch_size,
        device=device,
    )


def _task_results(scores, base_scores, base: Artifact | None, options: BenchOptions):
    from quantlab.bench.tasks import harness_version, with_recovery
    from quantlab.results import TaskResults

    if base_scores is not None:
        scores = with_recovery(scores, base_scores)
    return TaskResults(
        harness=harness_version(),
        tasks=options.tasks,
        task_path=options.task_path,
        limit=options.task_limit,
        num_fewshot=options.num_fewshot,
        batch_size=options.task_batch_size,
        baseline_digest=base.digest if base else None,
        scores=scores,
    )


def _run_worker(
    artifact: Artifact, runtime: str, device: str, options: BenchOptions, ids: np.ndarray, progress: Progress
) -> dict:
    needed = max(options.batch_sizes) * options.prompt_tokens
    request = {
        "artifact": str(artifact.path),
        "runtime": runtime,
        "device": device,
        "dtype": options.dtype,
        "ids": np.resize(ids, max(needed, 1)).tolist() if len(ids) < needed else ids[:needed].tolist(),
        "batch_sizes": options.batch_sizes,
        "prompt_tokens": options.prompt_tokens,
        "new_tokens": options.new_tokens,
        "warmup": options.warmup,
        "repeats": options.repeats,
    }
    with tempfile.TemporaryDirectory(prefix="quantlab-worker-") as tmp:
        req, ans, err = Path(tmp) / "request.json", Path(tmp) / "answer.json", Path(tmp) / "stderr.txt"
        req.write_text(json.dumps(request))
        # stderr goes to a file: a pipe that is read only after stdout closes deadlocks once the worker's
        # library chatter (progress bars) fills the pipe buffer.
        with open(err, "w") as err_fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "quantlab.bench.worker", str(req), str(ans)],
                stdout=subprocess.PIPE,
                stderr=err_fh,
                text=True,
                env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"},
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                progress(line.strip())
            proc.wait()
        stderr = err.read_text(errors="replace")
        if proc.returncode != 0 or not ans.is_file():
            lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
            raise BenchError(
                f"speed/memory measurement of {artifact.path} failed: "
                f"{lines[-1] if lines else f'exit code {proc.returncode}'}"
            )
        return json.loads(ans.read_text())


def _roofline(per_token: dict | None, speed: list[SpeedPoint], device: str) -> Roofline | None:
    """Batch-1 decode against this host's read bandwidth (measured once per host and device, and cached)."""
    point = next((p for p in speed if p.batch_size == 1), None)
    if per_token is None or point is None:
        return None
    per_token = BytesPerToken.model_validate(per_token)
    name = device_name(device)
    result = roofline(host_bandwidth(device, name), per_token, point.decode_tok_s.median)
    if result.pct_of_limit > 100:
        # Faster than the cached bandwidth allows: that measurement was low (a busy host); measure again.
        result = roofline(host_bandwidth(device, name, refresh=True), per_token, point.decode_tok_s.median)
    return result


def _memory(raw: dict, device: str) -> MemoryMetrics:
    if device.startswith("cuda"):
        return MemoryMetrics(
            kind="cuda-peak-allocated",
            peak_bytes=raw["cuda_peak_allocated_bytes"],
            after_load_bytes=raw["cuda_after_load_bytes"],
            before_load_bytes=0,
            cuda_peak_reserved_bytes=raw["cuda_peak_reserved_bytes"],
            note="torch.cuda.max_memory_allocated over load and the speed runs, fresh process",
        )
    return MemoryMetrics(
        kind="cpu-peak-rss-fresh-process",
        peak_bytes=raw["peak_rss_bytes"],
        after_load_bytes=raw["after_load_bytes"],
        before_load_bytes=raw["before_load_bytes"],
        note=f"peak RSS ({raw['peak_rss_source']}) of a fresh process over load and the speed "
        "runs; includes the Python/torch runtime itself (before_load_bytes)",
    )


def _result(
    run_id: str,
    artifact: Artifact,
    description: RuntimeDescription,
    rig,
    options: BenchOptions,
    stream: TokenStream,
    quality: QualityMetrics | None,
    speed: list[SpeedPoint],
    memory: MemoryMetrics | None,
    roof: Roofline | None,
    tasks=None,
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
        quantlab_version=quantlab.__version__,
        artifact=artifact_ref(artifact),
        runtime=description,
        rig=rig_ref(rig),
        settings=BenchSettings(
            dataset=stream.source,
            n_tokens=len(stream.ids),
            token_fingerprint=token_fingerprint(stream.ids),
            ctx=options.ctx,
            batch_sizes=options.batch_sizes,
            prompt_tokens=options.prompt_tokens,
            new_tokens=options.new_tokens,
            warmup=options.warmup,
            repeats=options.repeats,
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


def rig_ref(rig) -> RigRef:
    return RigRef(
        name=rig.name, description=rig.description, price_per_hour=rig.price_per_hour, price_note=rig.price_note
    )
