"""GGUF reading and imatrix writing with llama.cpp's own `gguf-py`, run as a separate process.

This file is executed as a script with the `gguf-py` of the installed llama.cpp first on PYTHONPATH (see
`source.tools_env`), so it must import nothing from quantlab. It talks JSON on stdout.

    python gguf_tool.py inspect MODEL.gguf
    python gguf_tool.py write-imatrix SUMS.safetensors MODEL.gguf OUT.gguf DATASET CHUNKS CHUNK_SIZE
    python gguf_tool.py read-imatrix IMATRIX.gguf OUT.safetensors
    python gguf_tool.py architectures          (HF architectures the converter next to gguf-py supports)

The imatrix file is llama.cpp's GGUF imatrix format, as `llama-imatrix` writes it (tools/imatrix/imatrix.cpp):
`general.type = imatrix`, `imatrix.datasets`, `imatrix.chunk_count`, `imatrix.chunk_size`, and per weight
tensor `<name>.in_sum2` (sum over tokens of each input channel's squared activation) and `<name>.counts` (the
number of tokens). `read-imatrix` normalises like llama-quantize's loader: in_sum2 / counts.
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


def _name_map(model_path: str):
    info = inspect(model_path)
    arch_name = info["kv"]["general.architecture"]
    arch = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch_name]
    blocks = int(info["kv"][f"{arch_name}.block_count"])
    shapes = {t["name"]: t["shape"] for t in info["tensors"]}
    return gguf.get_tensor_name_map(arch, blocks), shapes


def write_imatrix(sums_path: str, model_path: str, out_path: str, dataset: str, chunks: str, chunk_size: str) -> dict:
    from safetensors.numpy import load_file

    sums = load_file(sums_path)
    name_map, shapes = _name_map(model_path)
    writer = gguf.GGUFWriter(out_path, arch="")  # arch "" → no general.architecture, like llama-imatrix
    writer.add_type(gguf.GGUFType.IMATRIX)
    writer.add_array(gguf.Keys.IMatrix.DATASETS, [dataset])
    writer.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, int(chunks))
    writer.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, int(chunk_size))
    written, skipped = [], []
    for key in sorted(k for k in sums if k.endswith(".in_sum2")):
        hf_name = key[: -len(".in_sum2")]
        name = name_map.get_name(hf_name + ".weight", try_suffixes=(".weight",))
        values = sums[key].astype(np.float32)
        if name is None or name not in shapes or shapes[name][0] != values.shape[-1]:
            skipped.append(hf_name)
            continue
        writer.add_tensor(f"{name}.in_sum2", values.reshape(1, -1))
        writer.add_tensor(f"{name}.counts", sums[hf_name + ".counts"].astype(np.float32).reshape(1, 1))
        written.append(name)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"entries": len(written), "skipped": skipped}


def read_imatrix(path: str, out_path: str) -> dict:
    from safetensors.numpy import save_file

    reader = gguf.GGUFReader(path, "r")
    kv = {name: _field_value(field) for name, field in reader.fields.items()}
    if kv.get("general.type") != "imatrix":
        raise SystemExit(f"{path} is not an imatrix GGUF (general.type={kv.get('general.type')!r})")
    tensors = {t.name: np.array(t.data, dtype=np.float32) for t in reader.tensors}
    values = {}
    for key, in_sum2 in tensors.items():
        if not key.endswith(".in_sum2"):
            continue
        name = key[: -len(".in_sum2")]
        counts = tensors[name + ".counts"].reshape(-1)
        rows = in_sum2.reshape(len(counts), -1)
        normalised = np.where(counts[:, None] > 0, rows / np.maximum(counts[:, None], 1), 1.0)
        values[name] = np.ascontiguousarray(normalised.reshape(-1), dtype=np.float32)
    save_file(values, out_path)
    return {
        "entries": len(values),
        "datasets": kv.get("imatrix.datasets"),
        "chunk_count": kv.get("imatrix.chunk_count"),
        "chunk_size": kv.get("imatrix.chunk_size"),
    }


def architectures() -> list[str]:
    from conversion import TEXT_MODEL_MAP  # llama.cpp's converter package, found next to gguf-py

    return sorted(TEXT_MODEL_MAP)


def main(argv: list[str]) -> int:
    commands = {
        "inspect": inspect,
        "write-imatrix": write_imatrix,
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
