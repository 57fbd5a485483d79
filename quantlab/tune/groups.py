"""The tensor groups `tune` gives one type each, and the types each group can take.

A group is one kind of weight (attn_q, ffn_down, ...) over a band of consecutive layers: measuring every tensor
alone would take layers × kinds evaluations per candidate type, and neighbouring layers of one kind have similar
sensitivity (llama.cpp's own mixes treat them by position in the stack the same way). The token embedding (and
an untied output head) is a group of its own. Sizes are exact: ggml stores whole blocks, so a tensor of n values
at a type takes n × bits / 8 bytes, and a type is offered to a group only if every row in it is a whole number of
that type's blocks (llama-quantize would otherwise fall back to another type without being asked).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from quantlab.llamacpp.types import TENSOR_BITS, block_size, tensor_bytes

# The ladder offered by default: block-32 types every row of a multiple of 32 can take, the 256-value k-quant and
# IQ types for rows that fit them, and F16. IQ2/IQ3 below 3.4 bits are left to --types to keep the measurement
# count down: each candidate type is one more file made and scored per group. F16 costs no measurement (a group
# at F16 is the reference file itself) and is the only step past the ~3e-3 floor that llama.cpp's 8-bit
# activation rounding puts under every quantized matmul on a CPU, Q8_0's included.
DEFAULT_TYPES = (
    *("Q2_K", "Q3_K", "IQ4_XS", "Q4_K", "Q5_K", "Q6_K"),
    *("Q4_0", "IQ4_NL", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16"),
)
_LAYER = re.compile(r"blk\.(\d+)\.(.+)\.weight")


@dataclass(frozen=True)
class Tensor:
    name: str
    row: int  # values per row (ggml's ne[0]): what a block type must divide
    n_elements: int


@dataclass(frozen=True)
class Group:
    name: str  # e.g. "ffn_down 0-5" or "token_embd"
    tensors: tuple[Tensor, ...]
    types: tuple[str, ...]  # the candidate types every tensor of the group can take, smallest first

    def bytes_at(self, tensor_type: str) -> int:
        return sum(tensor_bytes(t.n_elements, tensor_type) for t in self.tensors)

    @property
    def n_elements(self) -> int:
        return sum(t.n_elements for t in self.tensors)


def quantizable(info: dict) -> list[Tensor]:
    """The 2-D weights llama-quantize quantizes (norms and other 1-D tensors stay F32), from `ops.inspect`."""
    return [
        Tensor(t["name"], int(t["shape"][0]), int(t["n_elements"]))
        for t in info["tensors"]
        if len(t["shape"]) >= 2 and t["name"].endswith(".weight") and "norm" not in t["name"]
    ]


def fits(tensor: Tensor, tensor_type: str) -> bool:
    return tensor.row % block_size(tensor_type) == 0


def make_groups(tensors: list[Tensor], bands: int, types: tuple[str, ...] = DEFAULT_TYPES) -> list[Group]:
    """Each kind's layers cut into `bands` runs of consecutive layers (as even as they divide), plus one group
    per tensor outside the layers; candidate types are those every tensor of the group can take."""
    by_kind: dict[str, dict[int, Tensor]] = {}
    alone: list[Tensor] = []
    for tensor in tensors:
        match = _LAYER.fullmatch(tensor.name)
        if match:
            by_kind.setdefault(match.group(2), {})[int(match.group(1))] = tensor
        else:
            alone.append(tensor)
    groups = [_group(t.name.removesuffix(".weight"), [t], types) for t in alone]
    for kind, layers in by_kind.items():
        order = sorted(layers)
        count = max(1, min(bands, len(order)))
        for b in range(count):
            part = order[b * len(order) // count : (b + 1) * len(order) // count]
            label = f"{kind} {part[0]}" if len(part) == 1 else f"{kind} {part[0]}-{part[-1]}"
            groups.append(_group(label, [layers[i] for i in part], types))
    return groups


def _group(name: str, tensors: list[Tensor], types: tuple[str, ...]) -> Group:
    usable = [t for t in types if all(fits(x, t) for x in tensors)]
    usable.sort(key=lambda t: (TENSOR_BITS[t], types.index(t)))
    return Group(name, tuple(tensors), tuple(usable))
