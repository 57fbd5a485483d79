"""Text for perplexity and calibration, and the one token stream every runtime scores.

The protocol (README, "Measurement protocol") fixes the tokenization: the text is tokenized once by the
source model's HF tokenizer with no special tokens, cut to `max_tokens`, and those ids (not the text) go to
every runtime. The stream's fingerprint is recorded so two results can be checked to have scored the same
tokens.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import socket
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from quantlab.errors import DatasetError
from quantlab.results.provenance import TextSource

Split = Literal["test", "validation"]

EMBEDDED_FILES: dict[str, str] = {"test": "wiki.test.tokens.xz", "validation": "wiki.valid.tokens.xz"}
HUB_DATASET = ("Salesforce/wikitext", "wikitext-2-raw-v1")
NAMED = ("default", "wikitext2", "embedded")


class TokenStream(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    ids: np.ndarray
    source: TextSource
    tokenizer: str

    @property
    def fingerprint(self) -> str:
        return token_fingerprint(self.ids)


def token_fingerprint(ids: np.ndarray) -> str:
    """sha256 (first 16 hex) of the ids as little-endian int32: equal streams ⇔ equal fingerprints."""
    return hashlib.sha256(np.asarray(ids, dtype="<i4").tobytes()).hexdigest()[:16]


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """The hub is used only if offline mode is off and huggingface.co answers on 443."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _embedded(name: str, split: Split) -> tuple[str, TextSource]:
    blob = resources.files("quantlab.corpus").joinpath("embedded", EMBEDDED_FILES[split]).read_bytes()
    text = lzma.decompress(blob).decode("utf-8")
    source = TextSource(
        name=name,
        kind="embedded",
        split=split,
        text_sha256=_sha(text),
        n_chars=len(text),
        description=f"WikiText-2 v1 {split} split (wiki.{'test' if split == 'test' else 'valid'}"
        ".tokens), shipped inside quantlab",
    )
    return text, source


def _hub(name: str, split: Split) -> tuple[str, TextSource]:
    from datasets import load_dataset

    try:
        dataset = load_dataset(*HUB_DATASET, split=split)
    except Exception as exc:
        raise DatasetError(
            f"dataset {name!r}: could not load {HUB_DATASET[0]} from the hub ({exc}); "
            "use 'embedded' (shipped WikiText-2) or a local .txt/.jsonl path"
        ) from exc
    # The convention of the GPTQ/AWQ papers and llama.cpp's wikitext scripts: documents joined by blank lines.
    text = "\n\n".join(dataset["text"])
    return text, TextSource(
        name=name,
        kind="hub",
        split=split,
        text_sha256=_sha(text),
        n_chars=len(text),
        description=f"{HUB_DATASET[0]}/{HUB_DATASET[1]} {split} split, joined with \\n\\n",
    )


def _exists(path: Path) -> bool:
    """`Path.exists`, but False for a name the file system refuses (too long ...) instead of an OSError."""
    try:
        return path.exists()
    except OSError:
        return False


def _local(name: str) -> tuple[str, TextSource]:
    try:
        path = Path(name).expanduser()
    except RuntimeError as exc:  # `~user/...` of a user this host does not have
        raise DatasetError(f"dataset path {name!r}: {exc}") from exc
    if not _exists(path):
        raise DatasetError(f"dataset path {name!r} does not exist")
    if not path.is_file():
        raise DatasetError(f"dataset path {name!r} is not a file (expected .txt or .jsonl)")
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"dataset {name!r} cannot be read as UTF-8 text: {exc}") from exc
    if path.suffix == ".jsonl":
        texts = []
        for lineno, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"dataset {name!r} line {lineno}: not JSON ({exc.msg})") from exc
            except (ValueError, RecursionError) as exc:  # an integer over 4300 digits; nesting past the stack
                raise DatasetError(f"dataset {name!r} line {lineno}: unreadable JSON ({exc!s:.100})") from exc
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DatasetError(f"dataset {name!r} line {lineno}: expected an object with a 'text' string")
            texts.append(record["text"])
        text, how = "\n\n".join(texts), f"{len(texts)} 'text' fields joined with \\n\\n"
    else:
        text, how = raw, "whole file"
    if not text.strip():
        raise DatasetError(f"dataset {name!r} is empty")
    return text, TextSource(
        name=name,
        kind="local",
        split=None,
        text_sha256=_sha(text),
        n_chars=len(text),
        description=f"local file {path.resolve()} ({how})",
    )


def load_text(name: str = "default", split: Split = "test") -> tuple[str, TextSource]:
    """`default`: hub wikitext-2-raw if reachable, else the embedded copy; `wikitext2`: the hub only;
    `embedded`: the shipped WikiText-2 v1; anything else is a local file path."""
    if name == "default":
        return _hub(name, split) if hub_reachable() else _embedded(name, split)
    if name == "wikitext2":
        if not hub_reachable():
            raise DatasetError(
                "dataset 'wikitext2' needs the Hugging Face hub, which is unreachable; use "
                "'embedded' (the shipped WikiText-2 v1 copy) or a local .txt/.jsonl path"
            )
        return _hub(name, split)
    if name == "embedded":
        return _embedded(name, split)
    if "/" not in name and "." not in name and not _exists(Path(name)):
        raise DatasetError(f"unknown dataset {name!r}: use one of {', '.join(NAMED)} or a .txt/.jsonl path")
    return _local(name)


def tokenize(tokenizer, text: str, max_tokens: int | None) -> np.ndarray:
    """Token ids of `text` with no special tokens, cut to `max_tokens`.

    Long corpora are tokenized on a growing prefix: a BPE tokenization of a prefix agrees with that of the
    whole text except near the cut, so keeping a margin of 256 tokens before the cut gives the same ids.
    """
    if max_tokens is None:
        return np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
    chars = max(4096, max_tokens * 6)
    while True:
        piece = text[:chars]
        ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
        if len(ids) >= max_tokens + 256 or chars >= len(text):
            return np.asarray(ids[:max_tokens], dtype=np.int64)
        chars *= 2


def token_stream(
    tokenizer, name: str = "default", *, split: Split = "test", max_tokens: int | None = None
) -> TokenStream:
    text, source = load_text(name, split)
    ids = tokenize(tokenizer, text, max_tokens)
    return TokenStream(ids=ids, source=source, tokenizer=getattr(tokenizer, "name_or_path", "") or "")
