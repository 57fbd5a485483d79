"""Run `llama_model_quantize` (llama.cpp's quantizer, through llama-cpp-python) in its own process.

Its own process because llama.cpp aborts the whole process on some errors (GGML_ABORT) and prints its
per-tensor log on the C stderr; the parent turns a failure into one line and keeps the log for --debug.

    python -m quantlab.llamacpp.quantize IN.gguf OUT.gguf FTYPE_CONSTANT THREADS [IMATRIX.safetensors]

The imatrix file holds llama-quantize's normalised values (in_sum2 / counts) per llama.cpp tensor name, as
`gguf_tool.py read-imatrix` writes them from an imatrix GGUF.
"""

from __future__ import annotations

import ctypes
import sys


def main(argv: list[str]) -> int:
    import llama_cpp

    src, dst, ftype_name, threads = argv[:4]
    imatrix_path = argv[4] if len(argv) > 4 else None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype_name)
    params.nthread = int(threads)
    keep = []  # the C side holds raw pointers: keep every buffer alive until the call returns
    if imatrix_path:
        from safetensors.numpy import load_file

        entries = load_file(imatrix_path)
        array = (llama_cpp.llama_model_imatrix_data * (len(entries) + 1))()
        for i, (name, values) in enumerate(sorted(entries.items())):
            buffer = values.astype("float32").copy()
            keep.append(buffer)
            array[i].name = name.encode()
            array[i].data = buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            array[i].size = buffer.size
        array[len(entries)].name = None  # terminator, as llama-quantize writes it
        params.imatrix = ctypes.cast(array, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        keep.append(array)
    status = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
