"""Reading and appending results files (JSONL, one `Result` per line).

Appends are sequential and each is one fsynced write, so a kill mid-append can cut short only the last line.
Such a torn line is the expected mark of a killed run, not corruption: readers skip it with a warning that names
it, and the next append (or a resumed run) drops it first. Anything else unreadable is an error.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from quantlab.errors import ResultsError, describe_validation_error
from quantlab.results.records import Result

MAX_DIGITS = 4300  # Python's own limit on converting text to an int


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


def decode_json(text: str) -> Any:
    """`json.loads` for the JSON quantlab writes (results lines, manifests), with every way it can fail as a
    ValueError whose message is one short line. Beyond malformed JSON that is: bare NaN and infinities (not JSON;
    quantlab writes a non-finite measurement as the string "NaN" or "Infinity", `results.schema`), a key given
    twice or one that is not printable text (pydantic writes neither), an integer over Python's 4300 digits,
    nesting deeper than the recursion limit."""
    try:
        return json.loads(
            text, parse_constant=_no_constant, parse_float=_finite, parse_int=_integer, object_pairs_hook=_object
        )
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at column {exc.colno}") from exc
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _integer(text: str) -> int:
    if len(text) > MAX_DIGITS:  # int() would refuse it with a message about sys.set_int_max_str_digits
        raise ValueError(f"an integer of {len(text)} digits is out of range")
    return int(text)


def _object(pairs: list[tuple[str, Any]]) -> dict:
    made = dict(pairs)
    if len(made) != len(pairs):
        twice = next(key for i, (key, _) in enumerate(pairs) if key in dict(pairs[:i]))
        raise ValueError(f"key {twice[:50]!r} given twice")
    for key in made:
        if not key.isprintable():
            raise ValueError(f"key {key[:50]!r} is not printable text")
    return made


def _warn(message: str) -> None:
    warnings.warn(message, TornRecordWarning, stacklevel=3)


def read_results(path: str | Path, *, warn: Callable[[str], None] = _warn) -> list[Result]:
    """Every record of the file; a torn last line is skipped and reported through `warn` (a Python warning by
    default, which a notebook shows; the CLI prints it)."""
    path = Path(path)
    try:
        if not path.is_file():
            raise ResultsError(f"results file {path} does not exist")
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
    except OSError as exc:  # unreadable, or a name the file system refuses (too long, ...)
        raise ResultsError(f"results file {path}: cannot read it ({exc.strerror})") from exc
    results, torn = [], ""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            results.append(Result.model_validate(decode_json(line)))
        except ValueError as exc:
            if lineno == len(lines) and _torn(line, exc):
                torn = f"line {lineno}: skipped, cut short ({len(line)} bytes, no newline: a run killed mid-append)"
                continue
            if isinstance(exc, ValidationError):
                raise ResultsError(f"{path} line {lineno}: {describe_validation_error(exc)}") from exc
            raise ResultsError(f"{path} line {lineno}: not JSON ({exc})") from exc
    if not results:  # the torn line, if any, is said here: one message, not a warning and then an error
        raise ResultsError(f"results file {path} holds no records" + (f" ({torn})" if torn else ""))
    if torn:
        warn(f"{path} {torn}")
    return results


def _torn(line: str, exc: ValueError) -> bool:
    """Whether the last line is what a kill mid-append leaves: the start of a record (`{`), no newline, and not
    a whole JSON value. A line that parses, or starts like no record, is damage, not a kill."""
    whole = isinstance(exc, ValidationError) or "Extra data" in str(exc)
    return not line.endswith("\n") and line.lstrip().startswith("{") and not whole
