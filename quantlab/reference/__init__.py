"""A baseline reference: the baseline's log-probabilities over one token stream, written once and read by every
cell, so that no cell is measured with the baseline loaded beside it (a 70B bf16 baseline is 140 GB; llama.cpp's
`llama-perplexity --kl-divergence-base` answers the same problem with a base file).

Encoding: the float32 log-softmax rows exactly as the in-memory comparison computes them, 4 bytes per scored token
per vocabulary entry (llama.cpp's base file spends 2: uint16 over a 16-nat window below the top logit). Measured
on the default model's demo cells (benchmarks/crosschecks/reference_encodings.py), llama.cpp's uint16 moved a KLD
statistic by up to 6e-3 relative and float16 by up to 4e-3: at the divergences a good quantization has, anything
but the exact rows changes the figure. With them, ppl, top-1 and KLD read from a reference equal the in-memory ones
bit for bit.

Layout: one safetensors file (any safetensors reader opens it): `ids` int32 [windows, ctx], the windows scored;
`logprobs` float32 [windows × (ctx − 1), vocab], the baseline's log-probabilities for every position but each
window's last. The header's metadata `quantlab.reference` holds `ReferenceHeader` (what stream, which baseline,
which protocol) with a sha256 per window's rows, checked as each window is read. Its name is content-addressed:
the same stream, ctx, protocol, baseline and baseline load give the same file name (`content_key`).
"""

from __future__ import annotations

from quantlab.reference.file import (
    ENCODING,
    FORMAT,
    Reference,
    ReferenceHeader,
    content_key,
    reference_name,
    scored_windows,
    write_reference,
)

__all__ = [
    "ENCODING",
    "FORMAT",
    "Reference",
    "ReferenceHeader",
    "content_key",
    "reference_name",
    "scored_windows",
    "write_reference",
]
