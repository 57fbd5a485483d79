"""GGUF and imatrix reading with llama.cpp's own `gguf-py`, run as a separate process.

This file is executed as a script with the `gguf-py` of the installed llama.cpp first on PYTHONPATH (see
`source.tools_env`), so it must import nothing from quantlab. It talks JSON on stdout.

    python gguf_tool.py inspect MODEL.gguf
    python gguf_tool.py read-imatrix IMATRIX.gguf
    python gguf_tool.py architectures          (HF architectures the converter next to gguf-py supports)

The imatrix file is llama.cpp's GGUF imatrix format, as `llama-imatrix` writes it (tools/imatrix/imatrix.cpp):
`general.type = imatrix`, `imatrix.datasets`, `imatrix.chunk_count`, `imatrix.chunk_size`, and per weight
tensor `<name>.in_sum2` (sum over tokens of each input channel's squared activation) and `<name>.counts` (the
number of tokens). `read-imatrix` summarises it: entries, chunks, and the token counts summed over.
"""

from __future__ import annotations

import json
import sys

import gguf
import numpy as np


def _field_value(field):
    if not field.types:
        return None
    kind = field.types[0]
    if kind == gguf.GGUFValueType.ARRAY:
        if field.types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
        return None  # numeric arrays (token scores ...) are not needed here
    if kind == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
    return field.parts[field.data[0]].tolist()[0]


def inspect(path: str) -> dict:
    reader = gguf.GGUFReader(path, "r")
    wanted = (
        "general.architecture",
        "general.file_type",
        "general.type",
        "general.name",
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
    )
    kv = {}
    for name, field in reader.fields.items():
        if name in wanted or name.endswith(".block_count") or name.startswith(("quantize.", "imatrix.")):
            kv[name] = _field_value(field)
    tensors = [
        {
            "name": t.name,
            "type": gguf.GGMLQuantizationType(t.tensor_type).name,
            "shape": [int(x) for x in t.shape],  # ggml order: shape[0] is the row length
            "n_elements": int(t.n_elements),
            "n_bytes": int(t.n_bytes),
        }
        for t in reader.tensors
    ]
    return {"kv": kv, "tensors": tensors}


def read_imatrix(path: str) -> dict:
    """What an imatrix GGUF covers: its entries, chunks and the token counts it summed over."""
    reader = gguf.GGUFReader(path, "r")
    kv = {name: _field_value(field) for name, field in reader.fields.items()}
    if kv.get("general.type") != "imatrix":
        raise SystemExit(f"{path} is not an imatrix GGUF (general.type={kv.get('general.type')!r})")
    counts = {
        t.name[: -len(".counts")]: float(np.array(t.data, dtype=np.float32).reshape(-1).max())
        for t in reader.tensors
        if t.name.endswith(".counts")
    }
    return {
        "entries": len(counts),
        "datasets": kv.get("imatrix.datasets"),
        "chunk_count": kv.get("imatrix.chunk_count"),
        "chunk_size": kv.get("imatrix.chunk_size"),
        "counts": sorted(set(counts.values())),
    }


def architectures() -> list[str]:
    from conversion import TEXT_MODEL_MAP  # llama.cpp's converter package, found next to gguf-py

    return sorted(TEXT_MODEL_MAP)


def main(argv: list[str]) -> int:
    commands = {
        "inspect": inspect,
        "read-imatrix": read_imatrix,
        "architectures": architectures,
    }
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        answer = commands[argv[0]](*argv[1:])
    except (ValueError, OSError, KeyError, IndexError, AssertionError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
