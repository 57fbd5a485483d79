"""llama-perplexity's `--kl-divergence-base` rows read back: a small file encoded here per llama.cpp's layout
(tests/fuzz_outputs.encode_kld_base) decodes to the log-probs llama.cpp's KL sum uses, and a damaged one fails
with one line."""

from __future__ import annotations

import numpy as np
import pytest

from quantlab.errors import BenchError
from quantlab.llamacpp.kld_base import KldBaseFile, row_width, scored_per_window
from tests.fuzz_outputs import encode_kld_base

N_CTX, N_CHUNK, N_VOCAB = 6, 2, 7  # 2 scored rows per window; an odd vocabulary, so rows carry a padding level


def _logits() -> np.ndarray:
    rng = np.random.default_rng(0)
    rows = rng.normal(0, 8, (N_CHUNK * scored_per_window(N_CTX), N_VOCAB)).astype(np.float32)
    rows[0] = np.linspace(0, 40, N_VOCAB)  # spans 40 nats: the lowest entries fall below the 16-nat floor
    rows[1] = 3.0  # all equal: scale 0, every level 0
    rows[2] = np.linspace(-2, 2, N_VOCAB)  # spans 4 nats: nothing clipped
    return rows.reshape(N_CHUNK, -1, N_VOCAB)


@pytest.fixture
def base_file(tmp_path):
    tokens = np.arange(N_CHUNK * N_CTX, dtype=np.int32).reshape(N_CHUNK, N_CTX)
    path = tmp_path / "base.kld"
    path.write_bytes(encode_kld_base(tokens, _logits()))
    return path


def test_the_layout_sizes():
    assert scored_per_window(512) == 255 and scored_per_window(N_CTX) == 2
    assert row_width(49152) == 49156 and row_width(N_VOCAB) == 12


def test_rows_round_trip(base_file):
    base = KldBaseFile(base_file)
    assert (base.header.n_ctx, base.header.n_vocab, base.header.n_chunk) == (N_CTX, N_VOCAB, N_CHUNK)
    assert (base.header.tokens.ravel() == np.arange(N_CHUNK * N_CTX)).all()
    logits = _logits().astype(np.float64)
    for window in range(N_CHUNK):
        rows = base.rows(window)
        x = logits[window]
        exact = x - x.max(1, keepdims=True) - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True))
        stored = x >= x.max(1, keepdims=True) - 16  # entries that keep a level of their own
        step = rows.scale.astype(np.float64)[:, None]
        # Entries within the 16 nats are within half a step (and float32 rounding) of the exact log-prob.
        assert (np.abs(rows.log_probs - exact) <= step / 2 + 1e-5)[stored].all()
        # Entries below sit at the row's minimum, the one value llama.cpp stores for them.
        assert (rows.log_probs == rows.minimum[:, None])[~stored].all()
        assert (rows.kept == (rows.log_probs > -16)).all()
        assert (rows.top() == x.argmax(1)).all()
    first = base.rows(0)
    assert not first.kept[0].all() and first.kept[0, -1]  # the 40-nat row loses its low end
    assert first.scale[1] == 0 and (first.log_probs[1] == first.minimum[1]).all() and first.kept[1].all()


def test_decoding_is_llama_cpps_float32_arithmetic(base_file):
    """scale·level + minimum in two float32 roundings, the way the tools' build computes it (no fused multiply-add):
    the values a float64 computation rounded once would differ from in the last bit."""
    raw = np.fromfile(base_file, dtype="<u2", offset=20 + 4 * N_CHUNK * N_CTX).reshape(-1, row_width(N_VOCAB))
    head = np.ascontiguousarray(raw[:, :4]).view("<f4")
    levels = raw[:, 4 : 4 + N_VOCAB].astype(np.float32)
    expected = np.float32(head[:, :1]) * levels + head[:, 1:2]
    got = np.concatenate([KldBaseFile(base_file).rows(k).log_probs for k in range(N_CHUNK)])
    assert got.dtype == np.float32 and (got == expected).all()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-1], "is truncated"),
        (lambda b: b + b"\0\0", "longer than its header says"),
        (lambda b: b[:20] + b[20 + 4 * N_CHUNK * N_CTX :], "truncated"),  # the tokens left out
    ],
)
def test_a_file_of_the_wrong_length_fails_at_open(base_file, damage, message):
    base_file.write_bytes(damage(base_file.read_bytes()))
    with pytest.raises(BenchError, match=message) as caught:
        KldBaseFile(base_file)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [(0, np.float32("nan")), (0, np.float32(1.0)), (0, np.float32(-1e-4)), (1, np.float32(0.5)), (1, np.float32(-99))],
)
def test_a_garbled_row_fails_when_read(base_file, field, value):
    """A scale or minimum no row of llama.cpp's can have (NaN, a step over 16/65535, a negative step, a positive
    or impossibly low minimum) is named with its window and row."""
    data = bytearray(base_file.read_bytes())
    second_window = 20 + 4 * N_CHUNK * N_CTX + scored_per_window(N_CTX) * row_width(N_VOCAB) * 2
    data[second_window + 4 * field : second_window + 4 * field + 4] = value.tobytes()
    base_file.write_bytes(bytes(data))
    base = KldBaseFile(base_file)
    base.rows(0)  # the first window is untouched
    with pytest.raises(BenchError, match="window 1 row 0 is not a row llama-perplexity wrote") as caught:
        base.rows(1)
    assert "\n" not in str(caught.value)


def test_a_row_whose_top_is_not_the_last_level_fails(base_file):
    data = bytearray(base_file.read_bytes())
    first_row_levels = 20 + 4 * N_CHUNK * N_CTX + 8
    data[first_row_levels : first_row_levels + 2 * N_VOCAB] = b"\x01\x00" * N_VOCAB
    base_file.write_bytes(bytes(data))
    with pytest.raises(BenchError, match="top level 1"):
        KldBaseFile(base_file).rows(0)
