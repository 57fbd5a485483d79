"""The GPTQModel path shared by gptq and awq: load, `quantize(samples)`, save in the GPTQ or AWQ-GEMM
checkpoint format that transformers (with gptqmodel + optimum installed), vLLM and TGI load.

Facts that shaped this (GPTQModel 7.6.0, CPU): it sorts calibration rows by length unless told not to and
drops rows shorter than 10 tokens, so both are switched off to keep our exact samples; its group sizes are
powers of two from 16 to 1024; its AWQ kernels take fp16/bf16 only.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Literal

from quantlab import calibration, compat
from quantlab.errors import QuantizationError, SpecError
from quantlab.methods.base import Log, QuantizeOutcome
from quantlab.models import SourceModel, quantization_config
from quantlab.spec import MethodSpec, torch_dtype

REQUIRES = ("gptqmodel", "optimum")
EXTRA = "gptqmodel"
LOADS_IN = ("transformers", "vllm", "tgi")  # the GPTQ and AWQ GEMM checkpoint formats
GROUP_SIZES = (16, 32, 64, 128, 256, 512, 1024)
DEFAULT_DAMP = 0.05  # GPTQModel's own default (llm-compressor's is 0.01); recorded in every manifest


def check_group_size(spec: MethodSpec, who: str) -> None:
    if spec.group_size != -1 and spec.group_size not in GROUP_SIZES:
        raise SpecError(
            f"{who} takes --group-size -1 or one of {', '.join(map(str, GROUP_SIZES))}, not {spec.group_size}"
        )


def quantize_config(spec: MethodSpec, kind: Literal["gptq", "awq"]):
    from gptqmodel import QuantizeConfig
    from gptqmodel.quantization import FORMAT, METHOD

    common = {
        "bits": spec.bits,
        "group_size": spec.group_size,
        "sym": spec.symmetric,
        "offload_to_disk": False,
        "device": "cpu",
    }
    if kind == "awq":
        return QuantizeConfig(method=METHOD.AWQ, format=FORMAT.GEMM, **common)
    # act_order: static = GPTQModel's group-aware reordering (GAR, no runtime cost); group = desc_act (g_idx)
    return QuantizeConfig(
        desc_act=spec.act_order == "group", act_group_aware=spec.act_order == "static", damp_percent=spec.damp, **common
    )


def quantize_with(
    kind: Literal["gptq", "awq"], source: SourceModel, spec: MethodSpec, out: Path, log: Log, *, trust_remote_code: bool
) -> QuantizeOutcome:
    tokenizer, samples, record = calibration.for_source(
        source.path, spec.calibration, log, trust_remote_code=trust_remote_code
    )
    rows = [{"input_ids": row.tolist(), "attention_mask": [1] * len(row)} for row in samples]
    with compat.gptqmodel_quietly(), tempfile.TemporaryDirectory(prefix="quantlab-gptqmodel-logs-") as logs:
        from gptqmodel import BACKEND, GPTQModel

        compat.gptqmodel_log_dir(Path(logs))
        log(f"loading {source.ref} as {spec.dtype} (GPTQModel)")
        try:
            model = GPTQModel.load(
                source.path,
                quantize_config(spec, kind),
                dtype=torch_dtype(spec.dtype),
                trust_remote_code=trust_remote_code,
            )
            log(f"{kind} {spec.label()} with GPTQModel (calibrating)")
            model.quantize(
                rows,
                batch_size=1,
                calibration_sort=None,
                calibration_concat_size=None,
                calibration_data_min_length=0,
                backend=BACKEND.AWQ_TORCH if kind == "awq" else BACKEND.GPTQ_TORCH,
            )
            log("saving")
            with contextlib.redirect_stdout(io.StringIO()):  # save() prints the file list and the config
                model.save(str(out))
        except Exception as exc:
            raise QuantizationError(f"GPTQModel failed: {exc}") from exc
    tokenizer.save_pretrained(out)
    qc = quantization_config(out) or {}
    fmt = f"{qc.get('quant_method', kind)} format {qc.get('checkpoint_format') or qc.get('format', '?')}"
    return QuantizeOutcome(format=fmt, calibration=record)
