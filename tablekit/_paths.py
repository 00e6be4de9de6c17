"""Where tablekit keeps what it caches (the demo datastack, native DuckDB copies, CAVE metadata)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$TABLEKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/tablekit`` (the XDG Base Directory rule: a
    relative ``XDG_CACHE_HOME`` is ignored), else ``~/.cache/tablekit``."""
    own = os.environ.get("TABLEKIT_CACHE_DIR")
    if own:
        return Path(own).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "tablekit"
    return Path.home() / ".cache" / "tablekit"
