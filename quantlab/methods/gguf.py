"""`gguf`: llama.cpp's own pipeline. Convert with llama.cpp's `convert_hf_to_gguf.py` (F16/BF16/F32), quantize
with `llama-quantize`, optionally weighing the rounding error with an importance matrix `llama-imatrix` computed
over the calibration windows; then read the file back and record which tensor got which type. Both tools are
built by quantlab from the llama.cpp tree of the installed llama-cpp-python (`llamacpp/build.py`).

The artifact holds `model-<TYPE>.gguf` (and `imatrix.gguf` when one was used): the files llama.cpp, ollama and
LM Studio load as they are.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from quantlab.artifact import CalibrationRecord
from quantlab.errors import QuantizationError, SpecError
from quantlab.llamacpp.types import FLOAT_TYPES, GGUF_TYPES, SUPERBLOCK_TYPES, block_size, lookup, parse_tensor_type
from quantlab.methods.base import Backend, Log, QuantizeOutcome, WeightBits
from quantlab.models import ModelInfo, SourceModel
from quantlab.results.gguf import GGUFRecord, ImatrixRecord
from quantlab.spec import Calibration, MethodSpec

DEFAULT_TYPE = "Q4_K_M"
LOADS_IN = ("llama.cpp", "llama-cpp-python", "ollama", "LM Studio")  # where any GGUF file loads, whoever wrote it
# Tensor types llama-quantize refuses to make without an importance matrix (llama-quant.cpp).
IMATRIX_REQUIRED = frozenset({"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ1_S", "IQ1_M"})


def check_tensor_types(info: dict, entries: list[tuple[str, str]]) -> None:
    """Every named tensor exists and its rows take its type: llama-quantize would skip an unknown name and give
    a misfit tensor another type, both silently."""
    rows = {t["name"]: int(t["shape"][0]) for t in info["tensors"] if len(t["shape"]) >= 2}
    for name, kind in entries:
        if name not in rows:
            raise SpecError(f"--tensor-types names {name!r}, which is not a weight of this model's GGUF")
        if rows[name] % block_size(kind):
            raise SpecError(f"--tensor-types: {name} has rows of {rows[name]}, not a multiple of {kind}'s blocks")


def exclusion_clashes(weights: list[str], excluded: set[str]) -> dict[str, str]:
    """Each excluded name that a weight left with the matrix also contains, with the first such weight:
    llama-quantize drops every matrix entry whose name contains an `--exclude-weights` string (`output.weight` is
    inside `blk.0.attn_output.weight`), so such a name would round more tensors without the matrix than named."""
    clashes: dict[str, str] = {}
    for weight in weights:
        if weight not in excluded:
            for name in excluded:
                if name in weight:
                    clashes.setdefault(name, weight)
    return clashes


def check_imatrix_exclude(info: dict, names: list[str]) -> None:
    """Every excluded name is a weight, and no weight left with the matrix contains it (`exclusion_clashes`)."""
    weights = [t["name"] for t in info["tensors"] if len(t["shape"]) >= 2]
    clashes = exclusion_clashes(weights, set(names))
    for name in names:
        if name not in weights:
            raise SpecError(f"--imatrix-exclude names {name!r}, which is not a weight of this model's GGUF")
        if name in clashes:
            raise SpecError(
                f"--imatrix-exclude {name}: llama-quantize matches by substring, so it would also exclude "
                f"{clashes[name]}; exclude that too or keep {name}"
            )


@dataclass(frozen=True)
class ImportanceMatrix:
    path: Path
    record: ImatrixRecord
    calibration: CalibrationRecord


_IMATRIX: dict[tuple, ImportanceMatrix] = {}  # this process's importance matrices, by F16 file and calibration


def importance_matrix(
    base: Path, source_path: str, calibration: Calibration, log, *, trust_remote_code=False, keep: Path | None = None
) -> ImportanceMatrix:
    """llama-imatrix over the calibration windows of the F16 file `base`, computed once per process for each
    (file, calibration): `quantlab tune` and the artifact it makes share one. `keep`: a folder (for this source
    and calibration only) where it is also stored, and found again by a later process (a resumed tune)."""
    key = (str(base), base.stat().st_mtime_ns, calibration)
    if (kept := _IMATRIX.get(key)) is not None and kept.path.is_file():
        log("reusing this process's importance matrix")
        return kept
    stored = _stored_imatrix(keep) if keep else None
    if stored is not None:
        log(f"reusing the importance matrix in {keep}")
    _IMATRIX[key] = stored or _compute_imatrix(base, source_path, calibration, log, trust_remote_code)
    if keep and stored is None:
        from quantlab.util.files import write_atomic

        keep.mkdir(parents=True, exist_ok=True)
        found = _IMATRIX[key]
        write_atomic(keep / "imatrix.gguf", found.path.read_bytes())
        pair = {"record": found.record, "calibration": found.calibration}
        write_atomic(keep / "imatrix.json", json.dumps({k: v.model_dump(mode="json") for k, v in pair.items()}))
    return _IMATRIX[key]


def _stored_imatrix(folder: Path) -> ImportanceMatrix | None:
    try:
        made = json.loads((folder / "imatrix.json").read_text())
        found = ImportanceMatrix(
            folder / "imatrix.gguf",
            ImatrixRecord.model_validate(made["record"]),
            CalibrationRecord.model_validate(made["calibration"]),
        )
    except (OSError, ValueError, KeyError):
        return None
    return found if found.path.is_file() else None


def _compute_imatrix(base: Path, source_path: str, calibration: Calibration, log, trust_remote_code: bool):
    from quantlab import calibration as calib
    from quantlab.llamacpp import imatrix as imx
    from quantlab.llamacpp import ops

    tokenizer, samples, record = calib.for_source(source_path, calibration, log, trust_remote_code=trust_remote_code)
    out = base.with_name(f"imatrix-{len(_IMATRIX)}.gguf")
    made = imx.compute(base, tokenizer, samples, out, log)
    written = ops.read_imatrix(out)  # the file, as llama-quantize will read it
    if written["counts"] != [float(samples.size)] or written["chunk_count"] != len(samples):
        raise QuantizationError(
            f"llama-imatrix summed {written['counts']} tokens over {written['chunk_count']} chunks; "
            f"the calibration has {samples.size} tokens in {len(samples)} windows"
        )
    return ImportanceMatrix(out, made.model_copy(update={"entries": written["entries"]}), record)


def read_back(model_file: Path, file_type: str, source: SourceModel, log, *, trust_remote_code=False) -> GGUFRecord:
    """The census of a GGUF just written (by llama-quantize or another exporter), per source parameter."""
    from quantlab.llamacpp import ops
    from quantlab.models import model_info

    log("reading the GGUF back")
    info = ops.inspect(model_file)
    n_params = model_info(source.path, trust_remote_code=trust_remote_code).n_params
    found = census(info, file_type, n_params, model_file.stat().st_size)
    return found.model_copy(update={"file": model_file.name})


def census(info: dict, file_type: str, n_params: int, file_bytes: int) -> GGUFRecord:
    """Tensor types as written, and the fallbacks: 2-D weights that the recipe meant for a 256-block type but
    whose rows are not a multiple of 256, so llama.cpp gave them another type."""
    types: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    fallbacks = []
    aims_superblock = lookup(file_type).main in SUPERBLOCK_TYPES
    for tensor in info["tensors"]:
        types[tensor["type"]] += 1
        sizes[tensor["type"]] += tensor["n_bytes"]
        row = tensor["shape"][0]
        if (
            aims_superblock
            and len(tensor["shape"]) >= 2
            and row % 256 != 0
            and tensor["type"] not in SUPERBLOCK_TYPES
            and tensor["type"] not in FLOAT_TYPES
        ):
            fallbacks.append(f"{tensor['name']}: {tensor['type']} (row {row} not a multiple of 256)")
    return GGUFRecord(
        file="",
        file_type=file_type,
        tensor_types=dict(types.most_common()),
        type_bytes=dict(sizes.most_common()),
        bits_per_weight=round(file_bytes * 8 / n_params, 3),
        fallbacks=fallbacks,
    )


class GGUFLlamaCpp(Backend):
    method = "gguf"
    name = "llamacpp"
    default = True
    requires = ("llama-cpp-python",)
    extra = "gguf"
    summary = (
        "GGUF F16/BF16/F32, Q8_0…Q2_K, IQ4_XS/IQ3_M/IQ2_M (imatrix from calibration) by llama.cpp's own "
        "converter and quantizer; loads in llama.cpp, llama-cpp-python, ollama, LM Studio"
    )

    schemes = tuple(GGUF_TYPES)
    default_scheme = DEFAULT_TYPE
    loads_in = LOADS_IN
    # --dtype too is the GGUF type's (F32/F16/BF16)
    options = frozenset({"scheme", "imatrix", "calibration", "pure", "tensor_types", "imatrix_exclude"})
    refusal = (
        f"the GGUF type (--scheme, e.g. {DEFAULT_TYPE}) sets the bits, blocks and float dtype (F32, F16 or BF16 "
        "for an unquantized file; quantized types are made from F16)"
    )

    def resolve(self, spec: MethodSpec) -> MethodSpec:
        gtype = lookup(spec.scheme or self.default_scheme)
        imatrix = spec.imatrix if spec.imatrix is not None else spec.calibration is not None
        if imatrix and gtype.imatrix == "ignored" and not spec.tensor_types:  # a tensor's own type may use one
            raise SpecError(
                f"GGUF type {gtype.name} does not use an importance matrix; drop --imatrix and the calibration options"
            )
        if gtype.imatrix == "required" and not imatrix:
            raise SpecError(
                f"GGUF type {gtype.name} needs an importance matrix: add --imatrix (calibrates on "
                "the default dataset) or --calib-dataset ..."
            )
        calibration = (spec.calibration or Calibration()) if imatrix else None
        if (spec.pure or spec.tensor_types) and not gtype.quantized:
            raise SpecError(f"--pure and --tensor-types need a quantized GGUF type, not {gtype.name}")
        entries = [parse_tensor_type(e) for e in spec.tensor_types or []]
        needy = sorted({t for _, t in entries if t in IMATRIX_REQUIRED})
        if needy and not imatrix:
            raise SpecError(f"tensor types {', '.join(needy)} need an importance matrix: add --imatrix")
        tensor_types = [f"{name}={kind}" for name, kind in entries] or None
        exclude = list(spec.imatrix_exclude or []) or None
        if exclude and not imatrix:
            raise SpecError("--imatrix-exclude names tensors to round without an importance matrix: add --imatrix")
        needing = sorted(name for name, kind in entries if kind in IMATRIX_REQUIRED and name in set(exclude or []))
        if needing:
            raise SpecError(f"--imatrix-exclude: {needing[0]} has a type that needs the importance matrix")
        update = {"scheme": gtype.name, "imatrix": imatrix, "calibration": calibration, "tensor_types": tensor_types}
        update["imatrix_exclude"] = exclude
        return spec.model_copy(update={"backend": self.name, **update})

    def weight_bits(self, spec: MethodSpec) -> WeightBits:
        """Every tensor at the recipe's main type, embeddings and head included (GGUF quantizes them too)."""
        gtype = lookup(spec.scheme)
        return WeightBits(
            gtype.bits,
            gtype.bits,
            f"{gtype.main} blocks ({gtype.bits:g} bits/weight, embeddings and head included); the {spec.scheme} "
            "recipe keeps some tensors at higher types, and tensors whose rows do not fit its blocks fall back, so "
            "files run larger",
        )

    def for_model(self, spec: MethodSpec, info: ModelInfo) -> MethodSpec:
        from quantlab.llamacpp.ops import supported_architectures

        if info.architecture not in supported_architectures():
            raise SpecError(
                f"llama.cpp's converter does not support {info.architecture} (this llama.cpp knows "
                f"{len(supported_architectures())} architectures; see convert_hf_to_gguf.py "
                "--print-supported-models)"
            )
        # Recorded as what the file's float tensors really are: the converter output, F16 for quantized types.
        return spec.model_copy(update={"dtype": {"F32": "fp32", "BF16": "bf16"}.get(spec.scheme, "fp16")})

    def quantize(
        self, source: SourceModel, spec: MethodSpec, out: Path, log: Log, *, trust_remote_code: bool = False
    ) -> QuantizeOutcome:
        from quantlab.llamacpp import ops

        gtype = lookup(spec.scheme)
        model_file = out / f"model-{gtype.name}.gguf"
        record = None
        imatrix_record = None
        if not gtype.quantized:
            ops.convert(source.path, model_file, gtype.name, log)
        else:
            base = ops.converted_f16(source.path, log)
            if spec.imatrix:
                found = importance_matrix(base, source.path, spec.calibration, log, trust_remote_code=trust_remote_code)
                shutil.copyfile(found.path, out / "imatrix.gguf")
                record, imatrix_record = found.calibration, found.record.model_copy(update={"file": "imatrix.gguf"})
            tensor_types = [parse_tensor_type(e) for e in spec.tensor_types or []]
            listing = ops.inspect(base)
            check_tensor_types(listing, tensor_types)
            check_imatrix_exclude(listing, spec.imatrix_exclude or [])
            imatrix = out / "imatrix.gguf" if spec.imatrix else None
            options = {"pure": bool(spec.pure), "tensor_types": tensor_types, "imatrix_exclude": spec.imatrix_exclude}
            ops.quantize(base, model_file, gtype.name, log, imatrix=imatrix, **options)
        # The HF tokenizer beside the GGUF: the bench tokenizes the evaluation text with it, so the llamacpp
        # runtime scores exactly the ids the transformers runtime scores (llama.cpp never re-tokenizes them).
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(source.path, trust_remote_code=trust_remote_code).save_pretrained(out)
        gguf = read_back(model_file, gtype.name, source, log, trust_remote_code=trust_remote_code)
        gguf = gguf.model_copy(update={"imatrix": imatrix_record})
        notes = []
        if spec.tensor_types:
            notes.append(f"{len(spec.tensor_types)} tensors given their own types (--tensor-types)")
        if spec.imatrix_exclude:
            notes.append(f"{len(spec.imatrix_exclude)} tensors rounded without the importance matrix")
        if gguf.fallbacks:
            notes.append(f"{len(gguf.fallbacks)} tensors fell back from {gtype.main} (rows not a multiple of 256)")
        return QuantizeOutcome(format=f"gguf {gtype.name}", calibration=record, gguf=gguf, notes=notes)
