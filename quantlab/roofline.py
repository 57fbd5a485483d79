"""Decode at batch 1 cannot beat `memory bandwidth / bytes read per token`: how close does each artifact get?

- Bandwidth is measured on this host, once, and cached per host: the best of several full reads of a tensor
  far larger than any cache (a sum over 1 GiB by default), on the device the bench runs on. It is a read
  bandwidth, because decoding reads weights and KV cache and writes almost nothing.
- Bytes per token are what the kernel path really reads for one decoded token: every weight tensor as it sits
  in memory (so a model decompressed to bf16 counts bf16 bytes, a native 4-bit one its packed bytes), minus
  an untied input embedding (a gather reads one row), plus the KV cache at the mean decode context.
- Roofline % = achieved decode tok/s at batch 1 / (bandwidth / bytes per token).
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from quantlab.paths import cache_dir
from quantlab.results.metrics import Roofline
from quantlab.util.files import write_atomic

PROBE_BYTES = 1 << 30
PROBE_REPEATS = 5


class Bandwidth(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gb_s: float
    device: str
    device_name: str
    method: str
    measured_at: datetime


class BytesPerToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: int
    kv: int
    detail: str

    @property
    def total(self) -> int:
        return self.weights + self.kv


def _host_key(device: str, device_name: str) -> str:
    import os

    import psutil

    text = f"{device_name}|{os.cpu_count()}|{psutil.virtual_memory().total}|{device.split(':')[0]}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def measure_bandwidth(device: str = "cpu", n_bytes: int = PROBE_BYTES, repeats: int = PROBE_REPEATS) -> float:
    """Best read bandwidth in GB/s over `repeats` sums of an `n_bytes` fp32 tensor."""
    import torch

    x = torch.ones(n_bytes // 4, dtype=torch.float32, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best = float("inf")
    for _ in range(repeats + 1):  # the first pass warms the pages and the kernel
        sync()
        start = time.perf_counter()
        x.sum()
        sync()
        best = min(best, time.perf_counter() - start)
    del x
    return n_bytes / best / 1e9


def host_bandwidth(device: str, device_name: str, *, refresh: bool = False) -> Bandwidth:
    """This host's read bandwidth on `device`, measured once and cached under the quantlab cache."""
    path = cache_dir() / "hosts" / f"bandwidth-{_host_key(device, device_name)}.json"
    if path.is_file() and not refresh:
        try:
            return Bandwidth.model_validate(json.loads(path.read_text()))
        except (ValueError, OSError):
            pass  # a corrupt cache entry is measured again
    gb_s = measure_bandwidth(device)
    bandwidth = Bandwidth(
        gb_s=round(gb_s, 2),
        device=device.split(":")[0],
        device_name=device_name,
        method=f"torch sum over {PROBE_BYTES >> 20} MiB fp32, best of {PROBE_REPEATS} (read bandwidth)",
        measured_at=datetime.now(UTC),
    )
    write_atomic(path, bandwidth.model_dump_json())
    return bandwidth


def roofline(bandwidth: Bandwidth, per_token: BytesPerToken, decode_tok_s: float) -> Roofline:
    limit = bandwidth.gb_s * 1e9 / per_token.total
    return Roofline(
        bandwidth_gb_s=bandwidth.gb_s,
        bandwidth_method=bandwidth.method,
        bytes_per_token=per_token.total,
        bytes_detail=per_token.detail,
        limit_tok_s=round(limit, 2),
        achieved_tok_s=decode_tok_s,
        pct_of_limit=round(100 * decode_tok_s / limit, 1),
    )


def kv_bytes_read(config_dir, kv_dtype: str, prompt_tokens: int, new_tokens: int) -> tuple[int, str]:
    """KV cache read by one decode step at the mean context of the timed decode."""
    from quantlab.memfit import architecture_of, kv_bytes_per_token

    per_position = kv_bytes_per_token(architecture_of(config_dir), kv_dtype)
    context = prompt_tokens + new_tokens // 2
    return per_position * context, f"KV {per_position:,} B/position × {context} positions ({kv_dtype})"
