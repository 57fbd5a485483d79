"""Where a number came from: the text it was measured on and the machine that measured it. Every manifest and
result carries both, because numbers from different texts or machines are not comparable."""

from __future__ import annotations

from typing import Literal

from quantlab.results.schema import Schema


class TextSource(Schema):
    """Which text was used, said precisely enough to reproduce it."""

    name: str  # what the user asked for (or `default`)
    kind: Literal["hub", "local", "embedded"]
    split: str | None
    description: str
    text_sha256: str
    n_chars: int


class HostInfo(Schema):
    hostname: str
    os: str
    python: str
    cpu: str
    cpu_count: int
    memory_bytes: int
    gpus: list[str]
