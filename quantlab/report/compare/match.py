"""Which record of one run is "the same thing" as a record of another: an artifact, measured the same way.

What identifies an artifact across runs, strongest first:

1. **The artifact digest.** It hashes the whole manifest (files with their sha256, spec, source, host, creation
   time), so equal digests mean the very same files were measured twice: the cleanest comparison.
2. **The recipe cell key** (`quantlab run`): a hash of the model and the normalized method spec. The digest of an
   artifact rebuilt from the same recipe changes with its creation time and host even where every byte is the
   same, so two runs of one recipe on fresh machines match here.
3. **Method, backend, scheme label and source model sha256**: what a reader means by "the same format of the same
   model" when neither of the above is recorded (bench runs outside a recipe). The scheme label summarizes some
   options (e.g. "211 tensor types set"), so two different artifacts can share it; see below.

Each level pairs a record of A with one of B only where exactly one record on each side has that identity and the
same measurement configuration: the runtime, in-process or served (with the serving levers and workload), the
KV-cache type asked for, the compiled decode loop, the matmul kernel option. The same artifact measured two ways
is two rows, and the host, the rig, the token stream or the baseline may differ within a pair: those are what
comparing runs is for, and the output names every such difference beside the pair. Where several records on
either side share an identity no level can tell apart, none of them is paired (a guess would compare the wrong
numbers), and the output says so instead of "only in A".

Within one file, a configuration measured more than once keeps its newest record, as `quantlab report` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from quantlab.report.selection import compiled, select, subject
from quantlab.report.tables import serving_label
from quantlab.results import Result

Key = Callable[[Result], tuple | None]

IDENTITIES: list[tuple[str, Key]] = [
    ("artifact digest", lambda r: (r.artifact.digest,) if r.artifact else None),
    ("recipe cell", lambda r: (r.cell.key,) if r.cell else None),
    # an external server (no artifact): the same URL reporting the same models; what it runs is the owner's
    ("external target", lambda r: (r.target.url, tuple(r.target.model_ids or ())) if r.target else None),
    (
        "method/backend/scheme/source",
        lambda r: (
            (r.artifact.method, r.artifact.backend, r.artifact.label, r.artifact.source_sha256) if r.artifact else None
        ),
    ),
]


def configuration(r: Result) -> tuple:
    """How the artifact was measured, as far as a user chose it (what the machine chose, e.g. the kernel path,
    is a difference to report, not a reason to leave a pair apart)."""
    served = (r.load.options.model_dump_json(), r.load.shared_prefix_tokens) if r.load else None
    return r.load is not None, r.runtime.runtime, r.runtime.kv_cache_dtype, compiled(r), r.runtime.kernel_option, served


def describe(r: Result) -> str:
    """The configuration in words, for a row's heading."""
    how = f"{r.runtime.runtime}, served ({serving_label(r.load)})" if r.load else f"{r.runtime.runtime}, in-process"
    extras = [f"KV {r.runtime.kv_cache_dtype}"] if r.runtime.kv_cache_dtype else []
    extras += ["compiled decode"] if compiled(r) else []
    extras += [f"kernel {r.runtime.kernel_option}"] if r.runtime.kernel_option else []
    return ", ".join([how, *extras])


def title(r: Result) -> str:
    return f"{subject(r)} · {describe(r)}"


@dataclass(frozen=True)
class Pairing:
    pairs: list[tuple[int, int, str]]  # (row of A, row of B, the identity that paired them)
    unpaired_a: dict[int, str | None]  # row of A → why it has no partner in B (None: nothing like it there)
    unpaired_b: dict[int, str | None]

    def partner(self, row_a: int) -> tuple[int, str] | None:
        """B's row paired with A's `row_a`, and the identity that paired them."""
        return next(((b, how) for a, b, how in self.pairs if a == row_a), None)


def rows(results: list[Result]) -> list[Result]:
    """A run's rows: the newest record of each configuration (`selection.select`)."""
    return select(results, latest_only=True)


def _groups(records: list[Result], free: set[int], key: Key) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i in sorted(free):
        identity = key(records[i])
        if identity is not None:
            groups.setdefault((identity, configuration(records[i])), []).append(i)
    return groups


def pair(a: list[Result], b: list[Result], names: tuple[str, str] = ("A", "B")) -> Pairing:
    """Pair the rows of two runs, strongest identity first (the module's docstring)."""
    free_a, free_b = set(range(len(a))), set(range(len(b)))
    pairs: list[tuple[int, int, str]] = []
    for name, key in IDENTITIES:
        groups_b = _groups(b, free_b, key)
        for k, rows_a in _groups(a, free_a, key).items():
            rows_b = groups_b.get(k, [])
            if len(rows_a) == 1 and len(rows_b) == 1:
                pairs.append((rows_a[0], rows_b[0], name))
                free_a.discard(rows_a[0])
                free_b.discard(rows_b[0])
    return Pairing(sorted(pairs), _why(a, free_a, b, free_b, names), _why(b, free_b, a, free_a, names[::-1]))


def _why(mine: list[Result], free: set[int], other: list[Result], other_free: set[int], names) -> dict[int, str | None]:
    """Why each unpaired row stayed alone: more than one candidate, or (None) nothing like it in the other run."""
    _, loosest = IDENTITIES[-1]
    theirs = _groups(other, other_free, loosest)
    ours = _groups(mine, free, loosest)
    why = {}
    for i in sorted(free):
        k = (loosest(mine[i]), configuration(mine[i]))
        if k in theirs:
            why[i] = (
                f"ambiguous: {len(ours[k])} in {names[0]} and {len(theirs[k])} in {names[1]} share this artifact "
                "and configuration (other hosts, rigs, token streams or baselines); not paired"
            )
        else:
            why[i] = None
    return why
