"""A baseline's reference, made once from the loaded baseline (or found already made) before any cell loads.

References live in `paths.references_dir()` under their content address (`reference.content_key`): a later bench
on the same stream, ctx and protocol against the same baseline artifact reads the file instead of loading the
baseline again, whichever command made it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from quantlab.artifact import Artifact
from quantlab.bench import records
from quantlab.bench.quality import log_probs, windows
from quantlab.corpus import TokenStream
from quantlab.env import quantlab_version
from quantlab.errors import ReferenceFileError
from quantlab.paths import references_dir
from quantlab.reference import (
    Reference,
    ReferenceHeader,
    content_key,
    reference_name,
    scored_windows,
    write_reference,
)
from quantlab.results.metrics import PROTOCOL
from quantlab.runtimes.base import LoadRequest, Session
from quantlab.util.memory import release_freed_memory


class Shelf(Protocol):
    """Where references are shared between machines without a common filesystem (a Ray run's driver): a bench
    fetches a reference it lacks before it would load the baseline, and publishes one it has."""

    @property
    def where(self) -> str: ...

    def fetch(self, name: str, dest: Path) -> bool: ...

    def publish(self, path: Path) -> bool: ...


def _scored(stream: TokenStream, ctx: int) -> np.ndarray:
    return np.stack(windows(stream.ids, ctx))


def load_label(runtime: str, request: LoadRequest) -> str:
    """How a baseline is loaded, as far as its logits depend on it: the device's kind, not its index, nor how many
    GPUs it spans (an in-process model spans them by a layer split, the same operations on other devices), so a
    70B baseline's reference made on its 2 GPUs is the one its one-GPU cells read."""
    kind = request.device.split(":")[0]
    kv = request.kv_cache_dtype or "default"
    return f"{runtime} on {kind}, dtype {request.dtype}, KV cache {kv}"


def cached_path(artifact: Artifact, load: str, stream: TokenStream, ctx: int) -> Path:
    count, fingerprint = scored_windows(stream.ids, ctx)
    return references_dir() / reference_name(content_key(PROTOCOL, ctx, count, fingerprint, artifact.digest, load))


def cached(path: Path) -> Reference | None:
    """The reference at `path` (its `cached_path`), if the cache holds one that opens whole (a damaged one is made
    again)."""
    try:
        return Reference.open(path) if path.is_file() else None
    except ReferenceFileError:
        return None


def make_reference(
    session: Session,
    artifact: Artifact,
    load: str,
    stream: TokenStream,
    ctx: int,
    on_window: Callable[[int, int], None] = lambda i, n: None,
) -> Reference:
    """Score the baseline `session` (loaded as `load` says) once over the stream's windows and write its
    reference into the references directory."""
    scored = _scored(stream, ctx)

    def rows() -> Iterator[np.ndarray]:
        for i, window in enumerate(scored):
            # yielded unnamed: a name here would hold this window's rows while the next window is computed
            yield log_probs(session.logits(window), overwrite=True).numpy()
            release_freed_memory()
            on_window(i + 1, len(scored))

    produced = rows()
    first = [next(produced)]  # its width is the vocabulary the header needs before any row is written

    def all_rows() -> Iterator[np.ndarray]:
        yield first.pop()  # not held on to while the other windows are computed
        yield from produced

    header = ReferenceHeader(
        protocol=PROTOCOL,
        ctx=ctx,
        windows=len(scored),
        vocab=first[0].shape[1],
        tokens_fingerprint=scored_windows(stream.ids, ctx)[1],
        text=stream.source,
        tokenizer=stream.tokenizer,
        baseline_digest=artifact.digest,
        baseline_label=records.artifact_ref(artifact).display_label(backend=False),
        baseline_load=load,
        quantlab_version=quantlab_version(),
    )
    path = cached_path(artifact, load, stream, ctx)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_reference(path, header, scored, all_rows())
    return Reference.open(path)
