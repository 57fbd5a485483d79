"""What the user's terminal shows: quantlab's own progress, tables and errors, and nothing of the libraries.

Libraries write to the process's file descriptors 1 and 2 from Python (tqdm, loguru, warnings) and from C
(torch's profiler prints `USDT ... profiler_start` on fd 2), and so do the servers and workers quantlab starts.
Redirecting `sys.stderr` catches only the first kind, so `library_output()` points fds 1 and 2 at a log file
while a command works, and quantlab writes through duplicates of the original descriptors taken at start-up.
`--debug` leaves everything on the terminal.

Progress (`steps`): on a terminal, one live line; elsewhere (CI logs, pipes, nohup) one timestamped line per
step, because a transient bar writes nothing there and a 20-minute run would look hung.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


def _own_stream(fd: int):
    """A writer on a duplicate of `fd` taken now: it keeps reaching the terminal (or pipe) after fd is redirected."""
    try:
        return os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace", closefd=True)
    except OSError:  # no such descriptor (an embedding host): fall back to the Python stream
        return sys.stdout if fd == 1 else sys.stderr


_OUT = _own_stream(1)
_ERR = _own_stream(2)
console = Console(file=_ERR)  # progress, notes and errors
# Wide enough for the methods/rigs tables when piped (rich would wrap them at 80 columns).
out_console = Console(file=_OUT, width=None if _OUT.isatty() else 200)
state = {"debug": False, "log": None}
KEEP_LOGS = 20


def quiet_libraries() -> None:
    """Library chatter (tqdm bars, loguru INFO) costs time even when it goes to the log; --debug keeps it."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "ERROR")  # not _DISABLED: GPTQ then fails to log METRIC
    import warnings

    warnings.filterwarnings("ignore")


def _log_file() -> Path:
    from quantlab.paths import cache_dir

    folder = cache_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    for old in sorted(folder.glob("quantlab-*.log"))[:-KEEP_LOGS]:
        old.unlink(missing_ok=True)
    return folder / f"quantlab-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"


@contextmanager
def library_output() -> Iterator[None]:
    """Send everything written to fds 1 and 2 (by Python, C code and child processes) to a log file while the
    block runs; quantlab's own consoles keep writing to the terminal. The log's path is in `state["log"]`."""
    if state["debug"]:
        yield
        return
    path = _log_file()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    state["log"] = path
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, original in zip((1, 2), saved, strict=True):
            os.dup2(original, fd)
            os.close(original)


@contextmanager
def steps(first: str) -> Iterator[Callable[[str], None]]:
    """A progress reporter for a long command, with library output sent to the log meanwhile."""
    live = console.is_terminal
    columns = SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()
    bar = Progress(*columns, console=console, transient=True, disable=not live)
    last = [""]

    def report(message: str) -> None:
        bar.update(task, description=message)
        if not live and message != last[0]:
            console.print(f"{time.strftime('%H:%M:%S')} {message}", highlight=False, markup=False, soft_wrap=True)
        last[0] = message

    with bar, library_output():
        # The first line shows on the live bar only: off a terminal, a request refused before any work (every
        # check runs first) prints its one-line error and nothing else.
        task = bar.add_task(first, total=None)
        last[0] = first
        yield report


def emit(text: str) -> None:
    """Tables go to stdout verbatim: a rich console would re-wrap Markdown rows at the terminal width."""
    _OUT.write(text if text.endswith("\n") else text + "\n")
    _OUT.flush()


def warning(message: str) -> None:
    # escaped: a message quotes file names and library text, where `[...]` is text, not rich markup
    console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)


def error(message: str, *, unexpected: bool = False) -> None:
    """One line; for a failure quantlab did not anticipate, where the libraries' own output went."""
    hint = f" (library output: {state['log']})" if unexpected and state["log"] else ""
    console.print(f"[red]error:[/red] {escape(message + hint)}", highlight=False, soft_wrap=True)
