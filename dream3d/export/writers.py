"""Mesh writers (trimesh), atomic, with a reopen check so a broken file is an error."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from dream3d.runs import atomic_write


def write_mesh(mesh: trimesh.Trimesh, path: str | Path) -> Path:
    """Write GLB/OBJ/PLY (by suffix) atomically, then reopen and check it."""
    path = Path(path)
    fmt = path.suffix.lstrip(".")
    data = mesh.export(file_type=fmt) if fmt != "obj" else mesh.export(file_type="obj", include_color=True)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data if isinstance(data, bytes) else data.encode()))
    back = load_mesh(path)
    if len(back.faces) != len(mesh.faces) or not np.isfinite(back.vertices).all():
        path.unlink()
        raise RuntimeError(f"{path} did not reopen as the mesh that was written; removed it")
    return path


def load_mesh(path: str | Path) -> trimesh.Trimesh:
    """Reopen an exported file as one mesh (GLB scenes are merged)."""
    loaded = trimesh.load(str(path), process=False)
    if isinstance(loaded, trimesh.Scene):
        loaded = loaded.to_mesh() if hasattr(loaded, "to_mesh") else loaded.dump(concatenate=True)
    return loaded
