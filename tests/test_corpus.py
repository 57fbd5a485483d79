from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from quantlab.corpus import load_text, token_fingerprint, token_stream, tokenize
from quantlab.errors import DatasetError
from tests.conftest import SHARED_WIKITEXT


@pytest.mark.parametrize(("split", "filename"), [("test", "wiki.test.tokens"), ("validation", "wiki.valid.tokens")])
def test_embedded_corpus_is_wikitext2(split, filename):
    text, source = load_text("embedded", split)
    assert source.kind == "embedded" and source.split == split
    assert source.text_sha256 == hashlib.sha256(text.encode()).hexdigest()
    shared = SHARED_WIKITEXT / filename
    if shared.is_file():  # where the project's shared data is mounted, the shipped copy must be identical
        assert shared.read_text(encoding="utf-8") == text
    else:
        assert text.startswith(" \n = ") and len(text) > 1_000_000


def test_default_falls_back_to_embedded_offline():
    _, source = load_text("default", "test")
    assert source.kind == "embedded" and source.name == "default"
    assert "WikiText-2" in source.description


def test_wikitext2_by_name_needs_the_hub():
    with pytest.raises(DatasetError, match="unreachable"):
        load_text("wikitext2")


def test_local_txt_and_jsonl(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("hello world")
    text, source = load_text(str(txt))
    assert text == "hello world" and source.kind == "local"
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(json.dumps({"text": "one"}) + "\n\n" + json.dumps({"text": "two"}) + "\n")
    text, _ = load_text(str(jsonl))
    assert text == "one\n\ntwo"


@pytest.mark.parametrize(
    ("content", "needle"), [("not json\n", "line 1: not JSON"), ('{"title": "x"}\n', "'text' string"), ("", "empty")]
)
def test_bad_local_files(tmp_path, content, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError, match=needle):
        load_text(str(path))


def test_prefix_tokenization_equals_full_tokenization(tiny_tokenizer, wiki_test_text):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    full = np.asarray(tok(wiki_test_text[:200_000], add_special_tokens=False)["input_ids"])
    for n in (100, 4096, 20_000):
        cut = tokenize(tok, wiki_test_text[:200_000], n)
        assert len(cut) == n
        assert np.array_equal(cut, full[:n])


def test_no_special_tokens_and_fingerprint(tiny_tokenizer):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    stream = token_stream(tok, "embedded", max_tokens=1000)
    assert len(stream.ids) == 1000
    assert tok.bos_token_id not in stream.ids[:1]
    assert stream.fingerprint == token_fingerprint(stream.ids.copy())
    assert stream.fingerprint != token_fingerprint(stream.ids[:-1])
