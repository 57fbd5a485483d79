"""Measured sensitivity: the KLD, on calibration windows, of one group of tensors alone at a candidate type.

Every candidate is a real GGUF made by llama-quantize from the one F16 conversion, with the one importance matrix:
the group at the candidate type and every other weight at F16, scored by llama.cpp on the same ids as the F16
file itself. So a group's figure is its own rounding error as llama.cpp computes with it, imatrix and fallback
rules included, and nothing else's. Some candidates are also measured without the importance matrix (`tuner`
asks for the ones an allocation chose): the matrix weighs each rounding error by its activations, which usually
helps, but it moves weights off a grid they already sit on (a model distributed quantized). Each figure is appended
to a file as soon as it is measured: a killed tune starts again where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from quantlab.tune.allocate import Sensitivity
from quantlab.tune.groups import Group, Tensor

# Bump when a measurement would no longer mean the same (base type, windows, KLD definition): old files are then
# set aside instead of mixed in.
PROTOCOL = "group alone at the type, every other weight F16; mean KL(F16 || candidate) over the windows; v1"


class Store:
    """The measurements made so far for one (model, imatrix, windows) key, one JSON line each: `found` with the
    importance matrix, `plain` without it."""

    def __init__(self, path: Path, key: dict) -> None:
        self.path = path
        self.key = {**key, "protocol": PROTOCOL}
        self.found: Sensitivity = {}
        self.plain: Sensitivity = {}
        self.seconds: list[float] = []
        if path.is_file():
            text = path.read_text()
            lines = text.splitlines()
            if lines and _json(lines[0]) == {"key": self.key}:
                if not text.endswith("\n"):  # a line cut by a kill: the next one must not be glued to it
                    with path.open("a") as out:
                        out.write("\n")
                for line in lines[1:]:
                    row = _json(line)  # a line cut by a kill is skipped and measured again
                    if row and {"group", "type", "kld"} <= row.keys():
                        into = self.found if row.get("imatrix", True) else self.plain
                        into[row["group"], row["type"]] = float(row["kld"])
                        self.seconds.append(float(row.get("seconds", 0.0)))
                return
            path.replace(path.with_suffix(".stale"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"key": self.key}) + "\n")

    def add(self, group: str, tensor_type: str, kld: float, seconds: float, *, imatrix: bool = True) -> None:
        (self.found if imatrix else self.plain)[group, tensor_type] = kld
        self.seconds.append(seconds)
        row = {"group": group, "type": tensor_type, "kld": kld, "seconds": round(seconds, 3)}
        if not imatrix:
            row["imatrix"] = False
        with self.path.open("a") as out:
            out.write(json.dumps(row) + "\n")


def _json(line: str) -> dict | None:
    try:
        found = json.loads(line)
    except json.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


class Scorer:
    """The F16 file's log-probabilities on the windows, held for every candidate to be compared with: windows ×
    (ctx − 1) × vocabulary float32 (0.2 GB for 2 windows of 512 at a 49k vocabulary)."""

    def __init__(self, f16: Path, windows: np.ndarray) -> None:
        self.f16 = f16
        self.windows = windows
        self._base: list | None = None  # computed on the first candidate: a resumed tune may score none

    @property
    def base(self) -> list:
        from quantlab.bench.quality import log_probs

        if self._base is None:
            session = _session(self.f16)
            try:
                self._base = [log_probs(session.logits(w), overwrite=True) for w in self.windows]
            finally:
                session.close()
        return self._base

    def file_kld(
        self,
        f16: Path,
        imatrix: Path | None,
        types: list[tuple[str, str]],
        scratch: Path,
        exclude: list[str] | None = None,
    ) -> float:
        """The KLD of the file llama-quantize makes from `f16` with these per-tensor types (every weight named),
        the tensors in `exclude` rounded without the importance matrix."""
        from quantlab.llamacpp import ops

        candidate = scratch / "candidate.gguf"
        options = {"imatrix": imatrix, "pure": True, "tensor_types": types, "imatrix_exclude": exclude}
        ops.quantize(f16, candidate, "Q8_0", lambda _: None, **options)
        try:
            return self.kld(candidate)
        finally:
            candidate.unlink(missing_ok=True)

    def kld(self, candidate: Path) -> float:
        import torch

        from quantlab.bench.quality import KL_ROWS, compare_window, log_probs

        session = _session(candidate)
        total, count = 0.0, 0
        try:
            for base, window in zip(self.base, self.windows, strict=True):
                logp = log_probs(session.logits(window), overwrite=True)
                targets = torch.as_tensor(np.asarray(window[1:], dtype=np.int64))[:, None]
                kld, _, _ = compare_window(iter(base.split(KL_ROWS)), logp, targets)
                total, count = total + float(kld.double().sum()), count + kld.numel()
        finally:
            session.close()
        return total / count


def _session(path: Path):
    from quantlab.runtimes.llamacpp_rt import LlamaCppSession

    return LlamaCppSession(None, "cpu", path=path)


REFERENCE_TYPE = "F16"  # the type of the file every candidate is compared with


def add_reference(store: Store, groups: list[Group]) -> None:
    """Each group's figure at the reference's own type: 0, since that candidate is the reference file itself. Held
    in memory only, never run nor written: the store counts llama.cpp runs."""
    for group in groups:
        if REFERENCE_TYPE in group.types:
            store.found[group.name, REFERENCE_TYPE] = 0.0


def saturated(found: Sensitivity, group: Group, negligible: float) -> bool:
    measured = [found[group.name, t] for t in group.types if (group.name, t) in found and t != REFERENCE_TYPE]
    return bool(measured) and min(measured) <= negligible


def overrides(group: Group, tensors: list[Tensor], tensor_type: str) -> list[tuple[str, str]]:
    inside = {t.name for t in group.tensors}
    return [(t.name, tensor_type if t.name in inside else "F16") for t in tensors]


def measure(
    groups: list[Group],
    tensors: list[Tensor],
    f16: Path,
    imatrix: Path,
    scorer: Scorer,
    store: Store,
    scratch: Path,
    log: Callable[[str], None],
    negligible: float = 0.0,
) -> None:
    """Every (group, candidate type) not yet in `store`, measured and stored one by one, smallest type first; once
    a group measures at most `negligible`, its larger types are not measured (they could save no more than that)."""
    todo = [(g, t) for g in groups for t in g.types if (g.name, t) not in store.found]
    total = sum(len(g.types) for g in groups)
    if len(todo) < total:
        log(f"sensitivity: {total - len(todo)} of at most {total} measurements found in {store.path}")
    for i, (group, tensor_type) in enumerate(todo, 1):
        if saturated(store.found, group, negligible):
            continue
        kld = _measured(group, tensor_type, tensors, f16, imatrix, scorer, store, scratch)
        per = sum(store.seconds[-20:]) / len(store.seconds[-20:])
        log(
            f"sensitivity {len(store.found)}/{total}: {group.name} at {tensor_type}: KLD {kld:.5f} "
            f"({per:.1f} s each, ~{per * (len(todo) - i) / 60:.0f} min left)"
        )


def measure_plain(
    asked: list[tuple[Group, str]],
    tensors: list[Tensor],
    f16: Path,
    scorer: Scorer,
    store: Store,
    scratch: Path,
    log: Callable[[str], None],
) -> None:
    """These (group, type) pairs measured without the importance matrix, where `store` lacks them."""
    todo = [(g, t) for g, t in asked if (g.name, t) not in store.plain]
    for i, (group, tensor_type) in enumerate(todo, 1):
        kld = _measured(group, tensor_type, tensors, f16, None, scorer, store, scratch)
        with_it = store.found[group.name, tensor_type]
        log(f"without imatrix {i}/{len(todo)}: {group.name} at {tensor_type}: KLD {kld:.5f} (with: {with_it:.5f})")


def _measured(group, tensor_type, tensors, f16, imatrix: Path | None, scorer: Scorer, store: Store, scratch) -> float:
    """One candidate, the group alone at the type, with the matrix or (None) without it: measured, stored, timed."""
    started = time.perf_counter()
    kld = scorer.file_kld(f16, imatrix, overrides(group, tensors, tensor_type), scratch)
    store.add(group.name, tensor_type, kld, time.perf_counter() - started, imatrix=imatrix is not None)
    return kld
