"""What does quantlab add on top of the library it wraps? The same quantization, once through
`quantlab.quantize` and once as the bare library call (the few lines a user would write), wall time each.

    python -m benchmarks.crosschecks.quantize_vs_bare_library [--model default]
        [--methods gptq/llmcompressor,gptq/gptqmodel,awq/llmcompressor] [--calib-samples 16] [--calib-seq-len 256]
        [--group-size 64]

quantlab's time includes everything it does beyond the library: resolving the model and hashing it, reading
the architecture, tokenizing the calibration text, hashing the output files, writing the manifest. The bare
call gets the calibration token ids ready-made. Target: overhead ≤ 10%, one row per method printed as soon as it
is measured. quantlab's side calls `quantlab.quantize` itself into a fresh folder, not `obtain`: quantizing is
what is timed, so nothing may be reused.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def bare_llmcompressor(method: str, model_dir: str, samples: np.ndarray, group: int, out: Path) -> None:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quantlab import compat

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    sym = method != "awq"
    scheme = QuantizationScheme(
        targets=["Linear"],
        weights=QuantizationArgs(num_bits=4, type="int", symmetric=sym, strategy="group", group_size=group),
    )
    if method == "gptq":
        recipe = [GPTQModifier(config_groups={"g": scheme}, ignore=["lm_head"], dampening_frac=0.01, actorder="static")]
    else:
        recipe = [AWQModifier(n_grid=20), QuantizationModifier(config_groups={"g": scheme}, ignore=["lm_head"])]
    data = Dataset.from_dict({"input_ids": samples.tolist(), "attention_mask": np.ones_like(samples).tolist()})
    with compat.llmcompressor_on_cpu():
        oneshot(
            model=model,
            recipe=recipe,
            dataset=data,
            num_calibration_samples=len(samples),
            max_seq_length=samples.shape[1],
            shuffle_calibration_samples=False,
        )
    model.save_pretrained(out, save_compressed=True)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)


def bare_gptqmodel(method: str, model_dir: str, samples: np.ndarray, group: int, out: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    from quantlab import compat

    with compat.gptqmodel_quietly(), tempfile.TemporaryDirectory() as logs:
        from gptqmodel import BACKEND, GPTQModel, QuantizeConfig
        from gptqmodel.quantization import FORMAT, METHOD

        compat.gptqmodel_log_dir(Path(logs))
        if method == "gptq":
            config = QuantizeConfig(
                bits=4,
                group_size=group,
                sym=True,
                desc_act=False,
                act_group_aware=True,
                damp_percent=0.05,
                offload_to_disk=False,
                device="cpu",
            )
            dtype, backend = torch.bfloat16, BACKEND.GPTQ_TORCH
        else:
            config = QuantizeConfig(
                bits=4,
                group_size=group,
                sym=False,
                method=METHOD.AWQ,
                format=FORMAT.GEMM,
                offload_to_disk=False,
                device="cpu",
            )
            dtype, backend = torch.bfloat16, BACKEND.AWQ_TORCH
        model = GPTQModel.load(model_dir, config, dtype=dtype)
        calib = [{"input_ids": row.tolist(), "attention_mask": [1] * len(row)} for row in samples]
        model.quantize(
            calib,
            batch_size=1,
            calibration_sort=None,
            calibration_concat_size=None,
            calibration_data_min_length=0,
            backend=backend,
        )
        with contextlib.redirect_stdout(io.StringIO()):
            model.save(str(out))
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)


BARE = {"llmcompressor": bare_llmcompressor, "gptqmodel": bare_gptqmodel}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--methods", default="gptq/llmcompressor,gptq/gptqmodel,awq/llmcompressor")
    parser.add_argument("--calib-samples", type=int, default=16)
    parser.add_argument("--calib-seq-len", type=int, default=256)
    parser.add_argument("--group-size", type=int, default=64)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    from transformers import AutoTokenizer

    from quantlab.calibration import calibration_samples
    from quantlab.models import resolve_model
    from quantlab.quantizer import quantize
    from quantlab.spec import Calibration, MethodSpec

    source = resolve_model(args.model)
    calibration = Calibration(n_samples=args.calib_samples, seq_len=args.calib_seq_len)
    samples, _ = calibration_samples(AutoTokenizer.from_pretrained(source.path), calibration)
    print(f"model {args.model}, 4-bit g{args.group_size}, calibration {args.calib_samples} × {args.calib_seq_len}")
    print("| method/backend | bare library s | quantlab s | overhead % |\n|---|---:|---:|---:|", flush=True)
    with tempfile.TemporaryDirectory(prefix="quantlab-overhead-") as tmp:
        for item in args.methods.split(","):
            method, backend = item.split("/")
            out = Path(tmp) / item.replace("/", "-")
            start = time.perf_counter()
            BARE[backend](method, source.path, samples, args.group_size, out / "bare")
            bare = time.perf_counter() - start
            spec = MethodSpec(
                method=method, backend=backend, bits=4, group_size=args.group_size, calibration=calibration
            )
            start = time.perf_counter()
            quantize(args.model, spec, out / "quantlab")
            ours = time.perf_counter() - start
            shutil.rmtree(out)
            # A row as soon as it is measured: the AWQ rows take minutes each.
            print(f"| {item} | {bare:.1f} | {ours:.1f} | {(ours / bare - 1) * 100:+.1f} |", flush=True)


if __name__ == "__main__":
    main()
