"""Why the SpinQuant rotation helps GPTQ W4 but hurts NVFP4 on the default model: round-to-nearest weights,
without and with the rotation, measured three ways.

    python -m benchmarks.sweeps.rotation_rounding [--out results/rotation-rounding-smollm2.md]

Cells: NVFP4 weights (E2M1 in groups of 16 under FP8 scales and a per-tensor FP32 scale; activations left in
bf16, so the weights are isolated) and INT4 g64 symmetric (GPTQ's grid, before GPTQ's error feedback), each as is
and after SpinQuant R1+R2 (random Hadamard, fused as `--rotation spinquant` fuses it), all quantized data-free by
llm-compressor. For each cell, per layer kind (q_proj, ..., down_proj, all layers pooled):
- weight error ‖Q(W) − W‖ / ‖W‖, in one basis: SpinQuant folds each RMSNorm's weight g into the Linears that read
  it before rotating, so the unrotated error is weighed by g too (the rotation is orthogonal: norms carry over);
- output error ‖(Q(W) − W)·X‖ / ‖W·X‖ on the layer's real inputs X (the model's own, rotated where it is rotated,
  on one window of 512 calibration tokens, quantization switched off while they are recorded): what rounding
  costs the layer's output, where outlier channels of X weigh in;
and the cell's mean KLD against the fp32 model on 4 windows of 512 held-out tokens. Prints the tables and writes
them with how they were made; checks nothing (INFO lines): it explains a measured result.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from benchmarks.lib.console import check, log

GRIDS = ("NVFP4", "INT4 g64")
NORMED = {"q_proj": 0, "k_proj": 0, "v_proj": 0, "gate_proj": 1, "up_proj": 1}  # which RMSNorm feeds them
LAYER = re.compile(r"layers\.(\d+)\.\w+\.(\w+_proj)$")


def _scheme(grid: str):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    from quantlab.methods.llmcompressor_backend import preset_scheme

    if grid == "NVFP4":
        return preset_scheme("NVFP4A16")
    weights = QuantizationArgs(num_bits=4, group_size=64, strategy="group", symmetric=True, type="int")
    return QuantizationScheme(targets=["Linear"], weights=weights)


def _quantized(source: str, grid: str, rotate: bool):
    """The model with the cell's modifiers applied (weights kept in bf16, rounded in the forward), and each decoder
    layer's two RMSNorm weights as they were before SpinQuant folded them in."""
    import torch
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM

    from quantlab import compat
    from quantlab.methods.llmcompressor_backend import rotation_modifiers
    from quantlab.spec import MethodSpec

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
    norms = [(lay.input_layernorm.weight.float().clone(), lay.post_attention_layernorm.weight.float().clone())
             for lay in model.model.layers]  # fmt: skip
    modifiers = rotation_modifiers(MethodSpec(method="fp4", rotation="spinquant")) if rotate else []
    modifiers.append(QuantizationModifier(config_groups={"group_0": _scheme(grid)}, ignore=["lm_head"]))
    with compat.llmcompressor_on_cpu():
        oneshot(model=model, recipe=modifiers)
    return model, norms


def errors(model, norms, rotate: bool, window) -> tuple[dict[str, float], dict[str, float]]:
    """Per layer kind: the weight error (norm-weighed where unrotated) and the output error on the inputs the
    layers see for `window` (a 1 × n tensor of ids)."""
    import torch
    from compressed_tensors.quantization import disable_quantization, enable_quantization
    from compressed_tensors.quantization.lifecycle.forward import forward_quantize

    weight_sums: dict[str, list[float]] = {}
    output_sums: dict[str, list[float]] = {}
    hooks = []

    def watch(kind: str, w, delta):
        def hook(_module, inputs, _output):
            x = inputs[0].reshape(-1, inputs[0].shape[-1]).float()
            sums = output_sums.setdefault(kind, [0.0, 0.0])
            sums[0] += float((x @ delta.T).pow(2).sum())
            sums[1] += float((x @ w.T).pow(2).sum())

        return hook

    with torch.no_grad():
        for name, module in model.named_modules():
            found = LAYER.search(name)
            if not found or not hasattr(module, "quantization_scheme"):
                continue
            kind, w = found.group(2), module.weight.detach()
            delta = forward_quantize(module, w, "weight", module.quantization_scheme.weights).float() - w.float()
            w = w.float()
            hooks.append(module.register_forward_hook(watch(kind, w, delta)))
            g = norms[int(found.group(1))][NORMED[kind]] if not rotate and kind in NORMED else 1.0
            sums = weight_sums.setdefault(kind, [0.0, 0.0])
            sums[0] += float((delta * g).pow(2).sum())
            sums[1] += float((w * g).pow(2).sum())
        model.apply(disable_quantization)  # the inputs as the unquantized (rotated) model makes them
        try:
            model(window)
        finally:
            model.apply(enable_quantization)
            for hook in hooks:
                hook.remove()
    ratio = {kind: (e / w) ** 0.5 for kind, (e, w) in weight_sums.items()}
    return ratio, {kind: (e / w) ** 0.5 for kind, (e, w) in output_sums.items()}


def _windows(source: str):
    import torch
    from transformers import AutoTokenizer

    from quantlab.calibration import calibration_samples
    from quantlab.corpus import load_text, tokenize
    from quantlab.spec import Calibration

    tokenizer = AutoTokenizer.from_pretrained(source)
    text, _ = load_text("embedded", "test")
    held_out = torch.as_tensor(tokenize(tokenizer, text, 4 * 512).reshape(4, 512))
    calib, _ = calibration_samples(tokenizer, Calibration(dataset="embedded", n_samples=1, seq_len=512))
    return held_out, torch.as_tensor(calib.astype("int64"))


def _log_probs(model, windows) -> list:
    """Each window's log-probabilities as the bench computes them (`bench.quality.log_probs`)."""
    import torch

    from quantlab.bench.quality import log_probs

    with torch.no_grad():
        return [log_probs(model(w[None]).logits[0].float(), overwrite=True) for w in windows]


def _kld(base: list, model, windows) -> float:
    """Mean KL(fp32 ‖ cell) over every scored position, by the bench's own per-window comparison."""
    from quantlab.bench.quality import KL_ROWS, compare_window

    total, count = 0.0, 0
    for b, logp, window in zip(base, _log_probs(model, windows), windows, strict=True):
        kld, _, _ = compare_window(iter(b.split(KL_ROWS)), logp, window[1:, None])
        total, count = total + float(kld.double().sum()), count + kld.numel()
    return total / count


def _table(title: str, kinds: list[str], cells: dict) -> str:
    head = " | ".join(f"{g} | {g} + spinquant" for g in GRIDS)
    lines = [f"**{title}**", "", f"| layer kind | {head} |", "|:--" + "|--:" * 2 * len(GRIDS) + "|"]
    for kind in kinds:
        row = " | ".join(f"{100 * cells[g, r][kind]:.2f}%" for g in GRIDS for r in (0, 1))
        lines.append(f"| {kind} | {row} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/rotation-rounding-smollm2.md"))
    args = parser.parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM

    from quantlab.models import resolve_model

    source = resolve_model("default", log=log)
    held_out, calib = _windows(source.path)
    base = _log_probs(AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32), held_out)
    weight, output, kld = {}, {}, {}
    for grid in GRIDS:
        for rotate in (0, 1):
            log(f"{grid}{' + spinquant' if rotate else ''}: quantizing data-free, then measuring")
            model, norms = _quantized(source.path, grid, bool(rotate))
            weight[grid, rotate], output[grid, rotate] = errors(model, norms, bool(rotate), calib)
            kld[grid, rotate] = _kld(base, model, held_out)
    kinds = list(weight[GRIDS[0], 0])
    means = " | ".join(f"{kld[g, r]:.4f}" for g in GRIDS for r in (0, 1))
    head = " | ".join(f"{g} | {g} + spinquant" for g in GRIDS)
    tables = [
        f"| | {head} |\n|:--" + "|--:" * 2 * len(GRIDS) + f"|\n| held-out mean KLD | {means} |",
        _table("Weight error ‖ΔW‖/‖W‖ (norm-weighed where unrotated)", kinds, weight),
        _table("Output error ‖ΔW·X‖/‖W·X‖ on the layers' own inputs", kinds, output),
    ]
    text = "\n\n".join(tables)
    intro = (__doc__ or "").split("\n\n", 2)[2].split("Prints the tables")[0].strip()
    title = "# Round-to-nearest weights without and with the SpinQuant rotation"
    doc = f"{title}\n\n`python -m benchmarks.sweeps.rotation_rounding` on {source.description}.\n\n{intro}\n\n{text}\n"
    args.out.write_text(doc, encoding="utf-8")
    print(text)
    for grid in GRIDS:
        worse = [k for k in kinds if output[grid, 1][k] > output[grid, 0][k]]
        check(None, f"{grid}: KLD {kld[grid, 0]:.4f} → {kld[grid, 1]:.4f} with the rotation; output error higher "
              f"with it in {len(worse)} of {len(kinds)} layer kinds")  # fmt: skip


if __name__ == "__main__":
    main()
