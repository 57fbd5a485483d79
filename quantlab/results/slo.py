"""Service-level objectives and goodput of a served level, with the definitions of vLLM's `bench serve`.

vLLM's `benchmarks/serve.py` (`--goodput ttft:MS tpot:MS e2el:MS`, after the DistServe paper) counts a completed
request as *good* when it meets every bound given, each bound compared with `<=` to the request's own TTFT, TPOT
and end-to-end latency in milliseconds; goodput is good requests per second of the level's wall time (the same
duration request throughput divides by). quantlab spells the keys `ttft_ms`, `tpot_ms`, `e2e_ms` and measures
the three exactly as its load generator does for every other column (`bench.loadgen`). A request that failed
is never good; a one-token request has no TPOT and meets a TPOT bound only vacuously, as in vLLM.
"""

from __future__ import annotations

from pydantic import ConfigDict, PositiveFloat, model_validator

from quantlab.results.schema import Schema

KEYS = ("ttft_ms", "tpot_ms", "e2e_ms")


class Slo(Schema):
    """Upper bounds in milliseconds; a request is good when it meets every bound that is set."""

    model_config = ConfigDict(allow_inf_nan=False)  # `ttft_ms=inf` is no bound: refused

    ttft_ms: PositiveFloat | None = None
    tpot_ms: PositiveFloat | None = None
    e2e_ms: PositiveFloat | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value):
        """`ttft_ms=500,tpot_ms=50` (the CLI's spelling) as well as a mapping (a recipe's); unknown keys named."""
        if isinstance(value, dict):
            unknown = [key for key in value if key not in KEYS]
            if unknown:
                raise ValueError(f"unknown SLO key {unknown[0]!r} (keys: {', '.join(KEYS)})")
            return value
        if not isinstance(value, str):
            return value
        parsed = {}
        for part in filter(None, (p.strip() for p in value.split(","))):
            key, sep, number = part.partition("=")
            if not sep:
                raise ValueError(f"{part!r} is not key=milliseconds (keys: {', '.join(KEYS)})")
            if key.strip() in parsed:  # the text form has no other way to say which one was meant
                raise ValueError(f"{key.strip()!r} given twice")
            parsed[key.strip()] = number.strip()
        return cls._from_text(parsed)

    @model_validator(mode="after")
    def _some_bound(self) -> Slo:
        if all(getattr(self, key) is None for key in KEYS):
            raise ValueError(f"an SLO needs at least one bound ({', '.join(KEYS)})")
        return self

    def met(self, ttft_ms: float, tpot_ms: float | None, e2e_ms: float) -> bool:
        return (
            (self.ttft_ms is None or ttft_ms <= self.ttft_ms)
            and (self.tpot_ms is None or tpot_ms is None or tpot_ms <= self.tpot_ms)
            and (self.e2e_ms is None or e2e_ms <= self.e2e_ms)
        )

    def label(self) -> str:
        return ", ".join(f"{key[:-3].upper()} ≤ {getattr(self, key):g} ms" for key in KEYS if getattr(self, key))
