"""The KV cache llama.cpp allocated, read from its own log line rather than computed from the architecture.

`llama_kv_cache` logs, when a context is created (src/llama-kv-cache.cpp of the tree):
`llama_kv_cache: size = %7.2f MiB (%6u cells, %3d layers, %2u/%u seqs), K (%s): %7.2f MiB, V (%s): %7.2f MiB`.
The sizes are those of the K and V tensors as allocated (ggml blocks included: q8_0 keeps 34 bytes per 32
values), to two decimals of a MiB; `cells` is the token positions of one stream, and the cache has one stream
per sequence unless it is unified (`seqs` prints sequences/streams), so its positions are cells × streams. Both
`llama-server` (its log file) and the in-process runtime (a log callback while the context is made) read it here.
"""

from __future__ import annotations

import re

from quantlab.results.kernels import KvAllocation

_LINE = re.compile(
    r"llama_kv_cache: size = +(\d{1,15}\.\d{2}) MiB \( *(\d{1,12}) cells, +\d+ layers, +\d+/(\d{1,6}) seqs\), "
    r"K \((\w+)\): +[\d.]+ MiB, V \((\w+)\): +[\d.]+ MiB"
)  # the widths bound what the C format can print, so a damaged line never reaches float() or int() out of range


def kv_allocation(log: str, where: str) -> KvAllocation | None:
    """The last KV-cache line of `log` (a context made later replaces an earlier one), or None: no such line, or
    one with no positions to divide by."""
    found = list(_LINE.finditer(log))
    if not found:
        return None
    mib, cells, streams, type_k, type_v = found[-1].groups()
    total, positions = float(mib) * 2**20, int(cells) * int(streams)
    if positions == 0:
        return None
    return KvAllocation(
        type_k=type_k,
        type_v=type_v,
        cells=positions,
        bytes=round(total),
        bytes_per_token=total / positions,
        source=f"{where} (llama_kv_cache: size = … MiB (… cells …), MiB to 2 decimals)",
    )
