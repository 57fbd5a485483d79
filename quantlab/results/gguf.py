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


class TunedGroup(Schema):
    """One group of tensors as `quantlab tune` allocated it."""

    name: str  # e.g. "ffn_down 0-5"
    tensors: int
    type: str  # the ggml type chosen
    bytes: int
    kld: float  # measured with this group alone at this type, every other weight F16
    imatrix: bool | None = None  # rounded with the importance matrix (None: not recorded)


class TuneRecord(Schema):
    """How `quantlab tune` found a GGUF's per-tensor types: what it aimed at, what it measured, what it chose."""

    objective: str  # e.g. "budget 96MB (96.00 MB)" or "max predicted KLD 0.02"
    max_bytes: int | None = None
    max_kld: float | None = None
    candidate_types: list[str]
    sensitivity: str  # how the group figures were measured: text, windows, base, imatrix, count, cost
    allocator: str
    groups: list[TunedGroup]
    predicted_bytes: int
    predicted_kld: float  # the sum of the chosen groups' figures: the allocator's model, not a measurement
    imatrix: str | None = None  # whether the file was made with the importance matrix, and the measurement why
    seconds: float  # from the start of tune to the allocation (conversion, imatrix, sensitivity)


class GGUFRecord(Schema):
    """What llama.cpp really wrote, read back from the file: a GGUF type name is a recipe, not a promise."""

    file: str  # the model file inside the artifact
    file_type: str  # the recipe asked for, e.g. Q4_K_M
    tensor_types: dict[str, int]  # ggml type → number of tensors
    type_bytes: dict[str, int]  # ggml type → bytes
    bits_per_weight: float  # file bytes × 8 / parameters of the source model
    fallbacks: list[str]  # tensors llama.cpp could not give the recipe's block type, and what they got
    imatrix: ImatrixRecord | None = None
    tune: TuneRecord | None = None  # set when `quantlab tune` chose the tensor types
