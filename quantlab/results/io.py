"""Reading and appending results files (JSONL, one `Result` per line)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError

from quantlab.errors import ResultsError, describe_validation_error
from quantlab.results.records import Result


def append_result(path: str | Path, result: Result) -> None:
    """Append one line and fsync it, so a crash later in the run keeps every finished record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    with open(path, "r+b") as fh:
        fh.truncate(data.rfind(b"\n") + 1)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def read_results(path: str | Path) -> list[Result]:
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"results file {path} does not exist")
    results = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                results.append(Result.model_validate(json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ResultsError(f"{path} line {lineno}: not JSON ({exc.msg})") from exc
            except ValidationError as exc:
                raise ResultsError(f"{path} line {lineno}: {describe_validation_error(exc)}") from exc
    if not results:
        raise ResultsError(f"results file {path} holds no records")
    return results
