"""The allocator and the budget parser of `quantlab tune`, on made-up groups and sensitivities (no model): what
the allocator returns fits, never uses a type a group cannot take, and is as good as any allocation found by
brute force within the greedy's known gap."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.errors import QuantizationError, SpecError
from quantlab.llamacpp.types import TENSOR_BITS
from quantlab.tune import allocate as alloc
from quantlab.tune.budget import parse_budget
from quantlab.tune.groups import Tensor, make_groups

TYPES = ("Q2_K", "Q4_K", "Q6_K", "Q4_0", "Q4_1", "Q8_0")


def model_tensors(layers: int = 4, hidden: int = 576, inter: int = 1536) -> list[Tensor]:
    tensors = [Tensor("token_embd.weight", hidden, hidden * 1000)]
    for i in range(layers):
        tensors += [
            Tensor(f"blk.{i}.attn_q.weight", hidden, hidden * hidden),
            Tensor(f"blk.{i}.ffn_up.weight", hidden, hidden * inter),
            Tensor(f"blk.{i}.ffn_down.weight", inter, hidden * inter),
        ]
    return tensors


def test_groups_cut_layers_into_bands_and_offer_only_types_the_rows_take():
    groups = {g.name: g for g in make_groups(model_tensors(layers=5), bands=2, types=TYPES)}
    assert set(groups) == {"token_embd", "attn_q 0-1", "attn_q 2-4", "ffn_up 0-1", "ffn_up 2-4"} | {
        "ffn_down 0-1",
        "ffn_down 2-4",
    }
    # rows of 576 are a whole number of 32-blocks, not of 256: no k-quant for them; ffn_down's 1536 takes both
    assert groups["attn_q 0-1"].types == ("Q4_0", "Q4_1", "Q8_0")
    assert groups["ffn_down 2-4"].types == ("Q2_K", "Q4_K", "Q4_0", "Q4_1", "Q6_K", "Q8_0")
    assert groups["attn_q 2-4"].bytes_at("Q4_0") == 3 * 576 * 576 * 18 // 32


def _sensitivity(groups, draw) -> dict:
    found = {}
    for g in groups:
        for t in g.types:  # larger types tend to lose less; noise may break that, as measurements do
            found[g.name, t] = max(0.0, draw(st.floats(0.0, 0.5)) * (9 - TENSOR_BITS[t]) / 9)
    return found


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_allocation_fits_the_budget_and_matches_brute_force(data):
    groups = make_groups(model_tensors(layers=2), bands=1, types=TYPES)
    found = _sensitivity(groups, data.draw)
    fixed = 1000
    smallest = fixed + sum(min(g.bytes_at(t) for t in g.types) for g in groups)
    largest = fixed + sum(max(g.bytes_at(t) for t in g.types) for g in groups)
    budget = data.draw(st.integers(smallest, largest))
    got = alloc.for_budget(groups, found, fixed, budget)
    assert got.bytes <= budget
    assert all(got.choice[g.name] in g.types for g in groups)
    assert got.bytes == fixed + sum(g.bytes_at(got.choice[g.name]) for g in groups)
    assert got.predicted_kld == pytest.approx(sum(found[g.name, got.choice[g.name]] for g in groups))
    best = min(
        sum(found[g.name, t] for g, t in zip(groups, pick, strict=True))
        for pick in itertools.product(*(g.types for g in groups))
        if fixed + sum(g.bytes_at(t) for g, t in zip(groups, pick, strict=True)) <= budget
    )
    # the Lagrangian greedy is exact at the hull's corners and otherwise within one group's step of the optimum
    worst_step = max(max(found[g.name, t] for t in g.types) for g in groups)
    assert best <= got.predicted_kld <= best + worst_step + 1e-12


def test_a_budget_below_the_smallest_allocation_is_refused():
    groups = make_groups(model_tensors(layers=1), bands=1, types=TYPES)
    found = {(g.name, t): 0.1 for g in groups for t in g.types}
    with pytest.raises(QuantizationError, match="smallest allocation"):
        alloc.for_budget(groups, found, 0, 10)


def test_quality_target_walks_up_until_the_prediction_meets_it():
    groups = make_groups(model_tensors(layers=2), bands=1, types=TYPES)
    found = {(g.name, t): (9 - TENSOR_BITS[t]) / 100 for g in groups for t in g.types}
    sizes = [a.bytes for a in alloc.path(groups, found, 0)]
    assert sizes == sorted(sizes)
    got = alloc.for_quality(groups, found, 0, 0.05)
    assert got.predicted_kld <= 0.05
    with pytest.raises(QuantizationError, match="no allocation"):
        alloc.for_quality(groups, found, 0, 1e-9)


def test_hull_keeps_only_options_some_exchange_rate_would_choose():
    o = alloc.Option
    found = [o("a", 10, 1.0), o("b", 20, 0.9), o("c", 30, 0.2), o("d", 40, 0.3), o("e", 50, 0.1)]
    assert [x.type for x in alloc.hull(found)] == ["a", "c", "e"]  # b above the a–c chord, d worse than c


@given(st.floats(1.0, 1e6, allow_nan=False), st.sampled_from(["B", "KB", "MB", "GB", "KiB", "MiB", "GiB", "bpw"]))
def test_budget_units(value, unit):
    text = f"{value:.3f}{unit}"
    budget = parse_budget(text, n_params=134_515_008)
    scale = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1024, "MiB": 2**20, "GiB": 2**30, "bpw": 134_515_008 / 8}
    assert budget.max_bytes == pytest.approx(float(f"{value:.3f}") * scale[unit], abs=1.0)


@given(st.text(max_size=20))
def test_budget_parser_refuses_anything_else_in_one_line(text):
    try:
        parse_budget(text, n_params=1000)
    except SpecError as exc:
        assert "\n" not in str(exc)


NAMES = ["output.weight", "token_embd.weight"] + [
    f"blk.{i}.{kind}.weight" for i in range(12) for kind in ("attn_output", "attn_q", "ffn_down")
]


@settings(max_examples=200, deadline=None)
@given(st.sets(st.sampled_from(NAMES)))
def test_imatrix_exclusions_are_only_names_llama_quantize_matches_alone(wanted):
    """`--exclude-weights` matches by substring: a kept name must not sit inside any weight left with the matrix,
    and nothing outside `wanted` is excluded; a name is dropped only for such a clash."""
    from quantlab.tune.matrix import nameable

    kept = nameable(NAMES, set(wanted))
    assert set(kept) <= wanted
    assert not any(n in w and w not in kept for n in kept for w in NAMES)
    for dropped in set(wanted) - set(kept):
        assert any(dropped in w and w not in kept for w in NAMES)


def test_imatrix_exclude_spec_is_checked_against_the_file_and_the_types():
    from quantlab.methods import get_backend
    from quantlab.methods.gguf import check_imatrix_exclude
    from quantlab.spec import MethodSpec

    info = {"tensors": [{"name": n, "shape": [576, 576]} for n in NAMES[:4]]}  # output, token_embd, blk.0 ×2
    check_imatrix_exclude(info, ["blk.0.attn_q.weight", "output.weight", "blk.0.attn_output.weight"])
    with pytest.raises(SpecError, match=r"also exclude blk\.0\.attn_output\.weight"):
        check_imatrix_exclude(info, ["output.weight"])
    with pytest.raises(SpecError, match="not a weight"):
        check_imatrix_exclude(info, ["blk.7.attn_q.weight"])
    backend = get_backend("gguf", None)
    with pytest.raises(SpecError, match="add --imatrix"):
        backend.resolve(MethodSpec(method="gguf", scheme="Q4_0", pure=True, imatrix_exclude=["output.weight"]))
    needy = MethodSpec(
        method="gguf", scheme="Q4_0", imatrix=True, tensor_types=["x.weight=IQ2_XS"], imatrix_exclude=["x.weight"]
    )
    with pytest.raises(SpecError, match="needs the importance matrix"):
        backend.resolve(needy)


def test_f16_is_free_to_offer_and_never_stops_a_group_being_measured(tmp_path):
    from quantlab.tune.sensitivity import REFERENCE_TYPE, Store, add_reference, saturated

    groups = make_groups(model_tensors(layers=2), bands=1, types=(*TYPES, REFERENCE_TYPE))
    store = Store(tmp_path / "s.ndjson", {"k": 1})
    add_reference(store, groups)
    assert all(store.found[g.name, REFERENCE_TYPE] == 0.0 for g in groups)
    assert store.seconds == [] and len(Store(tmp_path / "s.ndjson", {"k": 1}).found) == 0  # nothing run or written
    assert not any(saturated(store.found, g, negligible=1e-4) for g in groups)
    # with every quantized type measured, a budget with room past the quantized types buys F16 where it saves most
    found = {(g.name, t): (9 - TENSOR_BITS[t]) / 100 for g in groups for t in g.types if t != REFERENCE_TYPE}
    found |= store.found
    largest_quantized = sum(g.bytes_at("Q8_0") for g in groups)
    got = alloc.for_budget(groups, found, 0, largest_quantized + groups[0].bytes_at("F16"))
    assert REFERENCE_TYPE in got.choice.values()
