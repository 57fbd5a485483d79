"""The one random-weight model builder of the GPU benchmarks. Speed and memory do not depend on the weights'
values, so a GPU check measures a real-size architecture (Llama-3.1-8B's shape, all or some of its 32 layers)
with random weights built on the device, instead of carrying 16 GB of weights to a machine that reaches no
network; `tiny` is the same code path small enough for a CPU dry run in minutes.

What the GPU scripts rely on, kept here for all of them: bf16 weights created in bf16 on the device (the 8B shape
in fp32 would need twice the memory), untied embeddings unless asked or the shape ties them as published
(`llama-3.2-1b`, which the CPU scale probe builds), widths that are multiples of 256 (llama.cpp's k-quant blocks,
128-channel quantization groups), a seeded init (the same weights on every run), the tokenizer copied beside the
weights, and a vocabulary larger than the tokenizer's padded with plain tokens (below).
"""

from __future__ import annotations

import json
from pathlib import Path

LLAMA_3_1_8B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    rope_theta=500000.0,
    max_position_embeddings=8192,
)
# Llama-3.2-1B: the 128k vocabulary makes the tied embedding a fifth of its 1.24B parameters
LLAMA_3_2_1B = dict(
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    rope_theta=500000.0,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
)
SHAPES = {
    "llama-3.1-8b": LLAMA_3_1_8B,
    "llama-3.2-1b": LLAMA_3_2_1B,
    # vocab_size absent: the tokenizer's own, so every id the model emits is one the tokenizer knows
    "tiny": dict(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    ),
}


def build_random_model(
    shape: str, tokenizer: Path, out: Path, device: str, *, layers: int | None = None, tied: bool = False
) -> dict:
    """Save a random bf16 Llama of `shape` (with `layers` of its layers, if given) and `tokenizer` to `out`,
    built on `device`; returns what the record should say about it (config, parameter count, tokenizer)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer)
    dims = {**SHAPES[shape], **({"num_hidden_layers": layers} if layers else {})}
    tied = dims.pop("tie_word_embeddings", tied)  # a shape that ties its embeddings (as published) always does
    dims.setdefault("vocab_size", len(tok))
    special = dict(bos_token_id=tok.bos_token_id or 0, eos_token_id=tok.eos_token_id or 0)
    config = LlamaConfig(**dims, tie_word_embeddings=tied, initializer_range=0.02, **special)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    if dims["vocab_size"] > len(tok):
        pad_vocab(out / "tokenizer.json", len(tok), dims["vocab_size"])
    params = sum(p.numel() for p in model.parameters())
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {
        "config": {**dims, "tie_word_embeddings": tied},
        "params": params,
        "tokenizer": str(tokenizer),
        "tokenizer_own_vocab": len(tok),
    }


def pad_vocab(path: Path, start: int, size: int) -> None:
    """Extend a BPE vocab to `size` with NORMAL tokens no merge produces, so the hash llama.cpp's converter
    identifies the pre-tokenizer by is unchanged and each renders as text. The converter's own padding makes
    [PAD] tokens of type UNUSED, which llama-server streams as empty text (a random model emits them often).
    A tokenizer without a BPE vocab in tokenizer.json is left as it is: transformers reads only its ids."""
    if not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data.get("model", {}).get("vocab")
    if not isinstance(vocab, dict):
        return
    vocab.update({f"<rand{i}>": i for i in range(start, size)})
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
