"""Where dream3d keeps derived data it can rebuild (ToyWorld datasets, text embeddings)."""
from __future__ import annotations

import os
from pathlib import Path

from dream3d.kernel.atomic_io import is_partial


def cache_root() -> Path:
    """`$DREAM3D_CACHE`, else `$XDG_CACHE_HOME/dream3d`, else `~/.cache/dream3d`."""
    root = os.environ.get("DREAM3D_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "dream3d")
    return Path(root)


DEFAULT_MAX_GB = 4.0


def max_cache_bytes() -> float:
    """`$DREAM3D_CACHE_MAX_GB` (default 4): the size the derived-data cache is pruned to."""
    try:
        return float(os.environ.get("DREAM3D_CACHE_MAX_GB", DEFAULT_MAX_GB)) * 2**30
    except ValueError:
        return DEFAULT_MAX_GB * 2**30


def prune(folder: Path, keep: Path | None = None, max_bytes: float | None = None) -> list[Path]:
    """Delete the least recently used files of `folder` (by modification time; loaders touch what
    they read) until it holds at most max_bytes, never `keep`; returns what was deleted. Each new
    dataset seed or size writes a new entry, so without this a server's cache would only grow."""
    max_bytes = max_cache_bytes() if max_bytes is None else max_bytes
    entries = []
    for p in Path(folder).glob("*"):
        try:
            st = p.stat()
        except FileNotFoundError:  # removed by another process meanwhile
            continue
        if p.is_file() and not is_partial(p.name):  # another process's write in progress
            entries.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, p in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        if keep is not None and p == Path(keep):
            continue
        p.unlink(missing_ok=True)
        total -= size
        removed.append(p)
    return removed
