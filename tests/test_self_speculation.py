"""Self-speculation: a draft cut from a model's own first k layers, and the claims row that states the draft's
measured cost per token beside the speedup (a speedup means little without how cheap the draft was).

The builder runs on a tiny random Llama (widths multiples of 256); the claims row on records from the committed
levers results, copied and changed where the test needs a draft's own measurement."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import make_tiny_llama

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("tied", [False, True])
def test_first_layers_is_the_models_first_k_layers_with_its_norm_and_head(tmp_path, tiny_tokenizer, tied):
    import torch
    from transformers import AutoModelForCausalLM

    from benchmarks.lib.drafts import first_layers

    full_dir = make_tiny_llama(tmp_path / "full", tiny_tokenizer, layers=3, tied=tied)
    out = first_layers(full_dir, 2, tmp_path / "draft")
    full = AutoModelForCausalLM.from_pretrained(full_dir).eval()
    draft = AutoModelForCausalLM.from_pretrained(out).eval()
    assert draft.config.num_hidden_layers == 2 and len(draft.model.layers) == 2
    assert draft.config.tie_word_embeddings == tied
    ids = torch.randint(0, full.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = full(ids, output_hidden_states=True).hidden_states[2]  # after layer 2, before the final norm
        expected = full.lm_head(full.model.norm(hidden))
        torch.testing.assert_close(draft(ids).logits, expected)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # byte for byte: the tokenizer check hashes them
        assert (out / name).read_bytes() == (full_dir / name).read_bytes()


def test_first_layers_refuses_a_draft_as_deep_as_the_model(tmp_path, tiny_tokenizer):
    from benchmarks.lib.drafts import first_layers

    full_dir = make_tiny_llama(tmp_path / "full", tiny_tokenizer, layers=2)
    with pytest.raises(ValueError, match="1 to 1"):
        first_layers(full_dir, 2, tmp_path / "draft")


def _records():
    """A plain sweep, a draft sweep of the same workload and an in-process record of its target, committed."""
    from quantlab.report import select
    from quantlab.results import read_results

    results = select(read_results(ROOT / "results" / "levers-smollm2.jsonl"))
    served = [r for r in results if r.load is not None and not r.load.shared_prefix_tokens]
    plain = next(r for r in served if r.load.options.plain)
    spec = next(r for r in served if r.load.options.speculative == "draft")
    target = next(r for r in results if r.load is None and r.artifact.digest == spec.artifact.digest)
    return plain, spec, target


def _with_decode(r, tok_s: float, **artifact):
    point = r.speed[0].model_copy(update={"batch_size": 1, "decode_tok_s": r.speed[0].decode_tok_s.of([tok_s])})
    return r.model_copy(update={"speed": [point], "artifact": r.artifact.model_copy(update=artifact)})


def test_the_speculative_claim_says_the_drafts_measured_cost_and_what_it_is_against():
    from quantlab.report.claims import claims_table

    plain, spec, target = _records()
    options = spec.load.options.model_copy(update={"draft_digest": "d" * 16})
    spec = spec.model_copy(update={"load": spec.load.model_copy(update={"options": options})})
    target = _with_decode(target, 100.0)
    draft = _with_decode(target, 620.0, digest="d" * 16)
    rows = claims_table([plain, spec, target, draft])
    text = rows[rows.lever.str.startswith("speculative")]["measured here"].iloc[0]
    assert "× output tok/s vs no speculation" in text
    assert text.endswith("draft 6.2× cheaper per token (620 vs 100 decode tok/s at batch 1)")
    other_run = draft.model_copy(update={"run_id": "another run"})  # not side by side: no ratio
    rows = claims_table([plain, spec, target, other_run])
    assert rows[rows.lever.str.startswith("speculative")]["measured here"].iloc[0].endswith("not measured")
