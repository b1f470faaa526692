"""Export a scene as assets in the world frame (+Y up, front +Z, metres).

Pipeline: field on a coarse grid -> occupied box -> field on a fine grid in that box ->
marching cubes (isosurface.py) -> largest pieces -> decimation to a surface error within a
face budget (decimate.py) -> xatlas UVs and a baked base-colour texture, or vertex colours
(texture.py) -> GLB / OBJ+MTL+PNG / PLY, each checked after writing (writers.py).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import trimesh

from dream3d.export.config import ISOSURFACE_METHODS, SPLAT_FILE_KEYS, ExportConfig, asset_path, splat_path
from dream3d.export.decimate import decimate, decimate_to_error
from dream3d.export.isosurface import (
    EmptySceneError,
    Grid,
    auto_level,
    density_grid,
    extract_mesh,
    keep_large_pieces,
    paint_vertices,
    visibility_grid,
)
from dream3d.export.texture import bake_texture
from dream3d.export.writers import ExportError, load_mesh, write_mesh
from dream3d.kernel.cameras import Cameras, CameraSampler
from dream3d.kernel.timing import PhaseTimer
from renderers.base import Scene

COARSE_MARGIN = 2  # coarse cells added around the occupied box


def surface_cameras(elevation_range=(-10.0, 45.0), n: int = 32) -> Cameras:
    """Cameras spread over the training elevations (a few rings), for carving and auto-levels."""
    lo, hi = elevation_range
    rings = 4
    return Cameras.cat([CameraSampler().orbit(n // rings, lo + (hi - lo) * i / (rings - 1), offset=45.0 * i / rings)
                        for i in range(rings)])


class ExportCancelled(ExportError):
    """The export was stopped between phases (the web UI's Stop); no mesh file was written (splat
    files, written first, may be there)."""


def _check(cancel) -> None:
    if cancel is not None and cancel():
        raise ExportCancelled("stopped during export; the checkpoint is final and `dream3d export RUN_DIR` "
                              "writes the assets from it")


def resolved_method(scene: Scene, cfg: ExportConfig) -> str:
    """cfg.method, with "auto" replaced by the scene's own choice (Scene.isosurface_method); either
    checked (validate_export checks configs; this guards direct callers and scenes)."""
    if cfg.method not in ISOSURFACE_METHODS:
        raise ValueError(f"unknown isosurface method {cfg.method!r}; valid: {', '.join(ISOSURFACE_METHODS)}")
    if cfg.method != "auto":
        return cfg.method
    method = scene.isosurface_method()
    if method not in ISOSURFACE_METHODS or method == "auto":
        raise ValueError(f"{type(scene).__name__}.isosurface_method() gave {method!r}; valid: visibility, hull, density")
    return method


def surface_field(scene: Scene, cfg: ExportConfig, elevation_range=(-10.0, 45.0)
                  ) -> tuple[Callable[[Grid], np.ndarray], float]:
    """The field whose isosurface is the scene's exported surface, as (field(grid) -> values [X,Y,Z],
    level), by cfg.method ("auto": the scene's choice, resolved_method): "density": the density at
    cfg.level ("auto": where renders reach 50% opacity, see auto_level); "visibility": the carving
    field (visibility_grid), solid behind whatever the renders show as surface, at level 0; "hull": the
    same without its depth term, the visual hull of the renders' outlines."""
    method = resolved_method(scene, cfg)
    cams = surface_cameras(elevation_range)
    if method in ("visibility", "hull"):
        carve_depth = method == "visibility"
        return lambda grid: visibility_grid(scene, grid, cams, surface_opacity=cfg.surface_opacity,
                                            carve_depth=carve_depth), 0.0
    level = auto_level(scene, cams) if cfg.level == "auto" else float(cfg.level)
    return lambda grid: density_grid(scene, grid), level


def scene_mesh(scene: Scene, cfg: ExportConfig, elevation_range=(-10.0, 45.0), cancel=None,
               timer: PhaseTimer | None = None):
    """The scene's surface as a vertex-coloured trimesh, within cfg.max_faces; returns (mesh, info)
    with info's "level" (of the field), "grid_step" (the fine grid's cell, world units) and, when
    decimated by error, "surface_error_cells" (the decimated surface's distance from the full one).

    A scene with its own surface (Scene.surface_mesh: mesh scenes) exports that surface; "grid_step"
    is then the box over cfg.resolution, and info's "method" is "surface". Otherwise, method
    "density": marching cubes of the density at cfg.level ("auto": the density where renders reach
    50% opacity, see auto_level). method "visibility": marching cubes of the
    carving field (visibility_grid) at 0, solid behind whatever the renders show as surface; "hull": of
    the renders' visual hull (the carving field without depth).
    Coarse to fine: the field on a grid of resolution/4 finds the occupied box, then the full
    resolution covers that box only. Raises EmptySceneError when there is no surface, and
    ExportCancelled when `cancel()` is true between phases. `timer` (if given) records the seconds
    of the phases field, mesh, decimate and paint."""
    timer = timer or PhaseTimer()
    own = scene.surface_mesh()
    if own is not None:  # a mesh scene: its own surface, decimated and painted like an extracted one
        return _finish_mesh(scene, cfg, trimesh.Trimesh(own[0].cpu().numpy(), own[1].cpu().numpy()),
                            {"level": 0.0, "grid_step": 2 * scene.bound / cfg.resolution, "method": "surface"}, timer)
    field, level = surface_field(scene, cfg, elevation_range)
    with timer("field"):
        coarse = Grid.cube(scene.bound, max(16, cfg.resolution // 4))
        lo, hi = coarse.occupied_box(field(coarse), level, COARSE_MARGIN, scene.bound)
        _check(cancel)
        fine = Grid.fit(lo, hi, cfg.resolution)
        values = field(fine)
    with timer("mesh"):
        mesh = extract_mesh(values, fine, level, cfg.min_component_fraction)
    _check(cancel)
    return _finish_mesh(scene, cfg, mesh, {"level": float(level), "grid_step": fine.step}, timer)


def _finish_mesh(scene: Scene, cfg: ExportConfig, mesh, info: dict, timer: PhaseTimer):
    """scene_mesh's last phases: decimation (by error in grid cells, or to the face budget), small
    pieces dropped, vertices kept in the box, vertex colours from the scene."""
    if len(mesh.faces) == 0:
        raise EmptySceneError("the scene's surface has no triangles: nothing to export")
    with timer("decimate"):
        if cfg.max_error > 0:
            mesh, error = decimate_to_error(mesh, cfg.max_error * info["grid_step"], cfg.max_faces)
            info["surface_error_cells"] = round(error / info["grid_step"], 3)
        elif cfg.max_faces:
            mesh = decimate(mesh, cfg.max_faces)
        mesh = keep_large_pieces(mesh, cfg.min_component_fraction)  # collapses can pinch off specks
        # grids that reach past the box and decimation can put vertices slightly outside it; the scene ends there
        mesh.vertices = np.clip(mesh.vertices, -scene.bound, scene.bound)
    with timer("paint"):
        return paint_vertices(scene, mesh), info


def export_scene(scene: Scene, out_base: str | Path, cfg: ExportConfig | None = None, elevation_range=(-10.0, 45.0),
                 cancel=None) -> dict:
    """Write asset_path(out_base, fmt) for each of cfg.formats (for "splat": splat_path(out_base, f)
    for each of cfg.splat_formats, in the cfg.splat_up frame); returns {"method", "files", "seconds"
    (per phase)} and, when a mesh format was asked for, "level", "vertices", "faces", "colors",
    "grid_step", "surface_error_cells" (when decimated by error) and "texture_size" (when baked).
    Raises EmptySceneError (and writes nothing) when there is no surface, ExportError when a written file does not reopen as
    written, ExportCancelled when `cancel()` turns true before the files are written, ValueError
    for format "splat" on a scene without splats (Scene.supports_splats)."""
    cfg = cfg or ExportConfig()
    formats = list(cfg.formats)
    files: dict[str, str] = {}
    timer = PhaseTimer()
    info = {"method": resolved_method(scene, cfg), "files": files}
    _check(cancel)
    if "splat" in formats:
        if not scene.supports_splats():
            raise ValueError(f"format 'splat' needs a Gaussian scene, not {type(scene).__name__}")
        with timer("splat"):
            for fmt in cfg.splat_formats:
                files[SPLAT_FILE_KEYS[fmt]] = str(scene.write_splats(splat_path(out_base, fmt), fmt, cfg.splat_up))
        formats.remove("splat")
    if not formats:
        return {**info, "seconds": timer.seconds()}
    mesh, surface = scene_mesh(scene, cfg, elevation_range, cancel, timer)
    baked = None
    if cfg.colors == "texture" and set(formats) - {"ply"}:
        texels_per_unit = cfg.texels_per_cell / surface["grid_step"] if cfg.texels_per_cell > 0 else 0.0
        baked = bake_texture(scene, mesh, cfg.texture_size, texels_per_unit=texels_per_unit, timer=timer)
    _check(cancel)
    with timer("write"):
        for fmt in formats:
            written = write_mesh(baked if baked is not None and fmt != "ply" else mesh, asset_path(out_base, fmt),
                                 scene.bound)
            files[fmt] = str(written[-1])
            files.update({f"{fmt}_{p.suffix.lstrip('.')}": str(p) for p in written[:-1]})
    info["method"] = surface.get("method", info["method"])  # "surface": the scene's own mesh (Scene.surface_mesh)
    info.update(level=surface["level"], vertices=len(mesh.vertices), faces=len(mesh.faces), colors=cfg.colors,
                **{k: surface[k] for k in ("grid_step", "surface_error_cells") if k in surface},
                texture_size=baked.visual.material.baseColorTexture.size[0] if baked is not None else None,
                seconds=timer.seconds())
    return info


__all__ = ["EmptySceneError", "ExportError", "ExportCancelled", "export_scene", "scene_mesh", "load_mesh", "write_mesh",
           "extract_mesh", "auto_level", "surface_field", "Grid"]
