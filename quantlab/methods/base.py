"""The contract a quantization backend fulfils. Adding a method = one module with one `@register`ed class.

A backend never imports a runtime or the bench: it turns a source model into engine-native files and says
what it wrote. Validation is split so impossible requests fail before any weight is loaded:
`normalize` needs only the spec, `fit` only the architecture (read on the meta device).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from quantlab.artifact import CalibrationRecord, GGUFRecord
from quantlab.env import is_installed
from quantlab.models import ModelInfo, SourceModel
from quantlab.spec import MethodSpec

Log = Callable[[str], None]


@dataclass(frozen=True)
class Availability:
    usable: bool
    reason: str = ""


@dataclass
class QuantizeOutcome:
    format: str
    loads_in: list[str]
    calibration: CalibrationRecord | None = None
    gguf: GGUFRecord | None = None
    notes: list[str] = field(default_factory=list)


class Backend(ABC):
    method: ClassVar[str]
    name: ClassVar[str]
    default: ClassVar[bool] = False  # the backend `--method M` uses when `--backend` is not given
    legacy: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ()  # pip distributions that must be installed
    extra: ClassVar[str | None] = None  # `pip install quantlab[extra]` installs them
    summary: ClassVar[str] = ""  # one line for `quantlab methods`: what it writes, where it loads

    def availability(self) -> Availability:
        missing = [dist for dist in self.requires if not is_installed(dist)]
        if missing:
            hint = f" (pip install 'quantlab[{self.extra}]')" if self.extra else ""
            return Availability(False, f"{', '.join(missing)} not installed{hint}")
        return Availability(True)

    @abstractmethod
    def normalize(self, spec: MethodSpec) -> MethodSpec:
        """Fill defaults and reject what this backend cannot do, from the spec alone."""

    def fit(self, spec: MethodSpec, info: ModelInfo) -> MethodSpec:
        """Resolve what depends on the model (`dtype: auto` → the source dtype) and reject specs that cannot
        fit this architecture (e.g. a group size that does not divide a layer width)."""
        return spec if spec.dtype != "auto" else spec.model_copy(update={"dtype": info.dtype})

    @abstractmethod
    def quantize(
        self, source: SourceModel, spec: MethodSpec, out: Path, log: Log, *, trust_remote_code: bool = False
    ) -> QuantizeOutcome:
        """Write the engine-native files into `out` (a temp dir; the manifest is written by the caller)."""
