"""One command run as a fresh child process and measured from outside: wall seconds, the peak resident set size
the kernel recorded for it (`os.wait4`'s `ru_maxrss`, which is the largest of the child and every descendant it
waited for: a bench's speed worker, llama.cpp's tools), the load averages before and after, and a timeline of
resident memory sampled while it runs, each sample labelled with the last progress line the child printed, so a
peak can be put down to the phase that made it (loading, a perplexity window, the save).

Measuring from outside, not inside, is the point: the figure is what the command costs a user, imports and
libraries included, and nothing the benchmark itself holds is counted.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_SECONDS = 0.25
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class ChildRun:
    """What one measured command did; `timeline` rows are (seconds since start, RSS of the child, largest RSS of
    its descendants, the last progress line), bytes."""

    command: list[str]
    returncode: int
    wall_s: float
    peak_rss: int
    loadavg_before: tuple[float, float, float]
    loadavg_after: tuple[float, float, float]
    output: list[str] = field(default_factory=list)
    timeline: list[tuple[float, int, int, str]] = field(default_factory=list)

    def tail(self, lines: int = 12) -> str:
        return "\n".join(self.output[-lines:])


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except OSError:
                kids = []
            found += kids
            todo += kids
    return found


def _sample(pid: int, run: ChildRun, started: float, done: threading.Event) -> None:
    while not done.wait(SAMPLE_SECONDS):
        others = [_rss(p) for p in _descendants(pid)]
        last = run.output[-1] if run.output else ""
        run.timeline.append((round(time.monotonic() - started, 2), _rss(pid), max(others, default=0), last))


def _read(stream, run: ChildRun) -> None:
    for line in stream:
        text = line.rstrip("\n")
        if text.strip():
            run.output.append(text)


def run_child(command: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> ChildRun:
    """Run `command` to its end and measure it (see the module docstring); stdout and stderr are kept as lines."""
    run = ChildRun(command, -1, 0.0, 0, os.getloadavg(), (0.0, 0.0, 0.0))
    started = time.monotonic()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd, errors="replace"
    )
    done = threading.Event()
    reader = threading.Thread(target=_read, args=(proc.stdout, run), daemon=True)
    sampler = threading.Thread(target=_sample, args=(proc.pid, run, started, done), daemon=True)
    reader.start()
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    run.wall_s = round(time.monotonic() - started, 2)
    done.set()
    reader.join()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    run.returncode = proc.returncode
    run.peak_rss = usage.ru_maxrss * 1024  # Linux reports kilobytes
    run.loadavg_after = os.getloadavg()
    return run


def phase_peaks(run: ChildRun, phase_of) -> dict[str, int]:
    """The largest sampled RSS (child or any one descendant) per phase, `phase_of(line)` naming the phase a
    progress line starts (None: the line starts none)."""
    peaks: dict[str, int] = {}
    for _, own, other, line in run.timeline:
        phase = phase_of(line) or "start"
        peaks[phase] = max(peaks.get(phase, 0), own, other)
    return peaks
