"""The `transformers` runtime: `AutoModelForCausalLM.from_pretrained` on the artifact directory, unmodified.

Speed is measured with an explicit prefill + cached-decode loop rather than `generate()`, so prefill and
decode are timed separately and exactly, with a fixed number of new tokens and no stopping criteria; the loop is
eager or compiled (`runtimes.compiled`).
"""

from __future__ import annotations

import numpy as np

from quantlab.artifact import Artifact
from quantlab.env import fp8_hardware, host_info
from quantlab.models import quantization_config
from quantlab.results import RuntimeDescription
from quantlab.roofline import BytesPerToken
from quantlab.runtimes import gemlite_kernels
from quantlab.runtimes.base import Capabilities, GenTiming, LoadRequest, Runtime, Session
from quantlab.runtimes.compiled import DecodeLoop
from quantlab.runtimes.kernel_labels import gemlite_kernel, kernel_path, native_fp8_eligible
from quantlab.runtimes.placement import check_placed, placement
from quantlab.spec import dtype_short, torch_dtype


def _stored(tensor) -> list[tuple[int, int]]:
    """(data pointer, bytes) of what a tensor really holds: a tensor subclass (torchao's Int8Tensor, ...) reports
    the dense shape's bytes and no data pointer of its own, so its inner tensors (qdata, scale, ...) count."""
    if hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return [entry for name in names for entry in _stored(getattr(tensor, name))]
    return [(tensor.data_ptr(), tensor.nbytes)]


class TransformersSession(Session):
    def __init__(
        self,
        artifact: Artifact,
        device: str,
        dtype: str,
        compiled: bool = False,
        gpus: int = 1,
        kernel: str | None = None,
    ) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM

        self.device = device
        self.config_dir = artifact.path
        quant_config = quantization_config(artifact.path)
        extra = {}
        if native_fp8_eligible(quant_config) and fp8_hardware(device) and not kernel:
            from transformers import CompressedTensorsConfig

            # A loading attribute: merged into the checkpoint's own config, the weights stay in FP8.
            extra["quantization_config"] = CompressedTensorsConfig(use_optimized_inference=True)
        self.model = AutoModelForCausalLM.from_pretrained(
            artifact.path, dtype=torch_dtype(dtype), **placement(device, gpus), **extra
        )
        self.model.eval()
        spread = check_placed(self.model, device, gpus)
        # --kernel: swapped in before the first forward, which would decompress the packed weights it reads
        repacked = gemlite_kernels.repack(self.model, device) if kernel == "gemlite" and quant_config else None
        # compressed-tensors decompresses packed weights, and bitsandbytes repacks 4-bit weights for its CPU
        # kernel, on the first forward: run one now, so that load time and memory include it, and record the
        # ops it ran so the kernel path below describes what the measured forwards really use.
        from torch.profiler import ProfilerActivity, profile

        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            self.model(input_ids=torch.zeros((1, 8), dtype=torch.long, device=device), use_cache=False)
        ops = {event.key for event in prof.key_averages()}
        if repacked:
            kind, detail = gemlite_kernel(repacked, ops)
        else:
            kind, detail = kernel_path(self.model, quant_config, device, ops)
        self.loop = DecodeLoop(self.model, device, compiled=compiled)
        device_name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else host_info().cpu
        self._description = RuntimeDescription(
            runtime="transformers",
            runtime_version=transformers.__version__,
            device=device,
            device_name=device_name,
            threads=torch.get_num_threads(),
            compute_dtype=dtype_short(self.model.dtype),
            kernel=kind,
            kernel_detail=detail,
            kernel_option=kernel if repacked else None,
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
    loads_from = "transformers"
    capabilities = Capabilities(scores_tasks=True, compiles=True, spans_gpus=True, kernels=gemlite_kernels.KERNELS)

    def supports(self, artifact: Artifact) -> bool:
        return super().supports(artifact) and (artifact.path / "config.json").is_file()

    def kernel_problem(self, artifact: Artifact, kernel: str, device: str) -> str | None:
        return gemlite_kernels.problem(quantization_config(artifact.path), device)

    def open(self, artifact: Artifact, request: LoadRequest) -> Session:
        # No KV-cache types: a perplexity window is one forward pass, which never reads a cache back, so a
        # quantized cache would leave the quality columns untouched and the table would call it free.
        r = request
        return TransformersSession(artifact, r.device, r.dtype, r.compiled, r.gpus, r.kernel)
