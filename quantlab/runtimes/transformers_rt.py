"""The `transformers` runtime: `AutoModelForCausalLM.from_pretrained` on the artifact directory, unmodified.

Speed is measured with an explicit prefill + cached-decode loop rather than `generate()`, so prefill and
decode are timed separately and exactly, with a fixed number of new tokens and no stopping criteria; the loop is
eager or compiled (`runtimes.compiled`).
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from quantlab.artifact import Artifact
from quantlab.env import fp8_hardware, host_info
from quantlab.errors import BenchError
from quantlab.results import Kernel, RuntimeDescription
from quantlab.roofline import BytesPerToken
from quantlab.runtimes.base import GenTiming, Runtime, Session
from quantlab.runtimes.compiled import DecodeLoop
from quantlab.runtimes.placement import check_placed, placement
from quantlab.spec import dtype_short, torch_dtype

# GPTQModel quantized-linear classes whose forward runs a low-bit kernel on the packed weights (CUDA ones by
# their documented design; the CPU one, TorchAten*, only once switched to inference mode, checked below).
_NATIVE_GPTQMODEL = ("Marlin", "Machete", "Exllama", "Triton", "AwqGEMM", "AwqGEMV", "Bitblas")


def _gptqmodel_kernel(module, dtype: str) -> tuple[Kernel, str]:
    name = type(module).__name__
    if name.startswith("TorchAten"):
        if getattr(module, "linear_mode", None) == "inference":
            return "native", (
                f"gptqmodel {name}: aten::_weight_int4pack_mm_for_cpu on packed int4 weights, activations cast to bf16"
            )
        return "dequantized", f"gptqmodel {name} (training mode): weights dequantized to {dtype} every forward"
    if name in ("TorchLinear", "AwqTorchLinear", "TorchQuantLinear"):
        return "dequantized", f"gptqmodel {name}: weights dequantized to {dtype} in every forward, dense matmul"
    if any(tag in name for tag in _NATIVE_GPTQMODEL):
        return "native", f"gptqmodel {name}: low-bit kernel (not verified by quantlab on this device)"
    return "unknown", f"gptqmodel {name}"


def native_fp8_eligible(quant_config: dict | None) -> bool:
    """Whether transformers' FP8 kernel path (`use_optimized_inference`) computes exactly this checkpoint's
    scheme: FP8 weights with per-channel or per-tensor scales AND FP8 activations. That path always quantizes
    activations per token and reads one scale per output row, so a weight-only FP8 checkpoint would silently
    become W8A8 and a block-scaled one would be misread: those stay on the compressed-tensors route."""
    if not quant_config or quant_config.get("quant_method") != "compressed-tensors":
        return False
    groups = list((quant_config.get("config_groups") or {}).values())
    if not groups:
        return False
    for group in groups:
        weights, acts = group.get("weights") or {}, group.get("input_activations") or {}
        if not (
            weights.get("type") == "float"
            and weights.get("num_bits") == 8
            and weights.get("strategy") in ("channel", "tensor")
            and acts.get("type") == "float"
            and acts.get("num_bits") == 8
        ):
            return False
    return True


def _args_text(args) -> str:
    kind = "FP" if args.type == "float" else "INT"
    return f"{kind}{args.num_bits} per {args.strategy}" + (f" of {args.group_size}" if args.group_size else "")


def _bnb_kernel(modules: list, device: str, ops: set[str]) -> tuple[Kernel, str]:
    """bitsandbytes chooses its kernel per call; name what it does for the shapes quantlab measures."""
    name = type(modules[0]).__name__
    if name == "Linear8bitLt":
        if device.startswith("cuda") or "aten::_int_mm" in ops:
            return "native", (
                f"bitsandbytes LLM.int8 ({len(modules)} modules): int8 matmul on int8 weights and "
                "per-token int8 activations, fp16 matmul for outlier columns (|x| > 6)"
            )
        return "dequantized", f"bitsandbytes LLM.int8 ({len(modules)} modules): int8 weights dequantized, dense matmul"
    state = modules[0].weight.quant_state
    fmt = f"{getattr(state, 'quant_type', '4-bit')} weights"
    compute = dtype_short(modules[0].compute_dtype) if modules[0].compute_dtype is not None else "input dtype"
    if device == "cpu":
        if all(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in modules):
            return "native", (
                f"bitsandbytes CPU 4-bit kernel (gemv_4bit, AVX512-BF16) on repacked {fmt}, bf16 "
                f"activations ({len(modules)} modules)"
            )
        return "dequantized", (
            f"bitsandbytes: {fmt} dequantized to {compute} on every forward, dense matmul ({len(modules)} modules)"
        )
    return "mixed", (
        f"bitsandbytes: fused 4-bit gemv kernel on {fmt} for single-token steps at batch 1 (decode); "
        f"prefill and larger batches dequantize to {compute} and multiply densely ({len(modules)} "
        "modules)"
    )


def _torchao_kernel(linears: list, dtype: str, ops: set[str]) -> tuple[Kernel, str]:
    """torchao's tensor subclasses pick their matmul per layout; the ops the first forward ran say which."""
    kinds = Counter(type(m.weight).__name__ for m in linears if type(m.weight).__name__ != "Parameter")
    if not kinds:
        return "unknown", "torchao: no quantized weights recognised"
    name, count = kinds.most_common(1)[0]
    found = f"torchao {name} ({count} modules)"
    if "aten::_int_mm" in ops:
        return "native", f"{found}: activations quantized to int8 per token, int8×int8 matmul (aten::_int_mm)"
    if "aten::_weight_int4pack_mm" in ops:
        return "native", f"{found}: int4 weights, tinygemm kernel (aten::_weight_int4pack_mm)"
    if "aten::_scaled_mm" in ops:
        return (
            "native",
            f"{found}: FP8 weights and per-token FP8 activations, row-wise scaled matmul (aten::_scaled_mm)",
        )
    if name == "Int8Tensor":
        return "dequantized", (
            f"{found}: int8 weights cast to {dtype} in every forward, dense matmul, rescaled per channel (inductor "
            "can fuse the cast into the matmul when the model is compiled)"
        )
    return "unknown", f"{found}: no low-bit kernel among the ops the first forward ran"


def kernel_path(
    model, quant_config: dict | None, device: str = "cpu", ops: set[str] | None = None
) -> tuple[Kernel, str]:
    """Name the matmul path from the modules actually loaded (after a forward) and the ops that forward ran,
    not from the format's name."""
    import torch

    dtype = dtype_short(model.dtype)
    if not quant_config:
        return "dense", f"dense {dtype} matmul (torch)"
    method = quant_config.get("quant_method", "unknown")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if method == "bitsandbytes":
        quantized = [m for m in linears if type(m).__name__ in ("Linear4bit", "Linear8bitLt")]
        if not quantized:
            return "unknown", "bitsandbytes: no quantized modules recognised"
        return _bnb_kernel(quantized, device, ops or set())
    if method == "compressed-tensors":
        native = [m for m in linears if type(m).__name__ == "CompressedTensorsFP8Linear"]
        if native:
            return "native", (
                f"transformers CompressedTensorsFP8Linear ({len(native)} modules): FP8 weights, "
                "activations quantized to FP8 per token, row-wise scaled FP8 matmul "
                "(torch scaled_mm → cuBLASLt)"
            )
        # compressed-tensors replaces `forward` on the instance with a quantize-dequantize wrapper; its
        # per-call overhead is part of what this path costs, so say it is there.
        wrapped = sum("forward" in vars(m) for m in linears)
        wrapper = f"; compressed-tensors forward wrapper on {wrapped} modules" if wrapped else ""
        acts = {
            _args_text(m.quantization_scheme.input_activations)
            for m in linears
            if getattr(getattr(m, "quantization_scheme", None), "input_activations", None) is not None
        }
        if acts:
            return "emulated", (
                f"compressed-tensors: weights decompressed to {dtype}; activations quantized and "
                f"dequantized in software ({', '.join(sorted(acts))}) before a dense {dtype} "
                f"matmul{wrapper}"
            )
        if any(type(m).__name__ == "CompressedLinear" for m in linears):
            return "dequantized", (
                f"compressed-tensors CompressedLinear: weights decompressed to {dtype} on "
                f"every forward, dense matmul{wrapper}"
            )
        if any("weight_packed" in name for name, _ in model.named_parameters()):
            return "dequantized", f"compressed-tensors packed weights, {dtype} matmul{wrapper}"
        return "dequantized", f"compressed-tensors weights decompressed to {dtype} at load; dense matmul{wrapper}"
    if method == "torchao":
        return _torchao_kernel(linears, dtype, ops or set())
    quantized = [m for m in model.modules() if hasattr(m, "qweight")]
    if quantized:
        found = Counter(_gptqmodel_kernel(m, dtype) for m in quantized)
        (kernel, detail), count = found.most_common(1)[0]
        if len(found) > 1:
            return "unknown", "mixed kernels: " + "; ".join(f"{n}× {d}" for (_, d), n in found.items())
        return kernel, f"{detail} ({count} modules)"
    return "unknown", f"{method}: no quantized modules recognised"


def _stored(tensor) -> list[tuple[int, int]]:
    """(data pointer, bytes) of what a tensor really holds: a tensor subclass (torchao's Int8Tensor, ...) reports
    the dense shape's bytes and no data pointer of its own, so its inner tensors (qdata, scale, ...) count."""
    if hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return [entry for name in names for entry in _stored(getattr(tensor, name))]
    return [(tensor.data_ptr(), tensor.nbytes)]


class TransformersSession(Session):
    def __init__(self, artifact: Artifact, device: str, dtype: str, compiled: bool = False, gpus: int = 1) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM

        self.device = device
        self.config_dir = artifact.path
        config = json.loads((artifact.path / "config.json").read_text())
        quant_config = config.get("quantization_config")
        extra = {}
        if native_fp8_eligible(quant_config) and fp8_hardware(device):
            from transformers import CompressedTensorsConfig

            # A loading attribute: merged into the checkpoint's own config, the weights stay in FP8.
            extra["quantization_config"] = CompressedTensorsConfig(use_optimized_inference=True)
        self.model = AutoModelForCausalLM.from_pretrained(
            artifact.path, dtype=torch_dtype(dtype), **placement(device, gpus), **extra
        )
        self.model.eval()
        spread = check_placed(self.model, device, gpus)
        # compressed-tensors decompresses packed weights, and bitsandbytes repacks 4-bit weights for its CPU
        # kernel, on the first forward: run one now, so that load time and memory include it, and record the
        # ops it ran so the kernel path below describes what the measured forwards really use.
        from torch.profiler import ProfilerActivity, profile

        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            self.model(input_ids=torch.zeros((1, 8), dtype=torch.long, device=device), use_cache=False)
        ops = {event.key for event in prof.key_averages()}
        kernel, detail = kernel_path(self.model, quant_config, device, ops)
        self.loop = DecodeLoop(self.model, device, compiled=compiled)
        device_name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else host_info().cpu
        self._description = RuntimeDescription(
            runtime="transformers",
            runtime_version=transformers.__version__,
            device=device,
            device_name=device_name,
            threads=torch.get_num_threads(),
            compute_dtype=dtype_short(self.model.dtype),
            kernel=kernel,
            kernel_detail=detail,
            placement=spread,
        )

    def describe(self) -> RuntimeDescription:
        # the decode loop only where this session generated: a quality-only session decoded nothing
        return self._description.model_copy(update={"decode": self.loop.describe() if self.loop.used else None})

    def logits(self, ids: np.ndarray):
        import torch

        with torch.inference_mode():
            batch = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=self.device)[None, :]
            return self.model(input_ids=batch, use_cache=False).logits[0].float()

    def timed_generate(self, prompts: np.ndarray, new_tokens: int) -> GenTiming:
        import torch

        if new_tokens < 2:
            raise ValueError("new_tokens must be ≥ 2 to time decode separately from prefill")
        batch = torch.as_tensor(np.asarray(prompts, dtype=np.int64), device=self.device)
        tokens, prefill, decode = self.loop.generate(batch, new_tokens)
        return GenTiming(
            batch_size=batch.shape[0],
            prompt_tokens=batch.shape[1],
            new_tokens=new_tokens,
            prefill_s=prefill,
            decode_s=decode,
            tokens=tokens.cpu().numpy(),
        )

    def profile_decode(self, prompts: np.ndarray, new_tokens: int) -> None:
        import torch

        self.loop.profile_decode(torch.as_tensor(np.asarray(prompts, dtype=np.int64), device=self.device), new_tokens)

    def bytes_per_token(self, prompt_tokens: int, new_tokens: int) -> BytesPerToken:
        """Every parameter and buffer as loaded (a model decompressed to bf16 reads bf16 bytes; bitsandbytes'
        packed weights their packed bytes), less an untied input embedding, which a decode step gathers one
        row of."""
        from quantlab.roofline import kv_bytes_read

        model = self.model
        # persistent buffers too: GPTQ kernels keep their packed weights and scales in buffers
        buffers = [
            b
            for m in model.modules()
            for name, b in m._buffers.items()
            if b is not None and name not in m._non_persistent_buffers_set
        ]
        tensors = dict(entry for t in [*model.parameters(), *buffers] for entry in _stored(t))
        weights = sum(tensors.values())
        embedding = model.get_input_embeddings().weight
        head = model.get_output_embeddings()
        tied = head is not None and head.weight.data_ptr() == embedding.data_ptr()
        if not tied:
            weights -= embedding.nbytes
        dtype = dtype_short(model.dtype)
        kv, kv_detail = kv_bytes_read(
            self.config_dir, dtype if dtype in ("fp32", "bf16", "fp16") else "bf16", prompt_tokens, new_tokens
        )
        embedding = "tied embedding read as the output head" if tied else "untied input embedding excluded"
        detail = f"weights {weights:,} B as loaded ({embedding}) + {kv_detail}"
        return BytesPerToken(weights=weights, kv=kv, detail=detail)

    def hf_model(self):
        return self.model

    def close(self) -> None:
        del self.model
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


class TransformersRuntime(Runtime):
    name = "transformers"
    compiles = True
    spans_gpus = True

    def supports(self, artifact: Artifact) -> bool:
        return "transformers" in artifact.manifest.loads_in and (artifact.path / "config.json").is_file()

    def device_problem(self, artifact: Artifact, device: str) -> str | None:
        spec = artifact.manifest.spec
        if spec.method == "torchao" and spec.scheme:
            from quantlab.methods.torchao_backend import device_problem

            return device_problem(spec.scheme, device)
        return None

    def load(
        self,
        artifact: Artifact,
        *,
        device: str,
        dtype: str = "auto",
        kv_cache_dtype: str | None = None,
        compiled: bool = False,
        gpus: int = 1,
    ) -> Session:
        problem = self.device_problem(artifact, device)
        if problem:
            raise BenchError(f"{artifact.path.name}: {problem}")
        if kv_cache_dtype is not None:
            # A perplexity window is one forward pass, which never reads a cache back: a quantized cache would
            # leave the quality columns untouched and the table would call it free.
            raise BenchError("the transformers runtime measures no quantized KV cache; --kv-cache-dtype is for GGUF")
        if gpus > 1 and compiled:
            raise BenchError("a compiled decode runs on one GPU; a model over several decodes eager (drop --compile)")
        return TransformersSession(artifact, device, dtype, compiled, gpus)
