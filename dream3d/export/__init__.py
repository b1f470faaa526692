"""Export a scene to mesh files in the world frame (+Y up, front +Z)."""
from __future__ import annotations

from pathlib import Path

from dream3d.cameras import Cameras, CameraSampler
from dream3d.config import ISOSURFACE_METHODS
from dream3d.export.isosurface import EmptySceneError, auto_level, density_grid, extract_mesh, visibility_grid
from dream3d.export.writers import load_mesh, write_mesh


def surface_cameras(elevation_range=(-10.0, 45.0), n: int = 32) -> Cameras:
    """Cameras spread over the training elevations (a few rings), for carving and auto-levels."""
    lo, hi = elevation_range
    rings = 4
    return Cameras.cat([CameraSampler().orbit(n // rings, lo + (hi - lo) * i / (rings - 1), offset=45.0 * i / rings)
                        for i in range(rings)])


def export_scene(scene, out_base: str | Path, formats=("glb", "obj"), resolution: int = 128, level="auto",
                 min_component_fraction: float = 0.05, method: str = "visibility",
                 elevation_range=(-10.0, 45.0), surface_opacity: float = 0.05) -> dict:
    """Write `out_base.<fmt>` for each format; returns {"method", "level", "vertices", "faces", "files"}.

    method "density": marching cubes of the density at `level` ("auto": the density where
    renders reach 50% opacity, see auto_level). method "visibility": marching cubes of the
    carving field (visibility_grid) at 0, solid behind whatever the renders show as surface.
    Raises EmptySceneError (and writes nothing) when there is no surface."""
    files = {}
    if "splat" in formats:
        if not hasattr(scene, "write_splats"):
            raise ValueError(f"format 'splat' needs a Gaussian scene, not {type(scene).__name__}")
        files["splat"] = str(scene.write_splats(Path(f"{out_base}.splat.ply")))
        formats = [f for f in formats if f != "splat"]
    cams = surface_cameras(elevation_range)
    if method == "visibility":
        grid, level = visibility_grid(scene, resolution, cams, surface_opacity=surface_opacity), 0.0
    elif method == "density":
        level = auto_level(scene, cams) if level == "auto" else float(level)
        grid = density_grid(scene, resolution)
    else:
        raise ValueError(f"unknown isosurface method {method!r}; valid: {', '.join(ISOSURFACE_METHODS)}")
    mesh = extract_mesh(scene, grid, float(level), min_component_fraction)
    files.update({fmt: str(write_mesh(mesh, Path(f"{out_base}.{fmt}"))) for fmt in formats})
    return {"method": method, "level": float(level), "vertices": len(mesh.vertices), "faces": len(mesh.faces),
            "files": files}


__all__ = ["EmptySceneError", "export_scene", "load_mesh", "write_mesh", "extract_mesh", "auto_level"]
