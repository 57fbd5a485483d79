"""The results schema and its files: records (`records`), the measurements they carry (`metrics`), the kernel
vocabulary (`kernels`), and JSONL reading and appending (`io`).

Importing this package loads no torch, no transformers and no runtime: reading results is cheap and does not
depend on the measuring code.
"""

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
    PROTOCOL,
    BaselineComparison,
    Dist,
    EngineCounters,
    GreedyCheck,
    LoadLevel,
    LoadSweep,
    QualityMetrics,
    SpeedPoint,
    Spread,
    TaskResults,
    TaskScore,
)
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

__all__ = [
    "KERNEL_MEANING",
    "PROTOCOL",
    "SCHEMA_VERSION",
    "ArtifactRef",
    "BaselineComparison",
    "BenchSettings",
    "CellRef",
    "CostPoint",
    "DecodePath",
    "Dist",
    "EngineCounters",
    "GreedyCheck",
    "Kernel",
    "KvAllocation",
    "LoadLevel",
    "LoadSweep",
    "MemoryMetrics",
    "OpShare",
    "QualityMetrics",
    "Result",
    "RigRef",
    "RuntimeDescription",
    "SpeedPoint",
    "Spread",
    "TaskResults",
    "TaskScore",
    "append_result",
    "read_results",
    "repair_tail",
    "speed_is_formats_own",
]
