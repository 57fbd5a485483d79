"""The roofline's arithmetic and its per-host bandwidth cache."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from quantlab import roofline
from quantlab.roofline import Bandwidth, BytesPerToken


def test_limit_and_percentage():
    bandwidth = Bandwidth(gb_s=10.0, device="cpu", device_name="x", method="m", measured_at=datetime.now(UTC))
    per_token = BytesPerToken(weights=200_000_000, kv=50_000_000, detail="d")
    result = roofline.roofline(bandwidth, per_token, decode_tok_s=20.0)
    assert result.bytes_per_token == 250_000_000
    assert result.limit_tok_s == 40.0  # 10 GB/s ÷ 250 MB per token
    assert result.pct_of_limit == 50.0


def test_bandwidth_is_measured_once_per_host_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTLAB_CACHE", str(tmp_path))
    calls = []

    def fake(device, n_bytes=roofline.PROBE_BYTES, repeats=roofline.PROBE_REPEATS):
        calls.append(device)
        return 12.345

    monkeypatch.setattr(roofline, "measure_bandwidth", fake)
    first = roofline.host_bandwidth("cpu", "Some CPU")
    again = roofline.host_bandwidth("cpu", "Some CPU")
    assert first == again and first.gb_s == 12.35 and calls == ["cpu"]
    assert roofline.host_bandwidth("cpu", "Some CPU", refresh=True).gb_s == 12.35 and len(calls) == 2
    (cached,) = (tmp_path / "hosts").glob("bandwidth-*.json")
    cached.write_text("{not json")
    assert roofline.host_bandwidth("cpu", "Some CPU").gb_s == 12.35 and len(calls) == 3  # corrupt: re-measured


def test_measured_bandwidth_is_plausible():
    gb_s = roofline.measure_bandwidth("cpu", n_bytes=64 << 20, repeats=2)
    assert 0.1 < gb_s < 10_000


@pytest.mark.parametrize("kv_dtype, expected", [("bf16", 2), ("fp8", 1)])
def test_kv_read_per_step_uses_the_mean_decode_context(tiny_model, kv_dtype, expected):
    # tiny model: 2 layers × 2 KV heads × head dim 64 × (K, V)
    kv, detail = roofline.kv_bytes_read(tiny_model, kv_dtype, prompt_tokens=100, new_tokens=10)
    assert kv == 2 * 2 * 64 * 2 * expected * 105 and "105 positions" in detail
