"""The command-line side of the fuzz properties: `quantlab ...` run as a user runs it on a malformed input exits 1
with one `error:` line (the library's own message) and writes nothing; click's own refusal of an option's type is
its usage error (exit code 2), which is the CLI convention. Shared by tests/test_fuzz_cli.py and
benchmarks/crosschecks/fuzz_inputs.py; imports no pytest.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.fuzz_properties import ACCEPTED, ERROR, Violation

STEP = re.compile(r"^\d\d:\d\d:\d\d ")  # a progress line, as tests/conftest.py's error_lines skips them
USAGE = "usage error (exit 2)"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "GGML_NO_BACKTRACE": "1"}


def quantlab(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """As tests/conftest.py's run_cli: a fresh process, real exit code, real stdout/stderr."""
    command = [sys.executable, "-m", "quantlab.cli", *args]
    env = {**os.environ, **OFFLINE}
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env, check=False)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time: what a command must leave as it was."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def check_command(
    proc: subprocess.CompletedProcess, before: dict, after: dict, *, library: str, message: str | None = None
) -> str:
    """The outcome of one command, given what the library made of the same input (`library`, and its error
    `message`); a Violation where the command broke the contract."""
    if "Traceback" in proc.stderr or proc.returncode < 0 or proc.returncode > 2:
        raise Violation(f"exit {proc.returncode} with: {proc.stderr[-800:]!r}")
    if before != after:
        changed = sorted(set(before.items()) ^ set(after.items()))
        raise Violation(f"the command wrote or changed {changed[:5]} (exit {proc.returncode})")
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip() and not STEP.match(ln)]
    if any(ln.startswith("error: unexpected ") for ln in lines):  # the CLI's one line for an exception not ours
        raise Violation(f"an exception quantlab did not anticipate: {lines}")
    if proc.returncode == 2:
        if "Usage:" not in proc.stderr or "Error" not in proc.stderr:
            raise Violation(f"exit 2 without click's usage error: {proc.stderr[-500:]!r}")
        return USAGE
    if library == ERROR:
        if proc.returncode != 1 or len(lines) != 1 or not lines[0].startswith("error: "):
            raise Violation(f"a malformed input gave exit {proc.returncode} and: {proc.stderr[-800:]!r}")
        if message is not None and lines[0] != f"error: {message}":
            raise Violation(f"the command said {lines[0]!r}, the library {message!r}")
        return ERROR
    if proc.returncode == 1 and (len(lines) != 1 or not lines[0].startswith("error: ")):
        raise Violation(f"a failure that is not one error line: {proc.stderr[-800:]!r}")
    return ACCEPTED if proc.returncode == 0 else ERROR


def run_checked(args: list[str], cwd: Path, *, library: str, message: str | None = None) -> str:
    """Run `quantlab ARGS` in `cwd` and check it (nothing under `cwd` may change)."""
    before = snapshot(cwd)
    proc = quantlab(*args, cwd=cwd)
    return check_command(proc, before, snapshot(cwd), library=library, message=message)
