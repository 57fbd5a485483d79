"""One server process, started and always stopped by quantlab.

Guarantees, in order of how they are kept:
- The server runs in its own session (process group): stopping it signals the whole group, so helper
  processes an engine forks (tokenizer pools, vLLM's engine core) go with it. SIGTERM first, SIGKILL after a
  grace period.
- `ServerProcess` is a context manager and `stop()` runs on every exit path: success, a failed load, an
  exception, Ctrl-C (KeyboardInterrupt) and SIGTERM (the CLI turns it into SystemExit, see
  `quantlab.util.signals.exit_on_sigterm`).
- On Linux the child also asks the kernel to SIGKILL it if quantlab itself dies without running any Python
  (SIGKILL, OOM kill): PR_SET_PDEATHSIG. That covers the direct child, which is the server for every engine
  quantlab runs on the CPU.
- Readiness means answering HTTP on the health path *and* completing one real request (some servers load the
  model lazily on the first one); a process that exits while starting is reported with the tail of its log.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from quantlab.errors import ServeError
from quantlab.serve.engines import LOOPBACK, LaunchPlan

STOP_GRACE_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            raise ServeError(
                f"port {port} on {LOOPBACK} is in use ({exc.strerror}); pick another with --port"
            ) from None


def die_with_parent() -> None:
    """A `preexec_fn` (runs in the child between fork and exec): a parent killed outright (SIGKILL, OOM, a Ray
    worker whose task was force-cancelled) takes the child with it."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _die_with_parent() -> None:
    """A server's `preexec_fn`: its own session (so its helpers can be signalled as a group), and it dies with us."""
    os.setsid()
    die_with_parent()


class ServerProcess:
    def __init__(self, plan: LaunchPlan, *, log_path: Path | None = None, name: str = "server") -> None:
        self.plan = plan
        self.name = name
        self._own_log = log_path is None
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="quantlab-server-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.plan.command,
                env=self.plan.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 3) -> str:
        """The server's own last words: the last error line if there is one (a traceback's last line names
        the failure), else its last few lines."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        kept = [ln.strip() for ln in text.splitlines() if ln.strip() and set(ln.strip()) - set("^~ ")]
        errors = [
            ln for ln in kept if re.search(r"(Error|Exception|error:|what\(\))", ln) and not ln.startswith("File ")
        ]
        return errors[-1] if errors else " | ".join(kept[-lines:])

    def check_alive(self) -> None:
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            tail = self.log_tail()
            raise ServeError(f"{self.name} exited with code {code} while starting" + (f": {tail}" if tail else ""))

    def wait_ready(
        self,
        timeout_s: float,
        warmup: Callable[[], None] | None = None,
        on_wait: Callable[[float], None] = lambda _: None,
    ) -> float:
        """Block until the server answers (and, if given, `warmup` succeeds); the seconds it took."""
        start = time.monotonic()
        url = self.plan.base_url + self.plan.health_path
        with httpx.Client(timeout=2.0) as client:
            while True:
                self.check_alive()
                elapsed = time.monotonic() - start
                if elapsed > timeout_s:
                    raise ServeError(
                        f"{self.name} did not answer {url} within {timeout_s:.0f} s"
                        + (f"; last log lines: {self.log_tail()}" if self.log_tail() else "")
                    )
                try:
                    if client.get(url).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                on_wait(elapsed)
                time.sleep(0.25)
        if warmup is not None:
            try:
                warmup()
            except Exception as exc:
                self.check_alive()
                raise ServeError(
                    f"{self.name} answered {url} but its first request failed: {exc}"
                    + (f"; last log lines: {self.log_tail()}" if self.log_tail() else "")
                ) from exc
        return time.monotonic() - start

    def stop(self) -> int | None:
        """Stop the whole process group; the exit code of the server (None if it never started)."""
        proc = self.proc
        if proc is None:
            return None
        # setsid in the child made its pid the group id; the group outlives its leader while helpers run.
        helpers = self._helpers(proc.pid)
        self._signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)
        # Whatever is left of the group (the server itself after the grace period, or its children) is killed.
        self._signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        self._wait_dead(helpers)
        if self._own_log:
            self.log_path.unlink(missing_ok=True)
        return proc.returncode

    @staticmethod
    def _helpers(pid: int) -> list:
        import psutil

        try:
            return psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    @staticmethod
    def _wait_dead(procs: list, timeout_s: float = 5.0) -> None:
        """A signal is delivered asynchronously: return once every helper has died (exited or a zombie), so
        nothing the server started is still running when stop() returns."""
        import psutil

        deadline = time.monotonic() + timeout_s
        for proc in procs:
            while time.monotonic() < deadline:
                try:
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        break
                except psutil.NoSuchProcess:
                    break
                time.sleep(0.02)

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
