"""Where quantlab keeps files that outlive one command (converted default model, downloaded wheels)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$QUANTLAB_CACHE`, else `$XDG_CACHE_HOME/quantlab`, else `~/.cache/quantlab`.

    An env override exists so tests and CI can share one converted default model across clones.
    """
    explicit = os.environ.get("QUANTLAB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "quantlab"


def references_dir() -> Path:
    """`$QUANTLAB_REFERENCES`, else `references` in the cache: baseline reference files are large (4 bytes per
    scored token per vocabulary entry: 8.4 GB for 16k tokens of a 128k vocabulary), so they may need a disk of
    their own."""
    explicit = os.environ.get("QUANTLAB_REFERENCES")
    return Path(explicit).expanduser() if explicit else cache_dir() / "references"
