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
