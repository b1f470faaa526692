"""Atomic file writes: every file dream3d writes appears whole or not at all.

Each writer fills a temp file beside the target (".<stem>.<random>.tmp<suffix>") and renames it
over the target, so a crash, a full disk or a concurrent reader never sees half a file.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

_UMASK = os.umask(0)
os.umask(_UMASK)


def is_partial(name: str) -> bool:
    """Whether a file name is an atomic_write temp file (".<stem>.<random>.tmp<suffix>"): a write
    still in progress (or abandoned), which readers such as zips and cache pruning leave alone."""
    return name.startswith(".") and ".tmp" in name


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(tmp_path) on a temp file in the same folder, then rename over `path`.
    On any error the temp file is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_torch_file(obj, file_path) -> None:
    """torch.save into a Python file object, so a full disk or a read-only folder raises OSError
    (with errno) instead of the RuntimeError ("PytorchStreamWriter failed writing file") that
    torch.save(obj, path) raises; flushed to the disk before the caller renames it."""
    with open(file_path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def atomic_torch_save(obj, path) -> Path:
    return atomic_write(path, lambda tmp: write_torch_file(obj, tmp))


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
