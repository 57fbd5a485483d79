"""What `tune` aims at: a size (bytes of the GGUF file, or bits per weight of the source model's parameters, the
figure every GGUF row of a report shows) or a quality (the largest mean KLD allowed)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from quantlab.errors import SpecError

_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", re.IGNORECASE)


class Budget(BaseModel):
    """The largest file allowed, in bytes, and how the user said it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_bytes: int = Field(gt=0)
    said: str  # "96MB", "5.5bpw", ...

    def __str__(self) -> str:
        return f"{self.said} ({self.max_bytes / 1e6:,.2f} MB)"


def parse_budget(text: str, n_params: int) -> Budget:
    """`96MB`, `1.5GiB`, `123456789` (bytes) or `5.5bpw` (bits per weight of the source's `n_params`)."""
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or (unit not in _UNITS and unit != "bpw"):
        raise SpecError(
            f"--budget {text[:60]!r} is not a size: a number with B, KB, MB, GB, KiB, MiB, GiB or bpw "
            "(e.g. 96MB, 5.5bpw)"
        )
    value = float(match.group(1))
    max_bytes = int(value * n_params / 8) if unit == "bpw" else int(value * _UNITS[unit or "b"])
    if max_bytes <= 0:
        raise SpecError(f"--budget {text[:60]!r} allows no bytes at all")
    return Budget(max_bytes=max_bytes, said=text.strip())
