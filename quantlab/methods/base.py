"""The contract a quantization backend fulfils. Adding a method = one module with one backend class, listed in
`registry.BACKENDS`, that declares the options it takes and what planning needs to know of its artifacts
(`weight_bits`, `device_need`, `loads_in`), and implements `resolve` and `quantize`.

A backend never imports a runtime or the bench: it turns a source model into engine-native files and says
what it wrote. Validation is split so impossible requests fail before any weight is loaded:
`normalize` needs only the spec, `for_model` only the architecture (read on the meta device).

Which options a backend takes is declared (`options`, `refusal`, `schemes`), not coded: `normalize` refuses the
rest in one place with one message, and the CLI help (`registry.option_takers`, `registry.schemes`) and the
tests are derived from the same declaration, so what is offered, refused and tested cannot drift apart.

What a format is to everyone downstream is declared here too, so the memory plan, the bench's checks and the
runtimes ask the backend (`registry.backend_of(spec)`) and never match a method name: its bits per weight
(`weight_bits`), the device it needs (`device_need`), and where its artifacts load (`loads_in`, which the
manifest records and the runtimes and engines read).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from quantlab.artifact import CalibrationRecord
from quantlab.env import FP8_MIN_CAPABILITY, cuda_capability, is_installed
from quantlab.errors import SpecError
from quantlab.models import ModelInfo, SourceModel
from quantlab.results.gguf import GGUFRecord
from quantlab.spec import OPTION_FIELDS, MethodSpec, option_flag, option_is_set

Log = Callable[[str], None]


@dataclass(frozen=True)
class Availability:
    usable: bool
    reason: str = ""


@dataclass(frozen=True)
class WeightBits:
    """A format's size before any artifact exists: bits per quantized linear weight (scales and zero points
    included), bits per other parameter (embeddings, norms, the output head), and how they were counted.
    Arithmetic for planning (`quantlab fit`, a recipe's dry-run); a made artifact's measured bytes replace it."""

    linear: float
    other: float
    counted: str


def dtype_bits(dtype: str) -> float:
    """Bits of the tensors a format leaves unquantized, kept in the source's dtype (`auto`: 16-bit assumed)."""
    return 32.0 if dtype == "fp32" else 16.0


@dataclass(frozen=True)
class DeviceNeed:
    """What a device must have to run an artifact of a spec (for some schemes, to make one): `any` device, a
    `cuda` GPU, or FP8 tensor cores (`fp8`, CUDA compute capability ≥ 8.9). `what` names the format in a
    refusal."""

    needs: Literal["any", "cuda", "fp8"] = "any"
    what: str = ""
    why: str = ""  # what in the format needs it, said in the refusal

    def problem(self, device: str | None) -> str | None:
        """Why `device` (None: this host's first GPU, where a CUDA-only scheme is made) cannot run it; None if it
        can. Asked before any weight loads."""
        if self.needs == "any":
            return None
        needs = f"{self.what} needs a CUDA GPU" + (f" ({self.why})" if self.why else "")
        if device is not None and not device.startswith("cuda"):
            return f"{needs}; it cannot run on {device}"
        import torch

        if not torch.cuda.is_available():
            return f"{needs}; this host has none"
        cc = cuda_capability(device or "cuda:0")
        if self.needs == "fp8" and cc < FP8_MIN_CAPABILITY:
            return f"{self.what} needs FP8 tensor cores (compute capability ≥ 8.9); this GPU has {cc[0]}.{cc[1]}"
        return None

    def rig_problem(self, rig_device: str) -> str | None:
        """Why a rig of this kind (`cpu` or `cuda`) cannot run it, for a plan made without the hardware."""
        return "needs a CUDA GPU" if self.needs != "any" and rig_device != "cuda" else None


@dataclass
class QuantizeOutcome:
    format: str
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
    # Where the artifacts load unmodified (recorded in the manifest): `transformers` and `vllm` are read by the
    # runtimes and engines of those names.
    loads_in: ClassVar[tuple[str, ...]]

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
    def weight_bits(self, spec: MethodSpec) -> WeightBits:
        """Bits per weight an artifact of this *normalized* spec stores, and how they were counted."""

    def device_need(self, spec: MethodSpec) -> DeviceNeed:
        """The device an artifact of this normalized spec needs to run; most run anywhere (some only slowly,
        which the kernel label says, not this)."""
        return DeviceNeed()

    @abstractmethod
    def quantize(
        self, source: SourceModel, spec: MethodSpec, out: Path, log: Log, *, trust_remote_code: bool = False
    ) -> QuantizeOutcome:
        """Write the engine-native files into `out` (a temp dir; the manifest is written by the caller)."""
