"""What an export writes and how: the `output.export` section of a run config, also set by
`dream3d export`'s flags."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dream3d.kernel.schema import ConfigError, bounded, choice, validate_fields
from renderers.gaussians.splat_files import SPLAT_FORMATS, SPLAT_UP, splat_suffix

EXPORT_FORMATS = ("glb", "obj", "ply", "splat")  # splat: a Gaussian scene's splat files (output.export.splat_formats)
SPLAT_FILE_KEYS = {"ply": "splat", "splat": "splat_antimatter", "ply_compressed": "splat_compressed"}  # export info "files"
EXPORT_COLORS = ("texture", "vertex")
# the scene's own choice (Scene.isosurface_method) | solid behind the rendered surface | the renders'
# outlines' visual hull | a density level set
ISOSURFACE_METHODS = ("auto", "visibility", "hull", "density")


def asset_path(base: str | Path, fmt: str) -> Path:
    """The file an export format is written to: base.glb, base.obj (its .mtl and .png beside it),
    base.ply, and base.splat.ply for splats (a PLY that 3DGS viewers open, not a mesh; the other
    splat files are at splat_path)."""
    return Path(f"{base}.splat.ply" if fmt == "splat" else f"{base}.{fmt}")


def splat_path(base: str | Path, splat_format: str) -> Path:
    """base.splat.ply (3DGS PLY), base.splat (antimatter15) or base.compressed.ply (SuperSplat)."""
    return Path(f"{base}{splat_suffix(splat_format)}")


@dataclass
class ExportConfig:
    formats: list[str] = field(default_factory=lambda: ["glb", "obj"])
    method: str = choice("auto", ISOSURFACE_METHODS)  # see ISOSURFACE_METHODS
    resolution: int = bounded(128, 16, 1024)  # marching-cubes grid per axis
    level: Any = "auto"  # density method only: "auto" or a density value
    surface_opacity: float = bounded(0.05, 0.001, 0.5)  # visibility and hull: opacity at which a ray meets the surface
    min_component_fraction: float = bounded(0.05, 0.0, 1.0)  # drop pieces smaller than this x the largest
    max_faces: int = bounded(30000, 0, 10_000_000)  # face budget (upper bound); 0 = no budget
    # decimate to about the fewest faces (>= 500) whose surface stays within this many grid cells of the
    # marching-cubes surface (two-sided distance); 0 = decimate to max_faces exactly
    max_error: float = bounded(1.0, 0.0, 100.0)
    colors: str = choice("texture", EXPORT_COLORS)  # baked UV texture (GLB/OBJ) | vertex colours; PLY: vertex colours
    texture_size: int = bounded(1024, 16, 8192)  # largest texture width = height in pixels
    # texels per grid cell along the surface: the texture is the smallest power of two (>= 64) that holds
    # the surface at this density, at most texture_size; 0 = always texture_size
    texels_per_cell: float = bounded(1.0, 0.0, 64.0)
    # the files format "splat" writes: ply (3DGS PLY), splat (antimatter15's .splat), ply_compressed (SuperSplat)
    splat_formats: list[str] = field(default_factory=lambda: list(SPLAT_FORMATS))
    # splat files' up axis: -y, the frame 3DGS viewers expect (INRIA / COLMAP; SuperSplat, antimatter15), or +y,
    # dream3d's own world frame
    splat_up: str = choice("-y", SPLAT_UP)


def validate_export(e: ExportConfig, scene: str) -> None:
    """Checks across output.export's fields (also for `dream3d export`'s flags)."""
    validate_fields(e, "output.export.")
    for fmt in e.formats:
        if fmt not in EXPORT_FORMATS:
            raise ConfigError(f"output.export.formats: {fmt!r} is not valid; valid: {', '.join(EXPORT_FORMATS)}")
        if fmt == "splat" and scene != "gaussians":
            raise ConfigError(f"output.export.formats: 'splat' needs scene.name=gaussians (this run's scene is "
                              f"{scene!r}); use glb, obj or ply")
    if not e.splat_formats or any(f not in SPLAT_FORMATS for f in e.splat_formats):
        raise ConfigError(f"output.export.splat_formats = {e.splat_formats!r}; valid: a non-empty list of "
                          f"{', '.join(SPLAT_FORMATS)}")
    if e.level != "auto" and not (isinstance(e.level, (int, float)) and e.level > 0):
        raise ConfigError(f"output.export.level = {e.level!r}; valid: 'auto' or a positive density value")
