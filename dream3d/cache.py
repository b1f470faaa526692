"""Where dream3d keeps derived data it can rebuild (ToyWorld datasets, text embeddings)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$DREAM3D_CACHE`, else `$XDG_CACHE_HOME/dream3d`, else `~/.cache/dream3d`."""
    root = os.environ.get("DREAM3D_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "dream3d")
    return Path(root)
