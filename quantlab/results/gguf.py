"""What llama.cpp really wrote into a GGUF artifact, read back from the file: recorded in the artifact's manifest
and in every result of it, since a GGUF type name is a recipe, not a promise."""

from __future__ import annotations

from quantlab.results.schema import Schema


class ImatrixRecord(Schema):
    """The importance matrix a GGUF was quantized with (computed from the manifest's calibration data)."""

    file: str  # inside the artifact, llama.cpp's GGUF imatrix format
    entries: int  # weight tensors it covers
    tokens: int
    how: str


class GGUFRecord(Schema):
    """What llama.cpp really wrote, read back from the file: a GGUF type name is a recipe, not a promise."""

    file: str  # the model file inside the artifact
    file_type: str  # the recipe asked for, e.g. Q4_K_M
    tensor_types: dict[str, int]  # ggml type → number of tensors
    type_bytes: dict[str, int]  # ggml type → bytes
    bits_per_weight: float  # file bytes × 8 / parameters of the source model
    fallbacks: list[str]  # tensors llama.cpp could not give the recipe's block type, and what they got
    imatrix: ImatrixRecord | None = None
