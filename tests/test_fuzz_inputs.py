"""Property-based fuzzing of the files quantlab reads, in-process: recipes and rigs files (YAML), artifact
manifests (JSON), results files (JSONL) and --dataset files. Every malformed input is one QuantlabError of one line
naming the file; a torn last results line is a warning and a skip; what is accepted survives being written back.
The strategies and properties live in tests/fuzz_*.py, shared with benchmarks/crosschecks/fuzz_inputs.py (the
long run)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import fuzz_properties as fp
from tests.fuzz_strategies import fuzz_settings, json_documents, nasty_text, yaml_documents

RECORDS = fp.seed_records()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return fp.recipe_folder(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz-artifact") / "a"
    return path, fp.make_artifact(path)


def test_the_seeds_are_valid(folder, artifact):
    """Every mutation starts from an input quantlab accepts, so what the fuzzing finds is the mutation's doing."""
    assert fp.recipe_outcome(folder, json.dumps(fp.VALID_RECIPE).encode()) == fp.ACCEPTED
    assert fp.rigs_outcome(folder, json.dumps(fp.VALID_RIGS).encode()) == fp.ACCEPTED
    path, manifest = artifact
    assert fp.manifest_outcome(path, json.dumps(manifest).encode()) == fp.ACCEPTED
    lines = "".join(json.dumps(r) + "\n" for r in RECORDS).encode()
    assert fp.results_outcome(folder, lines)[0] == fp.ACCEPTED


@fuzz_settings(1.5)
@given(data=yaml_documents(fp.VALID_RECIPE, keys=fp.RECIPE_KEYS))
def test_recipes(folder, data):
    fp.recipe_outcome(folder, data)


@fuzz_settings()
@given(data=yaml_documents(fp.VALID_RIGS, keys=("rigs", "name", "price_per_hour", "n_gpus", "memory_gb")))
def test_rigs_files(folder, data):
    fp.rigs_outcome(folder, data)


@fuzz_settings(1.5)
@given(data=st.data())
def test_manifests(artifact, data):
    path, manifest = artifact
    fp.manifest_outcome(path, data.draw(json_documents(manifest, keys=fp.MANIFEST_KEYS)))


@fuzz_settings(1.5)
@given(data=fp.results_files())
def test_results_files(folder, data):
    fp.results_outcome(folder, data)


@fuzz_settings()
@given(whole=st.integers(0, len(RECORDS)), cut=st.floats(0.01, 0.99), middle=st.booleans())
def test_a_torn_last_line_is_skipped_and_a_torn_middle_line_is_an_error(folder, whole, cut, middle):
    """A kill mid-append leaves the start of a record with no newline: a warning, and every whole record read.
    The same damage anywhere but at the end is not what a kill leaves: an error naming the line."""
    lines = [json.dumps(r) + "\n" for r in RECORDS]
    line = lines[whole % len(lines)]
    torn = line[: max(1, int(cut * (len(line) - 1)))]  # a strict prefix of the record, its `{` at least
    if middle:
        data = "".join(lines[:whole]) + torn + "\n" + lines[0]
        outcome, _ = fp.results_outcome(folder, data.encode())
        assert outcome == fp.ERROR
    else:
        outcome, records = fp.results_outcome(folder, ("".join(lines[:whole]) + torn).encode())
        assert outcome == (fp.WARNING if whole else fp.ERROR)  # nothing whole left: "holds no records"
        assert len(records) == whole


@fuzz_settings(0.25)
@given(data=fp.results_files())
def test_accepted_results_render(folder, data):
    """What the reader accepts, `quantlab report` and `quantlab recommend` render (or refuse in one line)."""
    _, records = fp.results_outcome(folder, data)
    if records:
        fp.render_outcome(records)


@fuzz_settings()
@given(
    data=st.one_of(
        json_documents({"text": "Some text to score."}, keys=("text",)),
        st.lists(st.sampled_from([b'{"text": "a"}', b'{"text": 1}', b"", b"[]", b'{"text": "b"}']), max_size=4).map(
            b"\n".join
        ),
        st.binary(max_size=100),
    ),
    suffix=st.sampled_from([".jsonl", ".txt", ".md"]),
)
def test_dataset_files(folder, data, suffix):
    fp.dataset_outcome(folder, data, suffix)


@fuzz_settings(0.5)
@given(name=nasty_text())
def test_dataset_names(name):
    fp.dataset_name_outcome(name)
