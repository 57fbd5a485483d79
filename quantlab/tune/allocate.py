"""Choosing one type per group from measured sensitivities: a multiple-choice knapsack, solved the Lagrangian way.

The model of quality is additive: the KLD of an allocation is predicted as the sum, over groups, of the KLD
measured with that group alone at its type (every other tensor at F16). Within a group only the types on the
lower convex hull of (bytes, KLD) can be chosen at some exchange rate between bytes and KLD, so the greedy takes
hull steps across all groups in order of KLD saved per byte added — the path a Lagrange multiplier traces as it
falls — and stops at the budget; a last pass spends what is left on the best single change that still fits.
The prediction is only a guide: `tune` verifies the artifact it makes on text the measurements never saw.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass

from quantlab.errors import QuantizationError
from quantlab.tune.groups import Group

Sensitivity = dict[tuple[str, str], float]  # (group name, type) → KLD with that group alone at that type


@dataclass(frozen=True)
class Option:
    type: str
    bytes: int
    kld: float


@dataclass(frozen=True)
class Allocation:
    choice: dict[str, str]  # group name → type
    bytes: int  # predicted file bytes (fixed bytes included)
    predicted_kld: float


def options(group: Group, kld: Sensitivity) -> list[Option]:
    return [Option(t, group.bytes_at(t), kld[group.name, t]) for t in group.types if (group.name, t) in kld]


def hull(found: list[Option]) -> list[Option]:
    """The options some exchange rate of bytes for KLD would choose: cheapest first, each strictly better than
    the one before, and none above the segment joining its neighbours."""
    front: list[Option] = []
    for option in sorted(found, key=lambda o: (o.bytes, o.kld)):
        if front and option.kld >= front[-1].kld:
            continue  # a smaller option is at least as good
        while len(front) >= 2 and _slope(front[-2], front[-1]) <= _slope(front[-1], option):
            front.pop()  # the last point lies on or above the chord from its predecessor to `option`
        front.append(option)
    return front


def _slope(a: Option, b: Option) -> float:
    """KLD saved per byte added going from a to b (a positive number for a useful step)."""
    return (a.kld - b.kld) / max(b.bytes - a.bytes, 1)


def _start(groups: list[Group], kld: Sensitivity) -> dict[str, list[Option]]:
    hulls = {g.name: hull(options(g, kld)) for g in groups}
    missing = [name for name, h in hulls.items() if not h]
    if missing:
        raise QuantizationError(f"no measured type for the groups {', '.join(missing[:5])}")
    return hulls


def _allocation(hulls: dict[str, list[Option]], at: dict[str, int], fixed: int) -> Allocation:
    chosen = {name: hulls[name][i] for name, i in at.items()}
    return Allocation(
        choice={name: o.type for name, o in chosen.items()},
        bytes=fixed + sum(o.bytes for o in chosen.values()),
        predicted_kld=sum(o.kld for o in chosen.values()),
    )


def path(groups: list[Group], kld: Sensitivity, fixed: int) -> Iterator[Allocation]:
    """Allocations from the smallest (every group at its cheapest hull type) upwards, one hull step at a time in
    order of KLD saved per byte: the allocations a falling Lagrange multiplier picks."""
    hulls = _start(groups, kld)
    at = dict.fromkeys(hulls, 0)
    queue = [(-_slope(h[0], h[1]), name) for name, h in hulls.items() if len(h) > 1]
    heapq.heapify(queue)
    yield _allocation(hulls, at, fixed)
    while queue:
        _, name = heapq.heappop(queue)
        at[name] += 1
        h = hulls[name]
        if at[name] + 1 < len(h):
            heapq.heappush(queue, (-_slope(h[at[name]], h[at[name] + 1]), name))
        yield _allocation(hulls, at, fixed)


def for_budget(groups: list[Group], kld: Sensitivity, fixed: int, max_bytes: int) -> Allocation:
    """The best allocation of at most `max_bytes` the greedy finds: hull steps by KLD per byte while they fit (a
    group whose next step does not fit stops there), then the best single change that still fits, repeated."""
    hulls = _start(groups, kld)
    at = dict.fromkeys(hulls, 0)
    smallest = _allocation(hulls, at, fixed)
    if smallest.bytes > max_bytes:
        raise QuantizationError(
            f"the smallest allocation of these types takes {smallest.bytes / 1e6:,.2f} MB, over the budget of "
            f"{max_bytes / 1e6:,.2f} MB; offer smaller types (--types) or raise the budget"
        )
    queue = [(-_slope(h[0], h[1]), name) for name, h in hulls.items() if len(h) > 1]
    heapq.heapify(queue)
    used = smallest.bytes
    while queue:
        _, name = heapq.heappop(queue)
        h, i = hulls[name], at[name]
        if used + h[i + 1].bytes - h[i].bytes > max_bytes:
            continue
        used += h[i + 1].bytes - h[i].bytes
        at[name] = i + 1
        if i + 2 < len(h):
            heapq.heappush(queue, (-_slope(h[i + 1], h[i + 2]), name))
    return _fill(groups, kld, {n: hulls[n][i] for n, i in at.items()}, fixed, max_bytes)


def _fill(groups: list[Group], kld: Sensitivity, chosen: dict[str, Option], fixed: int, max_bytes: int) -> Allocation:
    """Spend what the hull steps left on the single change (any measured type) that saves the most KLD and fits."""
    every = {g.name: options(g, kld) for g in groups}
    while True:
        room = max_bytes - fixed - sum(o.bytes for o in chosen.values())
        changes = [(chosen[n].kld - o.kld, n, o) for n, opts in every.items() for o in opts]
        best = max((c for c in changes if c[2].bytes - chosen[c[1]].bytes <= room), default=None, key=lambda c: c[0])
        if best is None or best[0] <= 0:
            break
        chosen[best[1]] = best[2]
    return Allocation(
        choice={n: o.type for n, o in chosen.items()},
        bytes=fixed + sum(o.bytes for o in chosen.values()),
        predicted_kld=sum(o.kld for o in chosen.values()),
    )


def for_quality(groups: list[Group], kld: Sensitivity, fixed: int, max_kld: float) -> Allocation:
    """The first allocation along `path` whose predicted KLD is at most `max_kld`."""
    last = None
    for last in path(groups, kld, fixed):
        if last.predicted_kld <= max_kld:
            return last
    raise QuantizationError(
        f"no allocation of these types is predicted to keep the KLD at {max_kld:g} (the best reaches "
        f"{last.predicted_kld:.4g}); offer larger types (--types)"
    )
