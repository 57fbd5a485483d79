"""Calibration samples: the exact token windows a calibrated method sees, chosen reproducibly.

Every backend gets the same pre-tokenized samples (never text it would re-tokenize, sort, concatenate or
pad its own way), so that GPTQ from llm-compressor and GPTQ from GPTQModel differ only by their algorithm.
The samples are `n_samples` distinct windows of `seq_len` tokens, drawn without replacement (seeded) from
the non-overlapping windows of the calibration text's token stream; their fingerprint goes into the manifest.
"""

from __future__ import annotations

import numpy as np

from quantlab.artifact import CalibrationRecord
from quantlab.corpus import load_text, token_fingerprint, tokenize
from quantlab.errors import DatasetError
from quantlab.spec import Calibration


def calibration_samples(tokenizer, calibration: Calibration) -> tuple[np.ndarray, CalibrationRecord]:
    """[n_samples, seq_len] int64 token ids and the record that describes them."""
    # The named corpora calibrate on their validation split, so the test split stays unseen for evaluation.
    text, source = load_text(calibration.dataset, "validation")
    ids = tokenize(tokenizer, text, None)
    available = len(ids) // calibration.seq_len
    if available < calibration.n_samples:
        raise DatasetError(
            f"calibration dataset {calibration.dataset!r} has {len(ids)} tokens: {available} windows of "
            f"{calibration.seq_len}, fewer than the {calibration.n_samples} samples asked for"
        )
    rng = np.random.default_rng(calibration.seed)
    chosen = np.sort(rng.choice(available, size=calibration.n_samples, replace=False))
    samples = np.stack([ids[i * calibration.seq_len : (i + 1) * calibration.seq_len] for i in chosen])
    record = CalibrationRecord(
        dataset=calibration.dataset,
        description=source.description,
        n_samples=calibration.n_samples,
        seq_len=calibration.seq_len,
        seed=calibration.seed,
        token_fingerprint=token_fingerprint(samples.reshape(-1)),
    )
    return samples, record


def for_source(source_path: str, calibration: Calibration, log, *, trust_remote_code: bool = False):
    """The source's tokenizer, its calibration samples and their record: what every calibrated backend needs
    before it loads the model (so a too-short dataset fails before the expensive load)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source_path, trust_remote_code=trust_remote_code)
    log(f"tokenizing calibration data ({calibration.n_samples} × {calibration.seq_len} tokens)")
    samples, record = calibration_samples(tokenizer, calibration)
    return tokenizer, samples, record
