"""Writing and reading a reference file (the layout is in the package docstring).

The file is written to a temporary name beside its destination and renamed into place at the end, so a killed
run leaves no reference that looks whole. Reading checks everything a damaged or foreign file could get wrong
before any model loads: the safetensors header, that the file is as long as the header says, that the tensors
are the two this layout has, and (`check_stream`) that it was made for the stream, ctx and protocol being
measured; each window's rows are checked against their sha256 as they are read.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quantlab.errors import ReferenceFileError, describe_validation_error, exception_line
from quantlab.results.provenance import TextSource

FORMAT = "quantlab-reference/1"
ENCODING = "float32 log-softmax rows, exact (4 bytes per scored token per vocabulary entry)"
METADATA_KEY = "quantlab.reference"
_MAX_HEADER = 100 * 1024 * 1024  # a header this long is not one this module wrote
_PLACEHOLDER = "0" * 64


class ReferenceHeader(BaseModel):
    """What a reference was made from: equal headers but for the checksums mean interchangeable files."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["quantlab-reference/1"] = FORMAT
    encoding: str = ENCODING
    protocol: str  # the quality protocol's statement (results.metrics.PROTOCOL)
    ctx: int = Field(ge=2)
    windows: int = Field(ge=1)
    vocab: int = Field(ge=1)
    tokens_fingerprint: str  # corpus.token_fingerprint of the scored windows' ids, in order
    text: TextSource
    tokenizer: str
    baseline_digest: str
    baseline_label: str
    baseline_load: str  # how the baseline was loaded (runtime, device kind, dtype, KV cache, GPUs): its logits' source
    quantlab_version: str
    window_sha256: list[str] = Field(default_factory=list)  # of each window's logprobs rows, as stored

    @property
    def ids_bytes(self) -> int:
        return self.windows * self.ctx * 4

    @property
    def window_bytes(self) -> int:
        """One window's rows: every position but the last, float32 over the vocabulary."""
        return (self.ctx - 1) * self.vocab * 4

    def key(self) -> str:
        return content_key(
            self.protocol, self.ctx, self.windows, self.tokens_fingerprint, self.baseline_digest, self.baseline_load
        )


def content_key(
    protocol: str, ctx: int, windows: int, tokens_fingerprint: str, baseline_digest: str, baseline_load: str
) -> str:
    """The content address: what the numbers depend on, not who wrote them or when. The vocabulary is the
    baseline's, so its digest covers it; how it was loaded is part of it, since a baseline loaded on another
    kind of device or in another dtype gives other logits (enough to move a near-lossless cell's KLD by 1%)."""
    parts = [FORMAT, ENCODING, protocol, ctx, windows, tokens_fingerprint, baseline_digest, baseline_load]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def scored_windows(ids: np.ndarray, ctx: int) -> tuple[int, str]:
    """How many whole windows of `ctx` the stream scores (a short tail is dropped) and the fingerprint of their
    ids: what a reference's header records and what a bench checks it against."""
    from quantlab.corpus import token_fingerprint

    count = len(ids) // ctx if ctx >= 2 else 0
    return count, token_fingerprint(np.asarray(ids[: count * ctx]))


def reference_name(key: str) -> str:
    return f"reference-{key}.safetensors"


def _layout(header: ReferenceHeader) -> bytes:
    """The safetensors header for these shapes, padded with spaces to a multiple of 8 bytes as safetensors does."""
    ids_bytes = header.ids_bytes
    tensors = {
        "ids": {"dtype": "I32", "shape": [header.windows, header.ctx], "data_offsets": [0, ids_bytes]},
        "logprobs": {
            "dtype": "F32",
            "shape": [header.windows * (header.ctx - 1), header.vocab],
            "data_offsets": [ids_bytes, ids_bytes + header.windows * header.window_bytes],
        },
        "__metadata__": {METADATA_KEY: header.model_dump_json()},
    }
    text = json.dumps(tensors, separators=(",", ":")).encode()
    return text + b" " * (-len(text) % 8)


def write_reference(path: Path, header: ReferenceHeader, ids: np.ndarray, rows: Iterable[np.ndarray]) -> Path:
    """Write `rows` (one float32 [ctx − 1, vocab] array per window, in order) for the windows `ids` [windows, ctx]
    to `path`, whole or not at all. The header's checksums are filled in as the rows are written.

    Each window is hashed and written on a thread while `rows` computes the next one (both release the GIL), so
    making a reference costs about what scoring the baseline once does; the price is one more window's rows
    alive, two in all. The file is fsynced once, at the end: flushing each window as it is written made the
    kernel's writeback compete with the forward for a 2-core host's CPU (1B model: +11% of scoring's wall time
    against +8%)."""
    ids = np.ascontiguousarray(ids, dtype="<i4")
    if ids.shape != (header.windows, header.ctx):
        raise ReferenceFileError(f"reference windows are {ids.shape}, the header says {header.windows}×{header.ctx}")
    draft = header.model_copy(update={"window_sha256": [_PLACEHOLDER] * header.windows})
    size = len(_layout(draft))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sums: list[str] = []
    try:
        with open(tmp, "wb") as fh, ThreadPoolExecutor(1, thread_name_prefix="reference-writer") as writer:

            def store(block: np.ndarray) -> str:
                fh.write(block)
                return hashlib.sha256(block).hexdigest()  # the array's own buffer: no copy of a window

            fh.seek(8 + size)
            fh.write(ids.tobytes())
            pending: Future[str] | None = None
            for block in rows:
                block = np.ascontiguousarray(block, dtype="<f4")
                if block.shape != (header.ctx - 1, header.vocab):
                    raise ReferenceFileError(
                        f"window {len(sums) + (pending is not None)} has log-probabilities of shape "
                        f"{block.shape}, not ({header.ctx - 1}, {header.vocab})"
                    )
                if pending is not None:
                    sums.append(pending.result())
                pending = writer.submit(store, block)
                del block  # the writer holds it until stored; rows computes the next window meanwhile
            if pending is not None:
                sums.append(pending.result())
            if len(sums) != header.windows:
                raise ReferenceFileError(f"got {len(sums)} windows of log-probabilities for {header.windows}")
            final = _layout(header.model_copy(update={"window_sha256": sums}))
            assert len(final) == size  # sha256 hex digests are as long as the placeholders
            fh.seek(0)
            fh.write(struct.pack("<Q", size) + final)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class Reference:
    """An opened reference file, checked whole but for the rows (each window's are checked when read)."""

    def __init__(self, path: Path, header: ReferenceHeader, data_start: int) -> None:
        self.path, self.header, self._start = path, header, data_start

    @classmethod
    def open(cls, path: str | Path) -> Reference:
        path = Path(path)
        try:
            with open(path, "rb") as fh:
                head = fh.read(8)
                (size,) = struct.unpack("<Q", head) if len(head) == 8 else (None,)
                if size is None or size > _MAX_HEADER:
                    raise ReferenceFileError(f"{path}: not a safetensors reference file")
                raw = fh.read(size)
            length = path.stat().st_size
        except OSError as exc:
            raise ReferenceFileError(f"cannot read reference {path}: {exception_line(exc)}") from None
        if len(raw) < size:
            raise ReferenceFileError(f"{path}: cut short inside its header")
        header = _parse(path, raw)
        if raw.rstrip(b" ") != _layout(header).rstrip(b" "):
            raise ReferenceFileError(f"{path}: its tensors are not the layout of a {FORMAT} file")
        expected = 8 + size + header.ids_bytes + header.windows * header.window_bytes
        if length != expected:
            raise ReferenceFileError(f"{path}: cut short or padded: {length} bytes where its header says {expected}")
        return cls(path, header, 8 + size)

    def ids(self) -> np.ndarray:
        """The scored windows, [windows, ctx] int64."""
        h = self.header
        flat = np.fromfile(self.path, dtype="<i4", count=h.windows * h.ctx, offset=self._start)
        return flat.reshape(h.windows, h.ctx).astype(np.int64)

    def logprobs(self, window: int) -> np.ndarray:
        """Window `window`'s rows, [ctx − 1, vocab] float32, checked against their sha256: one block of them all
        (unpacking reads the generator to its end, where the check is)."""
        (rows,) = self.logprob_blocks(window, rows=self.header.ctx - 1)
        return rows

    def logprob_blocks(self, window: int, rows: int) -> Iterator[np.ndarray]:
        """Window `window`'s rows, `rows` at a time ([≤ rows, vocab] float32 each), so that scoring holds one
        block of the baseline's rows instead of the window's. The sha256 is checked after the last block: a
        consumer must read them all, and a corrupt window raises there, before its figures are used."""
        h = self.header
        digest = hashlib.sha256()
        with open(self.path, "rb") as fh:
            fh.seek(self._start + h.ids_bytes + window * h.window_bytes)
            for start in range(0, h.ctx - 1, rows):
                count = min(rows, h.ctx - 1 - start)
                data = bytearray(count * h.vocab * 4)  # writable, so torch can wrap it without a copy
                if fh.readinto(data) != len(data):
                    raise ReferenceFileError(f"{self.path}: window {window}'s log-probabilities are cut short")
                digest.update(data)
                yield np.frombuffer(data, dtype="<f4").reshape(count, h.vocab)
        if digest.hexdigest() != h.window_sha256[window]:
            raise ReferenceFileError(f"{self.path}: window {window}'s log-probabilities are corrupt (sha256 differs)")

    def check_stream(self, ids: np.ndarray, ctx: int, protocol: str) -> None:
        """Refuse, before anything loads, a reference made for another token stream, ctx or protocol."""
        h = self.header
        count, fingerprint = scored_windows(ids, ctx)
        if h.protocol != protocol:
            raise ReferenceFileError(f"{self.path} was made under another quality protocol than this bench's")
        if h.ctx != ctx:
            raise ReferenceFileError(f"{self.path} was made at --ctx {h.ctx}; this bench scores at --ctx {ctx}")
        if h.windows != count or h.tokens_fingerprint != fingerprint:
            raise ReferenceFileError(
                f"{self.path} was made on another token stream ({h.windows} windows of {h.text.name}, tokens "
                f"{h.tokens_fingerprint}); this bench scores {count} windows, tokens {fingerprint}"
            )


def _parse(path: Path, raw: bytes) -> ReferenceHeader:
    from quantlab.results.io import decode_json

    try:
        top = decode_json(raw.decode("utf-8"))
        meta = top.get("__metadata__") if isinstance(top, dict) else None
        text = meta.get(METADATA_KEY) if isinstance(meta, dict) else None
        if not isinstance(text, str):
            raise ReferenceFileError(f"{path}: a safetensors file, but not a quantlab reference")
        return ReferenceHeader.model_validate(decode_json(text))
    except ValidationError as exc:
        raise ReferenceFileError(f"{path}: {describe_validation_error(exc)}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReferenceFileError(f"{path}: its header is not valid JSON ({exception_line(exc)})") from None
