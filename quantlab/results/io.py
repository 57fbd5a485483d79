"""Reading and appending results files (JSONL, one `Result` per line).

Appends are sequential and each is one fsynced write, so a kill mid-append can cut short only the last line.
Such a torn line is the expected mark of a killed run, not corruption: readers skip it with a warning that names
it, and the next append (or a resumed run) drops it first. Anything else unreadable is an error.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from quantlab.errors import ResultsError, describe_validation_error
from quantlab.results.records import Result


class TornRecordWarning(UserWarning):
    """The last line of a results file was cut short (a kill mid-append) and was skipped."""


def append_result(path: str | Path, result: Result) -> None:
    """Append one line and fsync it, so a crash later in the run keeps every finished record; a torn last line
    left by an earlier kill is dropped first, so the new record never lands glued to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_tail(path)
    line = result.model_dump_json() + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def repair_tail(path: str | Path) -> bool:
    """Drop a last line cut short by a kill during `append_result` (appends are sequential, so only the last
    line can be partial); True if something was dropped."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "r+b") as fh:
        end = fh.seek(0, os.SEEK_END)
        if end == 0:
            return False
        fh.seek(end - 1)
        if fh.read(1) == b"\n":
            return False
        fh.seek(0)
        data = fh.read()
        fh.truncate(data.rfind(b"\n") + 1)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _warn(message: str) -> None:
    warnings.warn(message, TornRecordWarning, stacklevel=3)


def read_results(path: str | Path, *, warn: Callable[[str], None] = _warn) -> list[Result]:
    """Every record of the file; a torn last line is skipped and reported through `warn` (a Python warning by
    default, which a notebook shows; the CLI prints it)."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"results file {path} does not exist")
    results = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.readlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            results.append(Result.model_validate(json.loads(line)))
        except json.JSONDecodeError as exc:
            if lineno == len(lines) and not line.endswith("\n"):
                warn(
                    f"{path} line {lineno}: skipped, cut short ({len(line)} bytes, no newline: a run killed mid-append)"
                )
                continue
            raise ResultsError(f"{path} line {lineno}: not JSON ({exc.msg})") from exc
        except ValidationError as exc:
            raise ResultsError(f"{path} line {lineno}: {describe_validation_error(exc)}") from exc
    if not results:
        raise ResultsError(f"results file {path} holds no records")
    return results
