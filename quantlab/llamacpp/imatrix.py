"""The importance matrix llama.cpp's k-quants and IQ types weigh their rounding error with.

Definition (llama.cpp tools/imatrix/imatrix.cpp, `IMatrixCollector::collect_imatrix`): for every weight matrix
W that multiplies activations x (`ggml_mul_mat(W, x)`), in_sum2[j] = Σ over all evaluated tokens of x[j]²,
and counts = the number of tokens; llama-quantize uses in_sum2 / counts. We collect exactly that with forward
hooks on the source model's `nn.Linear` inputs over the calibration windows, rather than running
`llama-imatrix`, because llama-cpp-python ships only the library, not llama.cpp's tools. The result is
written in llama.cpp's GGUF imatrix format by `gguf_tool.py`, named with llama.cpp's tensor names through
gguf-py's own name map, and is read back through the same format before quantizing.

Differences from llama-imatrix, stated: activations come from the HF model in fp32 (llama-imatrix sees the
F16 GGUF's), and the token embedding lookup is not a matmul in either, so it gets no entry in either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def collect(model_dir: str, samples: np.ndarray, out: Path, log, *, trust_remote_code: bool = False) -> int:
    """Write `<module>.in_sum2` / `<module>.counts` for every Linear into `out` (safetensors); return tokens seen."""
    import torch
    from safetensors.numpy import save_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, trust_remote_code=trust_remote_code)
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name):
        def record(_module, inputs, _output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to(torch.float64)
            sums[name] = sums.get(name, 0) + (x * x).sum(dim=0)
            counts[name] = counts.get(name, 0) + x.shape[0]

        return record

    handles = [
        module.register_forward_hook(hook(name))
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    ]
    try:
        with torch.inference_mode():
            for i, row in enumerate(samples):
                log(f"imatrix: calibration window {i + 1}/{len(samples)}")
                model(torch.as_tensor(row[None], dtype=torch.long))
    finally:
        for handle in handles:
            handle.remove()
    tensors = {}
    for name, total in sums.items():
        tensors[f"{name}.in_sum2"] = total.to(torch.float32).numpy()
        tensors[f"{name}.counts"] = np.array([counts[name]], dtype=np.float32)
    save_file(tensors, str(out))
    return int(samples.size)
