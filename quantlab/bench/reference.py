"""A baseline's reference, made once from the loaded baseline (or found already made) before any cell loads.

References live in `paths.references_dir()` under their content address (`reference.content_key`): a later bench
on the same stream, ctx and protocol against the same baseline artifact reads the file instead of loading the
baseline again, whichever command made it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from quantlab.artifact import Artifact
from quantlab.bench import records
from quantlab.bench.quality import log_probs, windows
from quantlab.corpus import TokenStream, token_fingerprint
from quantlab.env import quantlab_version
from quantlab.errors import ReferenceFileError
from quantlab.paths import references_dir
from quantlab.reference import Reference, ReferenceHeader, content_key, reference_name, write_reference
from quantlab.results.metrics import PROTOCOL
from quantlab.runtimes.base import LoadRequest, Session


def _scored(stream: TokenStream, ctx: int) -> np.ndarray:
    return np.stack(windows(stream.ids, ctx))


def load_label(runtime: str, request: LoadRequest) -> str:
    """How a baseline is loaded, as far as its logits depend on it (the device's kind, not its index)."""
    kind = request.device.split(":")[0]
    kv = request.kv_cache_dtype or "default"
    return f"{runtime} on {kind}, dtype {request.dtype}, KV cache {kv}, {request.gpus} GPU(s)"


def cached_path(artifact: Artifact, load: str, stream: TokenStream, ctx: int) -> Path:
    scored = _scored(stream, ctx)
    key = content_key(PROTOCOL, ctx, len(scored), token_fingerprint(scored.ravel()), artifact.digest, load)
    return references_dir() / reference_name(key)


def cached(artifact: Artifact, load: str, stream: TokenStream, ctx: int) -> Reference | None:
    """The reference already made for this baseline, load, stream and ctx, if the cache holds one that opens
    whole (a damaged one is made again)."""
    path = cached_path(artifact, load, stream, ctx)
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
        # A window's rows are dropped here as soon as the writer asks for the next (a 128k vocabulary makes them
        # 262 MB at ctx 512): held while the next window is computed, they would add as much to the peak.
        for i, window in enumerate(scored):
            block = log_probs(session.logits(window)).numpy()
            on_window(i + 1, len(scored))
            yield block
            del block

    produced = rows()
    held = [next(produced)]  # the first window tells the vocabulary; handed on below, not kept
    vocab = held[0].shape[1]

    def chained() -> Iterator[np.ndarray]:
        yield held.pop()
        yield from produced

    header = ReferenceHeader(
        protocol=PROTOCOL,
        ctx=ctx,
        windows=len(scored),
        vocab=vocab,
        tokens_fingerprint=token_fingerprint(scored.ravel()),
        text=stream.source,
        tokenizer=stream.tokenizer,
        baseline_digest=artifact.digest,
        baseline_label=records.artifact_ref(artifact).display_label(backend=False),
        baseline_load=load,
        quantlab_version=quantlab_version(),
    )
    path = cached_path(artifact, load, stream, ctx)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_reference(path, header, scored, chained())
    return Reference.open(path)
