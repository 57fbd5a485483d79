"""What a timed benchmark on a shared machine needs: a quiet machine, no other timed run beside it, and no child
process left behind.

The hosts are 2-core machines where other jobs run; a figure timed while another benchmark (or a build) runs says
more about that job than about the code. `quiet_and_locked` holds the one lock every timed benchmark takes
(`flock /tmp/quantlab-timing.lock`, the same lock `flock(1)` takes from a shell) and waits for the load to fall;
`own_group` starts a server or tool in its own process group and kills the whole group however the block ends.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from benchmarks.lib.console import log

LOCK = "/tmp/quantlab-timing.lock"


@contextmanager
def quiet_and_locked(max_wait: float = 600.0, below: float = 1.0, poll: float = 30.0):
    """Hold the timing lock, then wait for the 1-minute load below `below` (polled every `poll` s, `max_wait` at
    most; then run anyway). Yields the load the timed block started at, for the record."""
    with open(LOCK, "w") as lock:
        log(f"waiting for {LOCK} ...")
        fcntl.flock(lock, fcntl.LOCK_EX)
        deadline = time.monotonic() + max_wait
        while os.getloadavg()[0] >= below and time.monotonic() < deadline:
            log(f"1-minute load {os.getloadavg()[0]:.2f} ≥ {below}: waiting")
            time.sleep(poll)
        log(f"timed runs start at 1-minute load {os.getloadavg()[0]:.2f}")
        yield os.getloadavg()[0]


@contextmanager
def own_group(argv: list[str], log_path: Path):
    """`argv` as a child in its own session (process group), its output appended to `log_path`; on leaving the
    block (normally, on an error, on Ctrl-C, or on SIGTERM where the caller turns it into SystemExit) the whole
    group gets SIGTERM, then SIGKILL, so no server or worker process outlives the benchmark."""
    with open(log_path, "ab") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
