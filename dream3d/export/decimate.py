"""Decimation to a face budget by quadric edge collapse (fast-simplification through trimesh)."""
from __future__ import annotations

import trimesh

from dream3d.export.isosurface import drop_degenerate


def decimate(mesh: trimesh.Trimesh, max_faces: int) -> trimesh.Trimesh:
    """The mesh with at most `max_faces` faces (unchanged when already within budget or when
    max_faces is 0). Colours are not carried over: the caller repaints from the scene."""
    if max_faces <= 0 or len(mesh.faces) <= max_faces:
        return mesh
    target = max_faces
    for _ in range(4):  # the collapse can stop a few faces above its target; aim lower until it fits
        out = mesh.simplify_quadric_decimation(face_count=target)
        if len(out.faces) <= max_faces:
            break
        target = int(target * 0.97)
    else:
        raise RuntimeError(f"could not decimate {len(mesh.faces)} faces to {max_faces}; raise output.export.max_faces")
    out = drop_degenerate(trimesh.Trimesh(out.vertices, out.faces, process=True))  # collapses leave slivers
    if out.volume < 0:
        out.invert()
    return out
