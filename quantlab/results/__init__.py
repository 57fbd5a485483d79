"""The results schema and its files: records (`records`), the measurements they carry (`metrics`), the kernel
vocabulary (`kernels`), where a number came from (`provenance`: text and host), what llama.cpp wrote (`gguf`),
the memory-fit arithmetic (`fit`), the serving levers (`serving`), an external server (`target`), goodput (`slo`),
JSONL reading and appending (`io`), and the base every model derives from (`schema`).

Importing this package loads no torch, no transformers and no runtime, and it imports nothing of quantlab but
itself and the error family (tests/test_layers.py): every layer writes or reads these records, and reading
results stays cheap and independent of the measuring code.
"""

from quantlab.results.fit import Footprint
from quantlab.results.gguf import GGUFRecord, ImatrixRecord
from quantlab.results.io import append_result, read_results, repair_tail
from quantlab.results.kernels import (
    KERNEL_MEANING,
    DecodePath,
    Kernel,
    KvAllocation,
    OpShare,
    RuntimeDescription,
    speed_is_formats_own,
)
from quantlab.results.metrics import (
    LATENCY_DEFINITIONS,
    PROTOCOL,
    BaselineComparison,
    Dist,
    DivergenceDetail,
    EngineCounters,
    GreedyCheck,
    LoadLevel,
    LoadSweep,
    QualityMetrics,
    Quantiles,
    Roofline,
    SpeedPoint,
    Spread,
    TaskResults,
    TaskScore,
)
from quantlab.results.provenance import HostInfo, TextSource
from quantlab.results.records import (
    SCHEMA_VERSION,
    ArtifactRef,
    BenchSettings,
    CellRef,
    CostPoint,
    MemoryMetrics,
    Result,
    RigRef,
)
from quantlab.results.serving import NGRAM, EnginePython, ServingOptions
from quantlab.results.target import UNKNOWN, ExternalTarget, NamedArtifact, ServerProps

__all__ = [
    "KERNEL_MEANING",
    "LATENCY_DEFINITIONS",
    "NGRAM",
    "PROTOCOL",
    "SCHEMA_VERSION",
    "UNKNOWN",
    "ArtifactRef",
    "BaselineComparison",
    "BenchSettings",
    "CellRef",
    "CostPoint",
    "DecodePath",
    "Dist",
    "DivergenceDetail",
    "EngineCounters",
    "EnginePython",
    "ExternalTarget",
    "Footprint",
    "GGUFRecord",
    "GreedyCheck",
    "HostInfo",
    "ImatrixRecord",
    "Kernel",
    "KvAllocation",
    "LoadLevel",
    "LoadSweep",
    "MemoryMetrics",
    "NamedArtifact",
    "OpShare",
    "QualityMetrics",
    "Quantiles",
    "Result",
    "RigRef",
    "Roofline",
    "RuntimeDescription",
    "ServerProps",
    "ServingOptions",
    "SpeedPoint",
    "Spread",
    "TaskResults",
    "TaskScore",
    "TextSource",
    "append_result",
    "read_results",
    "repair_tail",
    "speed_is_formats_own",
]
