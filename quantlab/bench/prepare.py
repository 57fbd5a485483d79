"""Everything a bench checks before the first model loads: the artifacts and their runtimes, the device and the
rig, and the one token stream each artifact is scored on.

A mismatch found half-way (a baseline with another tokenizer, a task a runtime cannot score) would leave a
results file with half a comparison in it, so every such check runs here, first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from quantlab.artifact import Artifact, load_artifact
from quantlab.bench.config import BenchConfig
from quantlab.bench.quality import windows
from quantlab.corpus import TokenStream, load_text, tokenize
from quantlab.env import host_info
from quantlab.errors import BenchError, RigError
from quantlab.reference import Reference
from quantlab.results.metrics import PROTOCOL
from quantlab.rigs import Rig, check_matches, get_rig
from quantlab.runtimes import LoadRequest, Runtime, default_device, select_runtime
from quantlab.runtimes.placement import gpu_span


def tokenizer_dir(artifact: Artifact) -> Path:
    """The tokenizer the source model was published with: saved inside HF artifacts, else the source."""
    if (artifact.path / "tokenizer_config.json").is_file():
        return artifact.path
    return Path(artifact.manifest.source.path)


class _Streams:
    """Tokenizes the dataset once per distinct tokenizer."""

    def __init__(self, text: str, source, max_tokens: int) -> None:
        self.text, self.source, self.max_tokens = text, source, max_tokens
        self._cache: dict[str, TokenStream] = {}

    def for_artifact(self, artifact: Artifact) -> TokenStream:
        from transformers import AutoTokenizer

        directory = tokenizer_dir(artifact)
        key = tokenizer_key(directory)
        if key not in self._cache:
            tokenizer = AutoTokenizer.from_pretrained(directory)
            ids = tokenize(tokenizer, self.text, self.max_tokens)
            self._cache[key] = TokenStream(ids=ids, source=self.source, tokenizer=str(directory))
        return self._cache[key]


def tokenizer_key(directory: Path) -> str:
    digest = hashlib.sha256()
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        file = directory / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return host_info().cpu


def check_device(device: str, gpus: int = 1) -> None:
    import torch

    if device == "cpu":
        if gpus > 1:
            raise BenchError(f"--tensor-parallel {gpus} spans GPUs; this bench runs on the CPU")
        return
    if not device.startswith("cuda"):
        raise BenchError(f"--device must be cpu or cuda[:N], not {device!r}")
    if not torch.cuda.is_available():
        raise BenchError(f"--device {device}: this host has no CUDA device")
    if gpu_span(device, gpus)[-1] >= torch.cuda.device_count():
        span = f" and the {gpus - 1} after it (--tensor-parallel {gpus})" if gpus > 1 else ""
        raise BenchError(f"--device {device}{span}: this host has {torch.cuda.device_count()} CUDA device(s)")


def resolve_device(config: BenchConfig) -> str:
    device = config.device or default_device()
    check_device(device, config.tensor_parallel)
    return device


def resolve_rig(config: BenchConfig, device: str) -> Rig:
    """The rig a measurement on `device` is labelled and priced with; `cpu` by default on a CPU host."""
    name_of_device = device_name(device)
    rig_name = config.rig or ("cpu" if device == "cpu" else None)
    if rig_name is None:
        raise RigError(f"benching on {name_of_device}: name the rig with --rig (see 'quantlab rigs')")
    rig = get_rig(rig_name, rigs_file=config.rigs_file, price_per_hour=config.price_per_hour)
    check_matches(rig, device, name_of_device)
    check_span(rig, config.tensor_parallel)
    return rig


def check_span(rig: Rig, gpus: int) -> None:
    """A measurement is labelled (and priced) with the rig it used: a model spanning N GPUs, with a rig of N."""
    if rig.device == "cuda" and rig.n_gpus != gpus:
        raise RigError(
            f"rig {rig.name!r} has {rig.n_gpus} GPU(s) and the model spans {gpus} (--tensor-parallel): a "
            "measurement is priced as the rig it used, so name a rig of exactly that many GPUs"
        )


@dataclass
class Subject:
    """One artifact as the bench measures it: loaded manifest, runtime, token stream, and how each of its loads
    is asked for (checked against the runtime before any loads; None: that pass does not run)."""

    artifact: Artifact
    runtime: Runtime
    stream: TokenStream
    quality: LoadRequest | None = None
    speed: LoadRequest | None = None


@dataclass
class Prepared:
    subjects: list[Subject]
    baseline: Subject | None  # a baseline artifact, loaded once to make its reference
    device: str
    rig: Rig
    reference: Reference | None = None  # a baseline given as its reference file


def prepare(artifacts: list[str | Path], baseline: str | Path | None, config: BenchConfig) -> Prepared:
    loaded = [load_artifact(a) for a in artifacts]
    if not loaded:
        raise BenchError("no artifact to bench")
    given = baseline is not None and config.quality
    reference = Reference.open(baseline) if given and Path(baseline).is_file() else None
    base = load_artifact(baseline) if given and reference is None else None
    device = resolve_device(config)
    rig = resolve_rig(config, device)
    text, source = load_text(config.dataset, "test")
    streams = _Streams(text, source, config.max_tokens)

    def subject(artifact: Artifact) -> Subject:
        return Subject(artifact, select_runtime(artifact, config.runtime), streams.for_artifact(artifact))

    subjects = [_requests(subject(a), config, device) for a in loaded]
    base_subject = _baseline_request(subject(base), config, device) if base is not None else None
    for s in subjects:
        windows(s.stream.ids, config.ctx)
        if base_subject is not None and not np.array_equal(s.stream.ids, base_subject.stream.ids):
            raise BenchError(
                f"baseline {base.path} and {s.artifact.path} tokenize the dataset differently: "
                "they are not the same source model, so their logits cannot be compared"
            )
    for s in subjects if reference is not None else []:
        reference.check_stream(s.stream.ids, config.ctx, PROTOCOL)
    everyone = [*subjects, *([base_subject] if base_subject else [])]
    for s in everyone:
        if config.tasks and not s.runtime.capabilities.scores_tasks:
            raise BenchError(
                f"--tasks scores a transformers model; {s.artifact.path.name} is served by "
                f"{s.runtime.name} (GGUF task accuracy is not supported)"
            )
        for request in (s.quality, s.speed):
            problem = request and s.runtime.refusal(s.artifact, request)
            if problem:
                raise BenchError(problem)
    if config.tasks:
        from quantlab.bench.tasks import check_tasks

        check_tasks(config.tasks, config.task_path)
    return Prepared(subjects=subjects, baseline=base_subject, device=device, rig=rig, reference=reference)


def _requests(subject: Subject, config: BenchConfig, device: str) -> Subject:
    """An artifact's loads: quality with the asked KV type and kernel, speed also compiled where asked."""
    load = LoadRequest(device, config.dtype, config.kv_cache_dtype, gpus=config.tensor_parallel, kernel=config.kernel)
    subject.quality = load if config.quality else None
    subject.speed = replace(load, compiled=decode_compiled(config, subject, device)) if config.speed else None
    return subject


def _baseline_request(subject: Subject, config: BenchConfig, device: str) -> Subject:
    """The baseline is loaded for its logits only, with the format's own kernel; with --kv-cache-dtype, a runtime
    that has cache types gives it an explicit f16 cache, so it differs from the artifacts in the cache type alone
    (an explicit type also sets the attention path, see the runtime)."""
    kv = "f16" if config.kv_cache_dtype and "f16" in subject.runtime.capabilities.kv_cache_dtypes else None
    subject.quality = LoadRequest(device, config.dtype, kv, gpus=config.tensor_parallel)
    return subject


def decode_compiled(config: BenchConfig, subject: Subject, device: str) -> bool:
    """--compile as asked (a runtime without a compiled loop refuses it), or by default compiled on CUDA (where
    the eager loop measures Python) for runtimes that can."""
    if config.compile is not None:
        return config.compile
    return device.startswith("cuda") and subject.runtime.capabilities.compiles and config.tensor_parallel == 1
