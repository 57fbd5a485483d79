"""The results schema: one JSON record per artifact per bench run, appended to a JSONL file.

Tables and plots are always derived from these records; nothing in a report is typed in by hand.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from quantlab.artifact import GGUFRecord
from quantlab.bench.load import LoadSweep
from quantlab.bench.quality import QualityMetrics
from quantlab.bench.speed import SpeedPoint
from quantlab.bench.tasks import TaskResults
from quantlab.corpus import TextSource
from quantlab.env import HostInfo
from quantlab.errors import ResultsError, describe_validation_error
from quantlab.roofline import Roofline
from quantlab.runtimes.base import RuntimeDescription

SCHEMA_VERSION = 1


class ArtifactRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    digest: str
    method: str
    backend: str
    label: str
    format: str
    weight_bytes: int
    disk_bytes: int
    source_ref: str
    source_sha256: str
    source_description: str | None
    quantize_seconds: float
    gguf: GGUFRecord | None = None  # what llama.cpp really wrote (tensor types, fallbacks), for the report


class BenchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: TextSource
    n_tokens: int
    token_fingerprint: str
    ctx: int
    batch_sizes: list[int]
    prompt_tokens: int
    new_tokens: int
    warmup: int
    repeats: int


class MemoryMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["cpu-peak-rss-fresh-process", "cuda-peak-allocated", "cpu-peak-rss-server"]
    peak_bytes: int
    after_load_bytes: int
    before_load_bytes: int  # the runtime's own footprint (Python, torch) before the model was loaded
    cuda_peak_reserved_bytes: int | None = None
    note: str


class RigRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    price_per_hour: float
    price_note: str


class CostPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int  # basis `served`: the concurrency level
    tokens_per_second: float  # decode: median decode tok/s at this batch size; served: output tok/s
    usd_per_1m_tokens: float
    basis: Literal["decode", "served"] = "decode"


class CellRef(BaseModel):
    """The recipe cell a record belongs to (`quantlab run`): what a resumed run checks to skip finished work."""

    model_config = ConfigDict(extra="forbid")

    recipe: str
    model: str
    name: str
    key: str  # hash of model + normalized spec (quantlab.recipes.Cell.key)
    stage: Literal["bench", "load"]


class Result(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    run_id: str
    timestamp: datetime
    quantlab_version: str
    artifact: ArtifactRef
    runtime: RuntimeDescription
    rig: RigRef
    settings: BenchSettings
    quality: QualityMetrics | None
    speed: list[SpeedPoint]
    memory: MemoryMetrics | None
    cost: list[CostPoint]
    libraries: dict[str, str]
    host: HostInfo
    roofline: Roofline | None = None  # batch-1 decode against this host's measured memory bandwidth
    load: LoadSweep | None = None  # a served engine under concurrent load (`quantlab bench --load`)
    tasks: TaskResults | None = None  # lm-eval task scores (`quantlab bench --tasks`), with recovery
    cell: CellRef | None = None  # set by `quantlab run`


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
