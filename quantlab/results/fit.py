"""The memory-fit arithmetic as a record: weights + KV cache against a rig's memory (`quantlab.memfit` computes
it; a served result keeps the figure for its largest level beside the peak it measured)."""

from __future__ import annotations

from quantlab.results.schema import Schema


class Footprint(Schema):
    weight_bits: float
    weight_bytes: int
    kv_dtype: str
    kv_bytes_per_token: int
    kv_source: str = "arithmetic"  # or where a measured figure came from
    batch: int
    ctx: int
    kv_bytes: int
    needed_bytes: int  # weights + KV
    rig: str | None = None
    capacity_bytes: int | None = None  # rig memory × utilization
    utilization: float | None = None
    fits: bool | None = None
    gpus: int | None = None  # GPUs one copy spans (tensor parallel); None: the whole rig
    rig_gpus: int | None = None

    def short_of_gpus(self) -> bool:
        """Spans more GPUs than the rig has (a CPU rig holds a one-device model: its own memory)."""
        return self.gpus is not None and self.rig_gpus is not None and self.gpus > max(self.rig_gpus, 1)

    def verdict(self) -> str:
        need = (
            f"{self.needed_bytes / 1e9:.1f} GB (weights {self.weight_bytes / 1e9:.1f} + KV {self.kv_bytes / 1e9:.1f})"
        )
        if self.fits is None:
            return f"needs {need}"
        if self.short_of_gpus():
            return f"does NOT fit: spans {self.gpus} GPUs, {self.rig} has {self.rig_gpus}"
        room = f"{self.capacity_bytes / 1e9:.1f} GB usable ({self.utilization:.0%} of {self.rig})"
        return f"{'fits' if self.fits else 'does NOT fit'}: needs {need}, {room}"
