"""Files: written whole or not at all, hashed, and locked between processes.

A report, a manifest or a cache entry cut short by a crash or a kill would be read later as if it were whole
(a truncated manifest makes a finished artifact look corrupt, a truncated cache entry is trusted), so every
file quantlab writes in one piece goes through `write_atomic`: the old content or the new, never a mix.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to `path` through a temporary sibling, fsynced, then `os.replace`d.

    The sibling lives in the same directory because a rename is only atomic within one file system; its name is
    unique per call, so two processes writing the same file cannot interleave; it is created with the mode a
    plain `open(path, "w")` would give (0666 less the umask), so a report is as readable as before; and it is
    removed if anything fails before the rename, so a failed write leaves the old file and nothing else.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    """Persist the rename itself: without it a power loss can bring back the old file after we returned."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # a platform that cannot open directories (Windows): the rename is as durable as it gets
    try:
        with suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """One holder at a time of `lock_path` across processes (a cache being filled: a second process waits, then
    finds the work done). The kernel releases it when the holder dies, so a killed process never leaves it held."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Held(Exception):
    """`exclusive_or_fail` found the lock held; its message says by which process."""


@contextmanager
def exclusive_or_fail(lock_path: Path) -> Iterator[None]:
    """Like `exclusive`, but raises `Held` (naming the holder's pid) instead of waiting: for work two processes
    must not do side by side at all."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise Held(f"held by process {holder}") from None
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
