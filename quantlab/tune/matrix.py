"""With or without the importance matrix, per tensor group.

The matrix weighs each rounding error by the activations it meets, which usually lowers the error that matters;
but on a model distributed quantized (its weights already on, say, a Q4_1 grid) it moves weights off the grid they
sit on, and the same type without it re-quantizes them almost exactly. Which way wins differs between groups of
one model, so the choice is made per group, by measurement: every group's candidates are measured with the matrix
(`sensitivity.measure`), and the types an allocation chooses are measured without it too; a group takes the better
figure, the allocation is made again on the better figures, and so on until every chosen type has both figures.
Only chosen types are measured both ways (a handful of runs per budget instead of doubling the search); a type
that would have won only without the matrix, and was never chosen, is never found: a known limit.
The file made from the result is measured whole against the two uniform choices (all with, all without), and the
best of the three is kept: the additive model is a guide, the measurement decides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from quantlab.llamacpp.types import matrix_optional
from quantlab.tune import allocate as alloc
from quantlab.tune.sensitivity import Store, measure_plain

ROUNDS = 4  # allocations re-made on new figures; in practice the second one already chooses what was measured


@dataclass(frozen=True)
class MatrixChoice:
    allocation: alloc.Allocation
    plain: frozenset[str]  # groups rounded without the importance matrix (those it has no entry for included)
    exclude: list[str]  # their tensors, as llama-quantize's --exclude-weights can name them
    said: str  # the decision and the measurement behind it, for the manifest


def better(store: Store) -> alloc.Sensitivity:
    """Each (group, type)'s figure, the lower of with and without the importance matrix where both were measured."""
    return {key: min(kld, store.plain.get(key, kld)) for key, kld in store.found.items()}


def allocate(prep, store: Store, choose: Callable[[alloc.Sensitivity], alloc.Allocation], scorer, log):
    """The allocation on the better figures, after measuring its chosen types without the matrix."""
    for _ in range(ROUNDS):
        allocation = choose(better(store))
        chosen = [(g, allocation.choice[g.name]) for g in prep.groups]
        asked = [(g, t) for g, t in chosen if matrix_optional(t) and weighed(prep, g)]
        asked = [(g, t) for g, t in asked if (g.name, t) not in store.plain]
        if not asked:
            return allocation
        log(f"measuring {len(asked)} chosen types without the importance matrix")
        measure_plain(asked, prep.tensors, prep.f16, scorer, store, prep.work, log)
    return choose(better(store))


def weighed(prep, group) -> bool:
    """Whether the matrix can change the group at all: an embedding, read by row, has no entry in it."""
    return any(t.name in prep.weighed for t in group.tensors)


def plain_groups(prep, store: Store, allocation: alloc.Allocation) -> frozenset[str]:
    picked = {g.name: allocation.choice[g.name] for g in prep.groups}
    return frozenset(n for n, t in picked.items() if store.plain.get((n, t), float("inf")) < store.found[n, t])


def nameable(weights: list[str], wanted: set[str]) -> list[str]:
    """The names of `wanted` that `--exclude-weights` can exclude alone: it matches by substring, so a name inside
    another weight's name (`output.weight` in `blk.0.attn_output.weight`) is kept with the matrix unless that
    weight is excluded too (`methods.gguf.exclusion_clashes`, the rule the GGUF backend checks)."""
    from quantlab.methods.gguf import exclusion_clashes

    kept = set(wanted)
    while clash := exclusion_clashes(weights, kept):
        kept -= clash.keys()
    return sorted(kept)


def choose_matrix(prep, store: Store, choose, scorer, log) -> MatrixChoice:
    """The allocation, and which of its groups go without the matrix: per group as measured, unless the whole file
    measures better all with it or all without it."""
    from quantlab.methods.gguf import IMATRIX_REQUIRED

    allocation = allocate(prep, store, choose, scorer, log)
    groups = plain_groups(prep, store, allocation)
    types = [(t.name, allocation.choice[g.name]) for g in prep.groups for t in g.tensors]
    weights = [t.name for t in prep.tensors]
    wanted = {t.name for g in prep.groups if g.name in groups for t in g.tensors if t.name in prep.weighed}
    per_group = nameable(weights, wanted)
    options: dict[str, list[str] | None] = {"all with": []}  # on a tie the first wins: the fewest exceptions
    if per_group:
        options["per group"] = per_group
    if not any(kind in IMATRIX_REQUIRED for _, kind in types):
        options["all without"] = None
    kld: dict[str, float] = {}
    for label, exclude in options.items():
        imatrix = None if exclude is None else prep.imatrix
        kld[label] = scorer.file_kld(prep.f16, imatrix, types, prep.work, exclude=exclude or None)
    best = min(kld, key=kld.get)
    measured = ", ".join(f"{label} {value:.5f}" for label, value in kld.items())
    said = (
        f"{best}: {len(groups)} groups measured better without the importance matrix ({len(per_group)} tensors "
        f"llama-quantize can be told to round without it); the whole file measured {measured} (KLD on the "
        "sensitivity windows)"
    )
    log(said)
    blind = {g.name for g in prep.groups if not weighed(prep, g)}  # rounded without it whatever is chosen
    if best == "all without":
        return MatrixChoice(allocation, frozenset(g.name for g in prep.groups), [], said)
    if best == "all with":
        return MatrixChoice(allocation, frozenset(blind), [], said)
    named = set(per_group)
    left = {g.name for g in prep.groups if all(t.name in named for t in g.tensors if t.name in prep.weighed)}
    return MatrixChoice(allocation, frozenset(blind | left), per_group, said)
