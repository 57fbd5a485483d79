"""How quantlab's own processes take SIGTERM and Ctrl-C, so every `finally` (server stops, temporary build trees,
locks) runs however the process is stopped.

Standard library only: `quantlab llamacpp build` calls this while `make setup` is still installing quantlab's
dependencies (see the Makefile).
"""

from __future__ import annotations

import functools
import os
import signal


@functools.cache  # one hook per process
def default_sigterm_in_forked_children() -> None:
    """A forked child (lm-eval's bootstrap pool) inherits its parent's SIGTERM handler, and multiprocessing stops
    its workers with SIGTERM: a handler that raises, run where Python ignores exceptions (an at-fork hook), left
    a worker alive and the parent joining it forever (seen: `quantlab run` hung in Pool.terminate). Forked
    children of quantlab's process, or of a Ray worker running a cell, get the default action back."""
    os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))


def exit_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C does, so every `finally` (and thus every server stop) runs.

    Also, `kill -USR1` prints every thread's stack to stderr: how a process that does not stop can be diagnosed
    (CI has seen `quantlab serve` outlive Ctrl-C by a minute; tests/test_gguf_tiny.py sends it then)."""
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    default_sigterm_in_forked_children()
    # A process inherits an ignored SIGINT (started in the background by a non-interactive shell) and a blocked
    # one (spawned by a thread that had it masked): Python then never raises KeyboardInterrupt, and Ctrl-C would
    # leave the server running. CI saw exactly that: `quantlab serve` still sleeping in its wait loop 60 s after
    # SIGINT. Whoever runs `serve` asked for Ctrl-C to stop it, so both are undone here.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
