"""The results schema: one JSON record per artifact per bench run, appended to a JSONL file.

Tables and plots are always derived from these records; nothing in a report is typed in by hand. This
package is the schema only: `import quantlab.results` loads no torch, no transformers and no runtime, so a
report, a notebook or another tool can read results without the measuring stack.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import model_validator

from quantlab.results.gguf import GGUFRecord
from quantlab.results.kernels import RuntimeDescription
from quantlab.results.metrics import LoadSweep, QualityMetrics, Roofline, SpeedPoint, TaskResults
from quantlab.results.provenance import HostInfo, TextSource
from quantlab.results.schema import Schema
from quantlab.results.target import ExternalTarget

SCHEMA_VERSION = 1


class ArtifactRef(Schema):
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

    def display_label(self, *, backend: bool, scheme: bool = True) -> str:
        """How a result is named to a reader: "method (backend) scheme", "method scheme" or "method (backend)".

        One spelling everywhere, so a row of a table, a point of a plot, a footnote, a recommendation and the
        baseline label stored in results can be matched by eye. The backend tells apart one method made by two
        libraries; plots leave it out for room, and stored baseline labels leave it out because committed
        results already hold them that way.
        """
        name = f"{self.method} ({self.backend})" if backend else self.method
        return f"{name} {self.label}" if scheme else name


class BenchSettings(Schema):
    dataset: TextSource
    n_tokens: int
    token_fingerprint: str
    ctx: int
    batch_sizes: list[int]
    prompt_tokens: int
    new_tokens: int
    warmup: int
    repeats: int


class MemoryMetrics(Schema):
    kind: Literal["cpu-peak-rss-fresh-process", "cuda-peak-allocated", "cpu-peak-rss-server"]
    peak_bytes: int
    after_load_bytes: int
    before_load_bytes: int  # the runtime's own footprint (Python, torch) before the model was loaded
    cuda_peak_reserved_bytes: int | None = None
    note: str


class RigRef(Schema):
    name: str
    description: str
    price_per_hour: float
    price_note: str


class CostPoint(Schema):
    batch_size: int  # basis `served`: the concurrency level
    tokens_per_second: float  # decode: median decode tok/s at this batch size; served: output tok/s
    usd_per_1m_tokens: float
    basis: Literal["decode", "served"] = "decode"


class CellRef(Schema):
    """The recipe cell a record belongs to (`quantlab run`): what a resumed run checks to skip finished work."""

    recipe: str
    model: str
    name: str
    key: str  # hash of model + normalized spec (quantlab.sweep.recipe.Cell.key)
    stage: Literal["bench", "load"]


class Result(Schema):
    schema_version: int = SCHEMA_VERSION
    run_id: str
    timestamp: datetime
    quantlab_version: str
    # None only for a server quantlab did not start (`target`): no artifact was seen, so none is claimed
    artifact: ArtifactRef | None
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
    target: ExternalTarget | None = None  # `bench --load --target URL`: an external server, measured under load

    @model_validator(mode="after")
    def _artifact_or_target(self) -> Result:
        """Exactly one subject: an artifact quantlab served or loaded, or an external server with no artifact (a
        record with both would pass an unverified artifact off as measured; one with neither names nothing)."""
        if (self.artifact is None) == (self.target is None):
            raise ValueError("a result names an artifact or an external target (--target), exactly one")
        if self.target is not None and (self.load is None or self.quality is not None):
            raise ValueError("an external target's result is a served load sweep, with no quality")
        return self
