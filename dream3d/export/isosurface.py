"""Isosurface extraction from a scene's density: grid evaluation, automatic level, marching cubes."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import trimesh
from skimage.measure import marching_cubes
from torch import Tensor

from dream3d.kernel.cameras import Cameras
from dream3d.kernel.rays import ray_box, stratified_samples
from renderers.base import Scene
from renderers.nerf.volume_rendering import march_occupied


class EmptySceneError(RuntimeError):
    """The scene has no surface to export."""


@dataclass(frozen=True)
class Grid:
    """A regular lattice of points lo + step * (i, j, k), i < shape[0] ..., indexed [x, y, z]."""

    lo: tuple[float, float, float]
    step: float
    shape: tuple[int, int, int]

    @classmethod
    def cube(cls, bound: float, resolution: int) -> "Grid":
        """`resolution` points per axis over [-bound, bound]^3."""
        return cls((-bound,) * 3, 2 * bound / (resolution - 1), (resolution,) * 3)

    @classmethod
    def fit(cls, lo, hi, resolution: int) -> "Grid":
        """Cubic cells over the box [lo, hi], `resolution` points along its longest side."""
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        step = float((hi - lo).max()) / (resolution - 1)
        shape = tuple(int(math.ceil(e / step - 1e-9)) + 1 for e in hi - lo)
        return cls(tuple(float(v) for v in lo), step, shape)

    def points(self) -> Tensor:
        """Grid points [X*Y*Z, 3] in [x, y, z] index order."""
        axes = [self.lo[i] + self.step * torch.arange(self.shape[i], dtype=torch.float64) for i in range(3)]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).float()

    def box(self) -> tuple[Tensor, Tensor]:
        """The corners (lo [3], hi [3]) of the box the grid points span."""
        lo = torch.tensor(self.lo)
        return lo, lo + self.step * (torch.tensor(self.shape) - 1)

    def occupied_box(self, field: np.ndarray, level: float, margin: int, bound: float) -> tuple[np.ndarray, np.ndarray]:
        """Bounding box (lo [3], hi [3]) of the points where field > level, grown by `margin` cells
        and clipped to [-bound, bound]^3 (the coarse pass of a coarse-to-fine extraction)."""
        idx = np.argwhere(field > level)
        if len(idx) == 0:
            raise EmptySceneError(f"no value above the level {level:.4g}: nothing to export")
        lo = np.asarray(self.lo) + (idx.min(0) - margin) * self.step
        hi = np.asarray(self.lo) + (idx.max(0) + margin) * self.step
        return np.clip(lo, -bound, bound), np.clip(hi, -bound, bound)


@torch.no_grad()
def density_grid(scene: Scene, grid: Grid, chunk: int = 65536) -> np.ndarray:
    """The scene's density at the grid points, [X,Y,Z]."""
    pts = grid.points()
    out = torch.cat([scene.density(pts[i:i + chunk]) for i in range(0, pts.shape[0], chunk)])
    return out.reshape(grid.shape).numpy()


HALF_OPACITY = float(np.log(2))  # optical depth at which transmittance reaches 0.5


@torch.no_grad()
def _march(scene: Scene, cameras: Cameras, resolution: int, samples: int, box: tuple[Tensor, Tensor] | None = None,
           stop_at: float | None = None, segment: int = 16, rays: int = 4096):
    """Per-pixel densities along rays through `box` (lo [3], hi [3]; default the scene's bounding
    cube): returns the hit mask [R], sample intervals (starts, ends) [R',S], densities [R',S] and the
    optical depth at each interval's end [R',S] for the R' rays that hit the box. Density outside
    the box is not counted, nor where `scene.occupied` says there is none (its renders skip those
    samples too). Rays are marched `segment` samples at a time, `rays` at once, by the NeRF
    renderer's march_occupied; with `stop_at`, a ray stops after the segment in which its optical
    depth reached it (its later samples count as empty: the optical depth up to `stop_at`, and
    where it is crossed, are exact)."""
    o, d = (v.reshape(-1, 3) for v in cameras.rays(resolution, resolution))
    lo, hi = box if box is not None else (-scene.bound, scene.bound)
    near, far, hit = ray_box(o, d, lo, hi)
    starts, ends = stratified_samples(near[hit], far[hit], samples, perturb=False, generator=None)
    mids, deltas = (starts + ends) / 2, ends - starts
    oh, dh = o[hit], d[hit]

    def density(points: Tensor) -> tuple[Tensor, Tensor]:  # march_occupied's field: density and no features
        return scene.density(points), points.new_zeros(len(points), 0)

    def occupied(points: Tensor) -> Tensor:
        keep = scene.occupied(points)
        return torch.ones(len(points), dtype=torch.bool) if keep is None else keep

    min_transmittance = float(np.exp(-stop_at)) if stop_at is not None else 0.0
    segments = max(1, -(-samples // segment))
    sigma = torch.cat([march_occupied(density, oh[i:i + rays, None] + dh[i:i + rays, None] * mids[i:i + rays, :, None],
                                      deltas[i:i + rays], occupied, segments, min_transmittance)[0]
                       for i in range(0, len(mids), rays)]) if len(mids) else torch.zeros_like(mids)
    return hit, starts, ends, sigma, torch.cumsum(sigma * deltas, -1)


def _empty_error() -> EmptySceneError:
    return EmptySceneError("no rendered pixel is opaque: the scene is empty (or fog); nothing to export. "
                           "Train longer, or raise scene.blob_density.")


@torch.no_grad()
def auto_level(scene: Scene, cameras: Cameras, resolution: int = 64, samples: int = 256) -> float:
    """The density at which renders show the surface: along each ray that ends opaque
    (transmittance < 0.5), take the density where transmittance crosses 0.5; return the
    median (in log space) over rays. The mesh's silhouette then matches the rendered one."""
    _, _, _, sigma, optical_depth = _march(scene, cameras, resolution, samples, stop_at=HALF_OPACITY)
    opaque = optical_depth[:, -1] > HALF_OPACITY
    if not opaque.any():
        raise _empty_error()
    first = (optical_depth[opaque] > HALF_OPACITY).float().argmax(-1)[:, None]
    # between the last sample before the crossing and the first after it (a step field's level
    # then lies strictly between its two values)
    sig = sigma[opaque]
    at_surface = 0.5 * (sig.gather(1, first) + sig.gather(1, (first - 1).clamp(min=0))).squeeze(1)
    return float(torch.exp(torch.log(at_surface.clamp(min=1e-6)).median()))


@torch.no_grad()
def marched_surface_maps(scene: Scene, cameras: Cameras, image_resolution: int, samples: int,
                         surface_opacity: float, box: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Per camera, by marching the density in `box` (see _march): opaque [C,1,r,r] (1 where the ray
    ends with opacity > 1/2) and the depth [C,1,r,r] at which the ray first reaches
    `surface_opacity` (0 elsewhere)."""
    threshold = -float(np.log(1 - surface_opacity))
    hit, starts, ends, _, optical_depth = _march(scene, cameras, image_resolution, samples, box,
                                                 stop_at=max(threshold, HALF_OPACITY))
    opaque = torch.zeros(hit.shape)
    depth = torch.zeros(hit.shape)
    reached = optical_depth[:, -1] > HALF_OPACITY
    first = (optical_depth > threshold).float().argmax(-1)[:, None]  # the sample in which the threshold is crossed
    # density is constant within a sample, so the optical depth grows linearly across it: the crossing
    # point is exact, not just the sample's middle (fewer samples give the same depth)
    before = torch.where(first > 0, optical_depth.gather(1, (first - 1).clamp(min=0)), torch.zeros_like(starts[:, :1]))
    after = optical_depth.gather(1, first)
    t0, t1 = starts.gather(1, first), ends.gather(1, first)
    crossing = (t0 + (t1 - t0) * ((threshold - before) / (after - before).clamp(min=1e-12)).clamp(0, 1)).squeeze(1)
    opaque[hit] = reached.float()
    depth[hit] = torch.where(reached, crossing, torch.zeros_like(crossing))
    shape = (len(cameras), 1, image_resolution, image_resolution)
    return opaque.reshape(shape), depth.reshape(shape)


@torch.no_grad()
def visibility_grid(scene: Scene, grid: Grid, cameras: Cameras, image_resolution: int | None = None,
                    samples: int | None = None, surface_opacity: float = 0.05, carve_depth: bool = True) -> np.ndarray:
    """A carving field [X,Y,Z] on the grid, positive where every camera sees the point behind the
    rendered surface (solid) and negative where some camera sees it as free space.

    Per camera, with opacity A and the depth D at which a pixel's ray first reaches
    `surface_opacity` (trained NeRF surfaces are soft ramps: a ray reaches 5% opacity at the
    true surface and 50% well inside it), both interpolated bilinearly at the point's
    projection (D only from pixels that end opaque):
    m = min(pixel_size * (A - 1/2), distance - D); the field is min over cameras. Unlike a
    density level set it is solid behind a thin opaque skin, which NeRFs trained from renders
    often are, and its silhouettes are accurate to a fraction of a pixel. Marched scenes are
    marched within the grid's box only (the fine pass of a coarse-to-fine extraction covers the
    occupied box, where every surface lies), `samples` (default one per grid cell; the surface
    depth is interpolated within a sample) across it. `carve_depth=False` drops the depth term: the
    visual hull of the renders' outlines (export method "hull"), which keeps what no outline shows,
    concavities included, and does not depend on where a scene puts its depth (a splat composites at
    one depth for its whole footprint)."""
    grid_resolution = max(grid.shape)
    image_resolution = image_resolution or min(96, grid_resolution)
    maps = scene.surface_maps(cameras, image_resolution, surface_opacity)  # scenes with their own renderer (Gaussians)
    if maps is None:
        maps = marched_surface_maps(scene, cameras, image_resolution, samples or grid_resolution,
                                    surface_opacity, grid.box())
    opaque, depth = maps
    if opaque.sum() == 0:
        raise _empty_error()
    maps = torch.cat([opaque, depth * opaque], 1)  # [C,2,r,r]: both interpolated in one pass
    pts = grid.points()
    field = torch.full((pts.shape[0],), float("inf"))
    w2c = torch.linalg.inv(cameras.c2w())
    tan = torch.tan(torch.deg2rad(cameras.fovy) / 2)
    for k in range(len(cameras)):
        pc = pts @ w2c[k, :3, :3].T + w2c[k, :3, 3]
        z = (-pc[:, 2]).clamp(min=1e-6)
        uv = torch.stack([pc[:, 0] / (z * tan[k]), -pc[:, 1] / (z * tan[k])], -1).reshape(1, 1, -1, 2)
        a, w = torch.nn.functional.grid_sample(maps[k:k + 1], uv, align_corners=False).reshape(2, -1)
        d_surface = torch.where(a > 0, w / a.clamp(min=1e-6), torch.zeros_like(a))
        dist = pc.norm(dim=-1)
        pixel = 2 * dist * tan[k] / image_resolution
        outline = pixel * (a - 0.5)
        field = torch.minimum(field, torch.minimum(outline, dist - d_surface) if carve_depth else outline)
    return field.reshape(grid.shape).numpy()


def extract_mesh(field: np.ndarray, grid: Grid, level: float,
                 min_component_fraction: float = 0.05) -> trimesh.Trimesh:
    """Marching cubes of `field` [X,Y,Z] (values at `grid`'s points, larger = inside) at `level`,
    in world coordinates (+Y up, front +Z), faces outward, uncoloured (see paint_vertices);
    connected pieces below `min_component_fraction` of the largest one's face count are dropped."""
    if np.isnan(field).any():
        raise EmptySceneError("the field has NaN values; the checkpoint is damaged")
    if field.max() <= level:
        raise EmptySceneError(f"no value above the level {level:.4g} (max {field.max():.4g}): nothing to export")
    padded = np.pad(field, 1, constant_values=min(float(field.min()), level - 1.0))  # closes the surface at the box
    step = grid.step
    verts, faces, _, _ = marching_cubes(padded, level=level, spacing=(step, step, step))
    verts = verts + np.asarray(grid.lo) - step
    mesh = keep_large_pieces(drop_degenerate(trimesh.Trimesh(verts, faces, process=True)), min_component_fraction)
    if mesh.volume < 0:
        mesh.invert()
    if not np.isfinite(mesh.vertices).all():
        raise EmptySceneError("marching cubes produced non-finite vertices")
    return mesh


def keep_large_pieces(mesh: trimesh.Trimesh, min_fraction: float) -> trimesh.Trimesh:
    """Drop connected pieces with fewer than `min_fraction` x the largest piece's faces."""
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return mesh
    biggest = max(len(p.faces) for p in parts)
    return trimesh.util.concatenate([p for p in parts if len(p.faces) >= min_fraction * biggest])


def drop_degenerate(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Remove zero-area faces and folded pairs (two faces on the same three vertices, back to
    back, which decimation can leave), then the vertices only they used: both have no
    well-defined normal (glTF validators reject zero normals) and xatlas leaves them uncharted."""
    keep = np.zeros(len(mesh.faces), bool)
    keep[mesh.nondegenerate_faces()] = True
    _, inverse, counts = np.unique(np.sort(mesh.faces, axis=1), axis=0, return_inverse=True, return_counts=True)
    keep &= counts[inverse.reshape(-1)] == 1
    mesh.update_faces(keep)
    mesh.remove_unreferenced_vertices()
    return mesh


@torch.no_grad()
def scene_colors(scene: Scene, points: np.ndarray | Tensor, chunk: int = 65536) -> Tensor:
    """The scene's albedo [N,3] in [0,1] at points [N,3], evaluated in chunks."""
    pts = torch.as_tensor(points, dtype=torch.float32)
    if len(pts) == 0:
        return torch.zeros(0, 3)
    return torch.cat([scene.color(pts[i:i + chunk]).clamp(0, 1) for i in range(0, len(pts), chunk)])


def paint_vertices(scene: Scene, mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Set the mesh's vertex colours (RGBA uint8) to the scene's albedo at its vertices."""
    rgb = scene_colors(scene, mesh.vertices).numpy()
    mesh.visual = trimesh.visual.ColorVisuals(
        mesh, vertex_colors=np.concatenate([np.round(rgb * 255), np.full((len(rgb), 1), 255)], 1).astype(np.uint8))
    return mesh
