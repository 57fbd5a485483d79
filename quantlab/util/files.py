"""Writing files so that a reader never sees half of one.

A report, a manifest or a cache entry cut short by a crash or a kill would be read later as if it were whole
(a truncated manifest makes a finished artifact look corrupt, a truncated cache entry is trusted), so every
file quantlab writes in one piece goes through `write_atomic`: the old content or the new, never a mix.
"""

from __future__ import annotations

import os
import secrets
from contextlib import suppress
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
