"""Hypothesis strategies for fuzzing the inputs quantlab parses, and the settings profiles every fuzz test runs
under. Shared by the tests (tests/test_fuzz_*.py) and benchmarks/crosschecks/fuzz_inputs.py, so it imports no
pytest.

Inputs are mostly valid ones mutated: parsed, changed where a user or a crash would change them (a key dropped,
renamed or given twice, a value of the wrong type, huge, negative, NaN, deeply nested, unicode, markup), written
back, then sometimes damaged as text or bytes (cut short, spliced, re-encoded). Some are random through and through.

Profiles: `ci` (the default: derandomized, no example database, nothing written into the repository, no deadline,
QUANTLAB_FUZZ_EXAMPLES examples per test at most, 40 unless set) and `long`
(benchmarks/crosschecks/fuzz_inputs.py: many more, seeded). QUANTLAB_FUZZ_PROFILE picks one for the tests.
"""

from __future__ import annotations

import json
import os

import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from quantlab.paths import cache_dir

# Hypothesis keeps caches (unicode tables, constants) in ./.hypothesis even without an example database: kept in
# quantlab's cache instead, so a test run writes nothing into the repository.
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(cache_dir() / "hypothesis")
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much, HealthCheck.large_base_example]
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=int(os.environ.get("QUANTLAB_FUZZ_EXAMPLES", "40")),
    suppress_health_check=_QUIET,
    print_blob=False,
)
settings.register_profile("long", settings.get_profile("ci"), derandomize=False, max_examples=2000)


def fuzz_settings(share: float = 1.0, *, fixed: int | None = None, profile: str | None = None) -> settings:
    """The active profile's settings with `share` of its examples: a property that costs a subprocess per example
    asks for fewer than one that parses in microseconds, and one that starts `quantlab` asks for a `fixed` few."""
    base = settings.get_profile(profile or os.environ.get("QUANTLAB_FUZZ_PROFILE", "ci"))
    return settings(base, max_examples=fixed or max(1, round(base.max_examples * share)))


# Text that has broken parsers before: line breaks of every kind, rich markup, NUL, BOM, paths, numbers as text.
NASTY = [
    "", " ", "\n", "a\nb", "a\rb", "a\u2028b", "a\x85b", "\t", "\x00", "\ufeff", "[/x]", "[bold]x[/bold]", "ü", "😀",
    "~nobody-such-user/x", "../../etc/passwd", "/", ".", "a" * 300, "1e999", "NaN", "-1", "0", "null", "true", "{}",
    "[]", "%s", "${HOME}", "\\", "'", '"', ":", "- ", "&a", "*a", "!!python/object:os.system", "<<",
]  # fmt: skip
SPECIAL_FLOATS = [float("nan"), float("inf"), float("-inf"), -0.0, 1e308, 5e-324, -1.0]
SPECIAL_INTS = [0, -1, 1, 2**31, 2**63, 2**64 + 1, -(2**63), 10**30]


def nasty_text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(NASTY), st.text(max_size=12))


def junk() -> st.SearchStrategy:
    """Any value YAML or JSON can hold, nested a little, biased toward the edges."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from(SPECIAL_INTS),
        st.floats(),
        st.sampled_from(SPECIAL_FLOATS),
        nasty_text(),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(nasty_text(), inner, max_size=3)),
        max_leaves=6,
    )


def _paths(value, prefix=()) -> list[tuple]:
    """Every place in a nested value, as the keys/indices leading to it (the root is `()`)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*prefix, i))
    return found


def _at(value, path):
    for step in path:
        value = value[step]
    return value


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


@st.composite
def mutated(draw, valid, *, keys: tuple[str, ...] = ()):
    """`valid` with 1-3 changes at places drawn from its tree; `keys` are real key names to misplace."""
    value = _copy(valid)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(value)))
        value = _mutate_at(draw, value, path, keys)
    return value


def _mutate_at(draw, value, path, keys):
    target = _at(value, path)
    ops = ["junk", "nest", "wrap", "number", "empty"]
    if isinstance(target, dict):
        ops += ["add_key", "drop_key", "rename_key"] if target else ["add_key"]
    if isinstance(target, list) and target:
        ops += ["drop_item", "repeat_item"]
    op = draw(st.sampled_from(ops))
    if op == "junk":
        new = draw(junk())
    elif op == "nest":  # deep, but within what a YAML/JSON reader recurses through
        new = target
        for _ in range(draw(st.integers(5, 60))):
            new = [new]
    elif op == "wrap":
        new = draw(st.sampled_from([[target], {"value": target}, str(target), [target, target]]))
    elif op == "number":
        new = draw(st.sampled_from([*SPECIAL_INTS, *SPECIAL_FLOATS, True, "12"]))
    elif op == "empty":
        new = draw(st.sampled_from([None, "", [], {}]))
    elif op == "add_key":
        new = {**target, draw(st.one_of(st.sampled_from(keys or ("surprise",)), nasty_text())): draw(junk())}
    elif op in ("drop_key", "rename_key"):
        key = draw(st.sampled_from(sorted(target, key=str)))
        new = {k: v for k, v in target.items() if k != key}
        if op == "rename_key":
            new[draw(st.sampled_from([key.upper(), key + "s", key[:-1], " " + key, key.replace("_", "-")]))] = target[
                key
            ]
    elif op == "drop_item":
        new = target[: draw(st.integers(0, len(target) - 1))]
    else:
        new = [*target, *target]
    if not path:
        return new
    _at(value, path[:-1])[path[-1]] = new
    return value


# Snippets spliced into the text of a document: the characters YAML and JSON give meaning to, and values too
# big or too deep for Python's readers.
SPLICES = [
    ": ", "- ", "\n- ", "\n  ", "#", "&a ", "*a", "*b", "!!binary ", "!!python/object:os.system ", "<<: *a",
    "---\n", '"', "'", "{", "}", "[", "]", ",", "\t", "\x00", "\ufeff", "\\u0000", "NaN", "Infinity", "1e999",
    "9" * 4400, "[" * 3000, "{'a': " * 50, "\r\n", "\u2028", '"a": 1, ', "[/x]", "é", "\x1b[31m",
]  # fmt: skip


@st.composite
def damaged_text(draw, text: str) -> str:
    """`text` with one textual injury: cut short, a snippet spliced in, a span deleted, a line doubled/dropped."""
    op = draw(st.sampled_from(["cut", "splice", "delete", "double_line", "drop_line", "swap_case"]))
    at = draw(st.integers(0, len(text)))
    if op == "cut":
        return text[:at]
    if op == "splice":
        return text[:at] + draw(st.one_of(st.sampled_from(SPLICES), st.text(max_size=8))) + text[at:]
    if op == "delete":
        return text[:at] + text[at + draw(st.integers(1, 40)) :]
    lines = text.splitlines(keepends=True) or [""]
    i = draw(st.integers(0, len(lines) - 1))
    if op == "double_line":  # in YAML: a key given twice
        return "".join(lines[: i + 1] + lines[i:])
    if op == "drop_line":
        return "".join(lines[:i] + lines[i + 1 :])
    return text[:at] + text[at:].swapcase()


def _encoded(draw, text: str) -> bytes:
    """`text` as a file would hold it: UTF-8 mostly, sometimes with a BOM, in UTF-16, or with a bad byte."""
    how = draw(st.sampled_from(["utf-8"] * 12 + ["bom", "utf-16", "bad_byte"]))
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if how == "utf-16":
        return text.encode("utf-16")
    data = text.encode()
    if how == "bad_byte":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\x80", b"\xed\xa0\x80"])) + data[at:]
    return data


def _document(draw, valid, dump, oddities: list[str]) -> bytes:
    """Weighted: mostly `valid` mutated then written with `dump` (a quarter of those damaged as text), then the
    valid text damaged, an oddity, random text, random bytes."""
    kind = draw(st.sampled_from(["mutated"] * 14 + ["damaged"] * 3 + ["oddity", "text", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "mutated":
        text = dump(draw, draw(mutated(valid[0], keys=valid[1])))
        text = draw(damaged_text(text)) if draw(st.integers(0, 3)) == 0 else text
    elif kind == "damaged":
        text = draw(damaged_text(dump(draw, valid[0])))
    else:
        text = draw(st.sampled_from(oddities)) if kind == "oddity" else draw(st.text(max_size=200))
    return _encoded(draw, text)


# Whole documents that are no mapping, or that stress the reader itself (aliases, recursion, depth).
YAML_ODDITIES = [
    "", "~", "42", "- a\n- b\n", "just text", "[", "---\na: 1\n---\nb: 2\n", "a: &a [*a]\n", "[" * 5000,
    "a: " + "[" * 2000 + "]" * 2000 + "\n", "name: " + "9" * 5000 + "\n", "name: 2020-13-45\n",
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
    "!!python/object/apply:os.system [echo]\n", "? [a, b]\n: c\n", "a: !!binary '!!!'\n", "a: !!set {x, y}\n",
]  # fmt: skip


def _yaml(draw, value) -> str:
    flow = draw(st.sampled_from([False, True, None]))
    return yaml.safe_dump(value, default_flow_style=flow, sort_keys=False, allow_unicode=draw(st.booleans()))


def _json(draw, value) -> str:
    return json.dumps(value, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, None, 2])))


JSON_ODDITIES = ["", "[]", "null", "42", '"text"', "[" * 5000, '{"a": ' + "9" * 5000 + "}", "{" * 3 + "}" * 3]


def yaml_documents(valid: dict, keys: tuple[str, ...] = ()) -> st.SearchStrategy[bytes]:
    """YAML files near `valid` (dumped with anchors and aliases where a mutation repeats a value)."""
    return st.composite(lambda draw: _document(draw, (valid, keys), _yaml, YAML_ODDITIES))()


def json_documents(valid: dict, keys: tuple[str, ...] = ()) -> st.SearchStrategy[bytes]:
    """JSON objects near `valid` (one line of a results file, a manifest), as `yaml_documents` does for YAML."""
    return st.composite(lambda draw: _document(draw, (valid, keys), _json, JSON_ODDITIES))()
