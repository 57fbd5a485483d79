"""The contract a quantization backend fulfils. Adding a method = one module with one `@register`ed class
that declares the options it takes and implements `resolve` and `quantize`.

A backend never imports a runtime or the bench: it turns a source model into engine-native files and says
what it wrote. Validation is split so impossible requests fail before any weight is loaded:
`normalize` needs only the spec, `for_model` only the architecture (read on the meta device).

Which options a backend takes is declared (`options`, `refusal`, `schemes`), not coded: `normalize` refuses the
rest in one place with one message, and the CLI help (`registry.option_takers`, `registry.schemes`) and the
tests are derived from the same declaration, so what is offered, refused and tested cannot drift apart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from quantlab.artifact import CalibrationRecord, GGUFRecord
from quantlab.env import is_installed
from quantlab.errors import SpecError
from quantlab.models import ModelInfo, SourceModel
from quantlab.spec import OPTION_FIELDS, MethodSpec, option_flag, option_is_set

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
    # The MethodSpec option fields (spec.OPTION_FIELDS) this backend takes; any other that is set is refused
    # with `refusal`, the one reason that holds for all of them (e.g. "the GGUF type sets the bits").
    options: ClassVar[frozenset[str]]
    refusal: ClassVar[str]
    # The --scheme names, for backends that take one (the CLI lists them); `default_scheme` is used when unset.
    schemes: ClassVar[tuple[str, ...]] = ()
    default_scheme: ClassVar[str | None] = None

    def availability(self) -> Availability:
        missing = [dist for dist in self.requires if not is_installed(dist)]
        if missing:
            hint = f" (pip install 'quantlab[{self.extra}]')" if self.extra else ""
            return Availability(False, f"{', '.join(missing)} not installed{hint}")
        return Availability(True)

    def normalize(self, spec: MethodSpec) -> MethodSpec:
        """Refuse every option this backend does not declare, then fill defaults and check values (`resolve`).

        An option a backend has no use for is an error, never silently ignored: the artifact would be recorded
        as made with it."""
        for option in OPTION_FIELDS:
            if option not in self.options and option_is_set(spec, option):
                raise SpecError(f"{self.method}/{self.name} takes no {option_flag(option)}: {self.refusal}")
        return self.resolve(spec)

    @abstractmethod
    def resolve(self, spec: MethodSpec) -> MethodSpec:
        """Fill the defaults of the declared options and reject values this backend cannot do, from the spec
        alone; only declared options reach it set."""

    def for_model(self, spec: MethodSpec, info: ModelInfo) -> MethodSpec:
        """Resolve what depends on the model (`dtype: auto` → the source dtype) and reject specs that cannot
        fit this architecture (e.g. a group size that does not divide a layer width)."""
        return spec if spec.dtype != "auto" else spec.model_copy(update={"dtype": info.dtype})

    @abstractmethod
    def quantize(
        self, source: SourceModel, spec: MethodSpec, out: Path, log: Log, *, trust_remote_code: bool = False
    ) -> QuantizeOutcome:
        """Write the engine-native files into `out` (a temp dir; the manifest is written by the caller)."""
