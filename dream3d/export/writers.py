"""Asset writers: GLB, OBJ (+MTL +PNG when textured) and PLY, each written atomically and
checked by reopening it before it replaces anything (a broken export is an error, not a file).

Frame: +Y up, front +Z, metres (glTF's own conventions). Textured meshes carry a glTF
metallic-roughness material (base-colour texture, metallic 0, roughness 1); PLY has vertex
colours only, since PLY has no standard texture binding.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import trimesh

from dream3d.kernel.atomic_io import atomic_write


class ExportError(RuntimeError):
    """An exported file failed its check after writing; its path was left as it was."""


MTL = """# dream3d material: base colour from the texture (Kd 1 so viewers that multiply Kd keep its colours)
newmtl dream3d
Ka 0 0 0
Kd 1 1 1
Ks 0 0 0
Ns 0
d 1
illum 1
map_Kd {texture}
"""


def load_mesh(path: str | Path, file_type: str | None = None) -> trimesh.Trimesh:
    """Reopen an exported file as one mesh (GLB scenes are merged)."""
    loaded = trimesh.load(str(path), file_type=file_type, process=False)
    if isinstance(loaded, trimesh.Scene):
        loaded = loaded.to_mesh() if hasattr(loaded, "to_mesh") else loaded.dump(concatenate=True)
    return loaded


def textured(mesh: trimesh.Trimesh) -> bool:
    return mesh.visual.kind == "texture"


def check_mesh_file(path: Path, file_type: str, expected: trimesh.Trimesh, bound: float | None,
                    name: str | None = None) -> None:
    """Reopen `path` and raise ExportError unless it holds `expected`'s faces, finite vertices
    within [-bound, bound]^3, and, for a textured mesh in GLB/OBJ, UVs in [0,1] and its texture.
    `name` is the file's final name in messages (path may be its temp file)."""
    name = name or Path(path).name
    try:
        back = load_mesh(path, file_type)
    except Exception as e:  # any reader failure means the file is broken
        raise ExportError(f"{name} does not reopen as a {file_type.upper()} mesh ({e}); it was not written "
                          "(a previous version is unchanged)") from e
    problems = []
    if len(back.faces) != len(expected.faces):
        problems.append(f"{len(back.faces)} faces instead of {len(expected.faces)}")
    if not np.isfinite(back.vertices).all():
        problems.append("non-finite vertices")
    elif bound is not None and len(back.vertices) and np.abs(back.vertices).max() > bound * (1 + 1e-3) + 1e-6:
        problems.append(f"vertices outside the scene box (|x| up to {np.abs(back.vertices).max():.3f} > {bound})")
    if textured(expected) and file_type != "ply":
        if not textured(back):
            problems.append("the texture is missing")
        else:
            uv = np.asarray(back.visual.uv)
            if len(uv) != len(back.vertices) or not np.isfinite(uv).all() or uv.min() < 0 or uv.max() > 1:
                problems.append("UVs missing or outside [0,1]")
            image = getattr(back.visual.material, "baseColorTexture", None) or getattr(back.visual.material, "image", None)
            if image is None or min(image.size) == 0:
                problems.append("the base-colour image is missing")
    if problems:
        raise ExportError(f"{name} failed its check after writing ({'; '.join(problems)}); it was not written "
                          "(a previous version is unchanged)")


def _png_bytes(mesh: trimesh.Trimesh) -> bytes:
    buf = io.BytesIO()
    mesh.visual.material.baseColorTexture.save(buf, format="PNG")
    return buf.getvalue()


def _write_checked(path: Path, data: bytes, file_type: str, mesh: trimesh.Trimesh, bound: float | None) -> Path:
    def write(tmp):
        Path(tmp).write_bytes(data)
        check_mesh_file(Path(tmp), file_type, mesh, bound, path.name)
    return atomic_write(path, write)


def _buffer_view_targets(tree: dict) -> None:
    """Mark vertex-attribute and index bufferViews (ARRAY_BUFFER / ELEMENT_ARRAY_BUFFER), as the
    glTF spec asks of vertex data; trimesh leaves the target unset."""
    accessors, views = tree.get("accessors", []), tree.get("bufferViews", [])
    for m in tree.get("meshes", []):
        for prim in m.get("primitives", []):
            for a in prim.get("attributes", {}).values():
                views[accessors[a]["bufferView"]]["target"] = 34962
            if "indices" in prim:
                views[accessors[prim["indices"]]["bufferView"]]["target"] = 34963


BASE_COLOR_NOTE = ("albedo: the surface colour without lighting (a scene trained under shading exports its albedo, "
                   "not the lit colour); the viewer's lights shade it")


def _glb_tree(tree: dict) -> None:
    """trimesh's glTF tree, finished: bufferView targets, and a note in asset.extras saying what the base
    colour is, so whoever opens the asset can tell albedo from lit colour."""
    _buffer_view_targets(tree)
    tree.setdefault("asset", {}).setdefault("extras", {})["dream3d"] = {"base_color": BASE_COLOR_NOTE}


def write_glb(mesh: trimesh.Trimesh, path: Path, bound: float | None = None) -> list[Path]:
    data = trimesh.exchange.gltf.export_glb(mesh.scene(), include_normals=True, tree_postprocessor=_glb_tree)
    return [_write_checked(path, data, "glb", mesh, bound)]


def write_ply(mesh: trimesh.Trimesh, path: Path, bound: float | None = None) -> list[Path]:
    return [_write_checked(path, mesh.export(file_type="ply"), "ply", mesh, bound)]


def write_obj(mesh: trimesh.Trimesh, path: Path, bound: float | None = None) -> list[Path]:
    """path.obj; a textured mesh also gets path.mtl and path.png beside it (written first)."""
    if not textured(mesh):
        text = trimesh.exchange.obj.export_obj(mesh, include_color=True, include_texture=False)
        return [_write_checked(path, text.encode(), "obj", mesh, bound)]
    mtl, png = path.with_suffix(".mtl"), path.with_suffix(".png")
    text, _ = trimesh.exchange.obj.export_obj(mesh, include_normals=True, include_texture=True, return_texture=True,
                                              mtl_name=mtl.name)
    atomic_write(png, lambda tmp: Path(tmp).write_bytes(_png_bytes(mesh)))
    atomic_write(mtl, lambda tmp: Path(tmp).write_text(MTL.format(texture=png.name)))
    return [mtl, png, _write_checked(path, text.encode(), "obj", mesh, bound)]


WRITERS = {"glb": write_glb, "obj": write_obj, "ply": write_ply}


def write_mesh(mesh: trimesh.Trimesh, path: str | Path, bound: float | None = None) -> list[Path]:
    """Write GLB/OBJ/PLY (by suffix) atomically after checking the written bytes; returns every file written."""
    path = Path(path)
    return WRITERS[path.suffix.lstrip(".")](mesh, path, bound)
