"""The `transformers` runtime: `AutoModelForCausalLM.from_pretrained` on the artifact directory, unmodified.

Speed is measured with an explicit prefill + cached-decode loop rather than `generate()`, so prefill and
decode are timed separately and exactly, with a fixed number of new tokens and no stopping criteria.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np

from quantlab.artifact import Artifact
from quantlab.runtimes.base import GenTiming, Kernel, Runtime, RuntimeDescription, Session
from quantlab.spec import dtype_short, torch_dtype


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# GPTQModel quantized-linear classes whose forward runs a low-bit kernel on the packed weights (CUDA ones by
# their documented design; the CPU one, TorchAten*, only once switched to inference mode, checked below).
_NATIVE_GPTQMODEL = ("Marlin", "Machete", "Exllama", "Triton", "AwqGEMM", "AwqGEMV", "Bitblas")


def _gptqmodel_kernel(module, dtype: str) -> tuple[Kernel, str]:
    name = type(module).__name__
    if name.startswith("TorchAten"):
        if getattr(module, "linear_mode", None) == "inference":
            return "native", (f"gptqmodel {name}: aten::_weight_int4pack_mm_for_cpu on packed int4 weights, "
                              "activations cast to bf16")
        return "dequantized", f"gptqmodel {name} (training mode): weights dequantized to {dtype} every forward"
    if name in ("TorchLinear", "AwqTorchLinear", "TorchQuantLinear"):
        return "dequantized", f"gptqmodel {name}: weights dequantized to {dtype} in every forward, dense matmul"
    if any(tag in name for tag in _NATIVE_GPTQMODEL):
        return "native", f"gptqmodel {name}: low-bit kernel (not verified by quantlab on this device)"
    return "unknown", f"gptqmodel {name}"


def kernel_path(model, quant_config: dict | None) -> tuple[Kernel, str]:
    """Name the matmul path from the modules actually loaded (after a forward), not from the format's name."""
    import torch

    dtype = dtype_short(model.dtype)
    if not quant_config:
        return "dense", f"dense {dtype} matmul (torch)"
    method = quant_config.get("quant_method", "unknown")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if method == "compressed-tensors":
        # compressed-tensors replaces `forward` on the instance with a quantize-dequantize wrapper; its
        # per-call overhead is part of what this path costs, so say it is there.
        wrapped = sum("forward" in vars(m) for m in linears)
        wrapper = f"; compressed-tensors forward wrapper on {wrapped} modules" if wrapped else ""
        if any(type(m).__name__ == "CompressedLinear" for m in linears):
            return "dequantized", (f"compressed-tensors CompressedLinear: weights decompressed to {dtype} on "
                                   f"every forward, dense matmul{wrapper}")
        if any("weight_packed" in name for name, _ in model.named_parameters()):
            return "dequantized", f"compressed-tensors packed weights, {dtype} matmul{wrapper}"
        return "dequantized", f"compressed-tensors weights decompressed to {dtype} at load; dense matmul{wrapper}"
    quantized = [m for m in model.modules() if hasattr(m, "qweight")]
    if quantized:
        found = Counter(_gptqmodel_kernel(m, dtype) for m in quantized)
        (kernel, detail), count = found.most_common(1)[0]
        if len(found) > 1:
            return "unknown", "mixed kernels: " + "; ".join(f"{n}× {d}" for (_, d), n in found.items())
        return kernel, f"{detail} ({count} modules)"
    return "unknown", f"{method}: no quantized modules recognised"


class TransformersSession(Session):
    def __init__(self, artifact: Artifact, device: str, dtype: str) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM

        self.device = device
        self.model = AutoModelForCausalLM.from_pretrained(artifact.path, dtype=torch_dtype(dtype),
                                                          device_map=device)
        self.model.eval()
        # compressed-tensors decompresses packed weights on the first forward: run one now, so that load time
        # and memory include it and the kernel path below describes what the measured forwards really use.
        with torch.inference_mode():
            self.model(input_ids=torch.zeros((1, 2), dtype=torch.long, device=device), use_cache=False)
        config = json.loads((artifact.path / "config.json").read_text())
        kernel, detail = kernel_path(self.model, config.get("quantization_config"))
        device_name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else \
            _cpu_name()
        self._description = RuntimeDescription(
            runtime="transformers", runtime_version=transformers.__version__, device=device,
            device_name=device_name, threads=torch.get_num_threads(),
            compute_dtype=dtype_short(self.model.dtype), kernel=kernel, kernel_detail=detail,
        )

    def describe(self) -> RuntimeDescription:
        return self._description

    def logits(self, ids: np.ndarray):
        import torch

        with torch.inference_mode():
            batch = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=self.device)[None, :]
            return self.model(input_ids=batch, use_cache=False).logits[0].float()

    def timed_generate(self, prompts: np.ndarray, new_tokens: int) -> GenTiming:
        import torch
        from transformers import DynamicCache

        if new_tokens < 2:
            raise ValueError("new_tokens must be ≥ 2 to time decode separately from prefill")
        batch = torch.as_tensor(np.asarray(prompts, dtype=np.int64), device=self.device)
        with torch.inference_mode():
            cache = DynamicCache(config=self.model.config)
            _sync(self.device)
            start = time.perf_counter()
            # logits_to_keep=1: only the last position's logits, as generate() and serving engines do.
            out = self.model(input_ids=batch, past_key_values=cache, use_cache=True, logits_to_keep=1)
            token = out.logits[:, -1, :].argmax(-1, keepdim=True)
            _sync(self.device)
            prefill = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(new_tokens - 1):
                out = self.model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
                token = out.logits[:, -1, :].argmax(-1, keepdim=True)
            _sync(self.device)
            decode = time.perf_counter() - start
        return GenTiming(batch_size=batch.shape[0], prompt_tokens=batch.shape[1], new_tokens=new_tokens,
                         prefill_s=prefill, decode_s=decode)

    def close(self) -> None:
        del self.model
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


def _cpu_name() -> str:
    from quantlab.env import host_info

    return host_info().cpu


class TransformersRuntime(Runtime):
    name = "transformers"

    def supports(self, artifact: Artifact) -> bool:
        return "transformers" in artifact.manifest.loads_in and (artifact.path / "config.json").is_file()

    def load(self, artifact: Artifact, *, device: str, dtype: str = "auto") -> Session:
        return TransformersSession(artifact, device, dtype)
