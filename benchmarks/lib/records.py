"""The one declared schema of the benchmark records that are not quantlab Results, and its one writer and reader.

A quantlab `Result` is one artifact measured by quantlab, and a benchmark whose measurement is that writes
Results (`quantlab report` reads them). Some measure something else: two tools side by side (quantlab's decode
against llama-bench, the served sweep against llama-batched-bench), stand-ins that are not artifacts, a tool
build on a lent GPU. Their records all take the shape of `BenchRecord`: the envelope says which benchmark made
it, on what host, when, with which settings and tool versions, so a table can group a file's records by run and
print where each run happened; `measurement` holds what the record measured, its keys documented in the
docstring of the benchmark that writes it. Such files are JSON lines named `.ndjson`, apart from the `.jsonl`
Result files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quantlab.results.io import repair_tail
from quantlab.results.provenance import HostInfo

SCHEMA_VERSION = 1


class BenchRecord(BaseModel):
    """One record of a benchmark that is not a quantlab Result (see the module's docstring)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = Field(SCHEMA_VERSION, description="this schema's version; 1 so far")
    benchmark: str = Field(
        description="the module that writes this kind of record, e.g. benchmarks.crosschecks.gguf_decode_vs_llama_bench"
    )
    run_id: str = Field(description="12 hex digits, shared by every record one invocation wrote")
    timestamp: str = Field(description="when the run started: UTC, ISO 8601 to the second (shared by the run)")
    host: HostInfo = Field(description="the machine it ran on (quantlab.env.host_info)")
    quantlab_version: str = Field(description="quantlab's version")
    tools: dict[str, str] = Field(
        default_factory=dict,
        description="versions or builds of the other tools measured or used, e.g. llama_cpp_build; empty if none",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict, description="what the run was asked to do, the same in every record of the run"
    )
    measurement: dict[str, Any] = Field(
        default_factory=dict, description="what this record measured; keys per benchmark, in its docstring"
    )


def start_run(benchmark: str, settings: dict[str, Any], tools: dict[str, str] | None = None) -> BenchRecord:
    """The envelope every record of this invocation shares, measurement empty: `measured` fills one record."""
    import quantlab
    from quantlab.env import host_info

    return BenchRecord(
        benchmark=benchmark,
        run_id=uuid.uuid4().hex[:12],
        timestamp=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        host=host_info(),
        quantlab_version=quantlab.__version__,
        tools=tools or {},
        settings=settings,
    )


def measured(run: BenchRecord, measurement: dict[str, Any]) -> BenchRecord:
    """One record of `run` carrying `measurement`."""
    return BenchRecord.model_validate({**run.model_dump(), "measurement": measurement})


def append_records(path: Path, records: list[BenchRecord]) -> None:
    """Append each record as one fsynced line, so a run killed later keeps every finished record; a line torn by
    an earlier kill is dropped first (as quantlab's Result files do)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_tail(path)
    with open(path, "a", encoding="utf-8") as fh:
        for record in records:
            fh.write(record.model_dump_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def write_records(path: Path, records: list[BenchRecord]) -> None:
    """Replace the file with `records`, atomically: for a benchmark that rewrites its one record after each step."""
    from quantlab.util.files import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(record.model_dump_json() + "\n" for record in records))


def read_records(path: Path) -> list[BenchRecord]:
    """Every record of the file, each checked against the schema; a bad line is named in the error."""
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(BenchRecord.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ValueError(f"{path} line {lineno}: not a benchmark record: {exc}") from exc
    return records


def runs_newest_first(records: list[BenchRecord]) -> list[list[BenchRecord]]:
    """A file's records grouped by run (`run_id`), the newest run first, each run's records in file order."""
    runs: dict[str, list[BenchRecord]] = {}
    for record in records:
        runs.setdefault(record.run_id, []).append(record)
    return sorted(runs.values(), key=lambda rs: rs[0].timestamp, reverse=True)
