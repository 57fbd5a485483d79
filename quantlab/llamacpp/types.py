"""The GGUF file types quantlab offers, as llama.cpp names them (`llama-quantize --help`).

A file type is a *recipe*: llama.cpp picks a tensor type per tensor (Q4_K_M keeps some tensors at Q6_K, and
any tensor whose rows are not a multiple of the type's block falls back to another type), so the name alone
never says what was written — the manifest's tensor census does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Bits per weight of ggml's tensor types: block bytes × 8 / values per block (ggml-common.h block structs).
TENSOR_BITS = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.5625,
    "Q5_K": 5.5,
    "Q5_1": 6.0,
    "Q5_0": 5.5,
    "Q4_K": 4.5,
    "Q4_1": 5.0,
    "Q4_0": 4.5,
    "Q3_K": 3.4375,
    "Q2_K": 2.625,
    "IQ4_XS": 4.25,
    "IQ4_NL": 4.5,
    "IQ3_S": 3.4375,
    "IQ3_XXS": 3.0625,
    "IQ2_S": 2.5,
    "IQ2_XS": 2.3125,
    "IQ2_XXS": 2.0625,
}


@dataclass(frozen=True)
class GGUFType:
    name: str
    quantized: bool  # True: made by `llama-quantize <name>`; False: written by the converter as is
    main: str  # the tensor type the recipe aims for (ggml type name)
    imatrix: str  # "required" | "used" (k-quants/IQ: applied when given) | "ignored"
    note: str = ""

    @property
    def bits(self) -> float:
        """Bits per weight of the tensor type the recipe aims for (the file runs larger: see the module doc)."""
        return TENSOR_BITS[self.main]


_TYPES = [
    GGUFType("F32", False, "F32", "ignored", "converter output, no quantization"),
    GGUFType("F16", False, "F16", "ignored", "converter output, no quantization"),
    GGUFType("BF16", False, "BF16", "ignored", "converter output, no quantization"),
    GGUFType("Q8_0", True, "Q8_0", "ignored"),
    GGUFType("Q6_K", True, "Q6_K", "used"),
    GGUFType("Q5_K_M", True, "Q5_K", "used"),
    GGUFType("Q5_K_S", True, "Q5_K", "used"),
    GGUFType("Q5_1", True, "Q5_1", "used"),
    GGUFType("Q5_0", True, "Q5_0", "used"),
    GGUFType("Q4_K_M", True, "Q4_K", "used"),
    GGUFType("Q4_K_S", True, "Q4_K", "used"),
    GGUFType("Q4_1", True, "Q4_1", "used"),
    GGUFType("Q4_0", True, "Q4_0", "used"),
    GGUFType("Q3_K_L", True, "Q3_K", "used"),
    GGUFType("Q3_K_M", True, "Q3_K", "used"),
    GGUFType("Q3_K_S", True, "Q3_K", "used"),
    GGUFType("Q2_K", True, "Q2_K", "used"),
    # IQ types: llama.cpp itself insists on an imatrix only for IQ1/IQ2 and IQ3_XXS; quantlab requires it for
    # every IQ type, because they are designed around one and are not what a user wants without it.
    GGUFType("IQ4_XS", True, "IQ4_XS", "required"),
    GGUFType("IQ4_NL", True, "IQ4_NL", "required"),
    GGUFType("IQ3_M", True, "IQ3_S", "required"),
    GGUFType("IQ3_S", True, "IQ3_S", "required"),
    GGUFType("IQ3_XXS", True, "IQ3_XXS", "required"),
    GGUFType("IQ2_M", True, "IQ2_S", "required"),
    GGUFType("IQ2_S", True, "IQ2_S", "required"),
    GGUFType("IQ2_XS", True, "IQ2_XS", "required"),
    GGUFType("IQ2_XXS", True, "IQ2_XXS", "required"),
]
GGUF_TYPES: dict[str, GGUFType] = {t.name: t for t in _TYPES}

# ggml tensor types stored in 256-value super-blocks; a row length that is not a multiple of 256 cannot use them.
SUPERBLOCK_TYPES = frozenset(
    {
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "IQ4_XS",
        "IQ3_S",
        "IQ3_XXS",
        "IQ2_S",
        "IQ2_XS",
        "IQ2_XXS",
        "IQ1_S",
        "IQ1_M",
    }
)
FLOAT_TYPES = frozenset({"F32", "F16", "BF16"})


def matrix_optional(tensor_type: str) -> bool:
    """Whether a tensor type's rounding uses an importance matrix when given one and is also made without: the
    k-quants and the legacy 4/5-bit types (Q8_0 and float types ignore it; quantlab keeps IQ types with it)."""
    return tensor_type not in FLOAT_TYPES and tensor_type != "Q8_0" and not tensor_type.startswith("IQ")


# Values per block of the block types outside SUPERBLOCK_TYPES (ggml-common.h); float types have no blocks.
SMALL_BLOCK = 32
# A GGUF tensor name as llama.cpp writes them (lower case; llama-quantize lower-cases the patterns it is given).
_TENSOR_NAME = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*")


def block_size(tensor_type: str) -> int:
    """Values per block: a tensor can take a type only if its rows are a multiple of this."""
    if tensor_type in FLOAT_TYPES:
        return 1
    return 256 if tensor_type in SUPERBLOCK_TYPES else SMALL_BLOCK


def tensor_bytes(n_elements: int, tensor_type: str) -> int:
    """Bytes of a tensor of `n_elements` at a type (whole blocks: exact for any tensor whose rows fit)."""
    return int(n_elements * TENSOR_BITS[tensor_type]) // 8


def parse_tensor_type(entry: str) -> tuple[str, str]:
    """`NAME=TYPE` (a tensor's exact GGUF name, a ggml type) → (name, TYPE); anything else → SpecError."""
    from quantlab.errors import SpecError

    name, sep, kind = entry.strip().partition("=")
    kind = kind.strip().upper()
    if not sep or not _TENSOR_NAME.fullmatch(name.strip()):
        raise SpecError(f"--tensor-types entry {entry[:80]!r} is not NAME=TYPE with a GGUF tensor name")
    if kind not in TENSOR_BITS:
        raise SpecError(f"--tensor-types entry {entry[:80]!r}: unknown ggml type; available: {', '.join(TENSOR_BITS)}")
    return name.strip(), kind


def tensor_type_pattern(name: str, tensor_type: str) -> str:
    """The llama-quantize `--tensor-type` entry for exactly this tensor: its patterns are regexes searched in the
    name (the first match wins), so an unanchored `blk.1.ffn_up` would also catch `blk.11.ffn_up`."""
    return f"^{re.escape(name)}$={tensor_type.lower()}"


def lookup(name: str) -> GGUFType:
    from quantlab.errors import SpecError

    found = GGUF_TYPES.get(name.upper())
    if found is None:
        raise SpecError(f"unknown GGUF type {name!r}; available: {', '.join(GGUF_TYPES)}")
    return found
