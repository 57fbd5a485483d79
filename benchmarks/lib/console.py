"""What a benchmark prints: one PASS/FAIL/INFO line per check of its targets, timestamped progress lines, and
timed steps (each step's seconds also kept for the record where the caller asks)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
START = time.monotonic()  # imported at the benchmark's start: the log line's elapsed seconds count from here


def check(ok: bool | None, text: str) -> None:
    """One line per target: PASS or FAIL where the benchmark checks it, INFO where it only reports."""
    print(f"{'INFO' if ok is None else 'PASS' if ok else 'FAIL'} {text}", flush=True)


def log(message: str) -> None:
    """A progress line with the wall-clock time and the seconds since the benchmark started, so a log read later
    (a lent GPU's, say) shows where the time went."""
    print(f"{time.strftime('%H:%M:%S')} +{time.monotonic() - START:4.0f}s {message}", flush=True)


def timed(name: str, fn: Callable[[], T], seconds: dict[str, float] | None = None) -> T:
    """Run one step between two log lines; its wall seconds go to `seconds[name]` even if it fails, so a record
    saved after a failure still says how long each step took."""
    log(f"{name} ...")
    started = time.monotonic()
    try:
        return fn()
    finally:
        took = round(time.monotonic() - started, 1)
        if seconds is not None:
            seconds[name] = took
        log(f"{name}: {took} s")
