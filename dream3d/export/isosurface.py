"""Isosurface extraction from a scene's density: grid evaluation, automatic level, marching cubes."""
from __future__ import annotations

import numpy as np
import torch
import trimesh
from torch import Tensor
from skimage.measure import marching_cubes

from dream3d.cameras import Cameras
from renderers.base import Scene
from renderers.nerf.volume_rendering import ray_aabb, stratified_samples


class EmptySceneError(RuntimeError):
    """The scene has no surface to export."""


@torch.no_grad()
def density_grid(scene: Scene, resolution: int, chunk: int = 65536) -> np.ndarray:
    """Density at the vertices of a regular grid over [-bound, bound]^3, indexed [x, y, z]."""
    b = scene.bound
    axis = torch.linspace(-b, b, resolution)
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    out = torch.cat([scene.density(pts[i:i + chunk]) for i in range(0, pts.shape[0], chunk)])
    return out.reshape(resolution, resolution, resolution).numpy()


HALF_OPACITY = float(np.log(2))  # optical depth at which transmittance reaches 0.5


@torch.no_grad()
def _march(scene: Scene, cameras: Cameras, resolution: int, samples: int):
    """Per-pixel densities along rays: returns rays' (origins, dirs, hit mask) [R,..], sample
    mids [R',S], densities [R',S] and optical depth [R',S] for the rays that hit the box."""
    o, d = (v.reshape(-1, 3) for v in cameras.rays(resolution, resolution))
    near, far, hit = ray_aabb(o, d, scene.bound)
    starts, ends = stratified_samples(near[hit], far[hit], samples, perturb=False, generator=None)
    mids = (starts + ends) / 2
    oh, dh = o[hit], d[hit]
    sigma = torch.cat([scene.density((oh[i:i + 512, None] + dh[i:i + 512, None] * mids[i:i + 512, :, None]).reshape(-1, 3))
                       for i in range(0, oh.shape[0], 512)]).reshape(mids.shape)
    return hit, mids, sigma, torch.cumsum(sigma * (ends - starts), -1)


def _empty_error() -> EmptySceneError:
    return EmptySceneError("no rendered pixel is opaque: the scene is empty (or fog); nothing to export. "
                           "Train longer, or raise scene.blob_density.")


@torch.no_grad()
def auto_level(scene: Scene, cameras: Cameras, resolution: int = 64, samples: int = 256) -> float:
    """The density at which renders show the surface: along each ray that ends opaque
    (transmittance < 0.5), take the density where transmittance crosses 0.5; return the
    median (in log space) over rays. The mesh's silhouette then matches the rendered one."""
    _, _, sigma, optical_depth = _march(scene, cameras, resolution, samples)
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
                         surface_opacity: float) -> tuple[Tensor, Tensor]:
    """Per camera, by marching the density: opaque [C,1,r,r] (1 where the ray ends with opacity > 1/2)
    and the depth [C,1,r,r] at which the ray first reaches `surface_opacity` (0 elsewhere)."""
    hit, mids, _, optical_depth = _march(scene, cameras, image_resolution, samples)
    opaque = torch.zeros(hit.shape)
    depth = torch.zeros(hit.shape)
    reached = optical_depth[:, -1] > HALF_OPACITY
    first = (optical_depth > -np.log(1 - surface_opacity)).float().argmax(-1)
    opaque[hit] = reached.float()
    depth[hit] = torch.where(reached, mids.gather(1, first[:, None]).squeeze(1), torch.zeros_like(mids[:, 0]))
    shape = (len(cameras), 1, image_resolution, image_resolution)
    return opaque.reshape(shape), depth.reshape(shape)


@torch.no_grad()
def visibility_grid(scene: Scene, grid_resolution: int, cameras: Cameras, image_resolution: int | None = None,
                    samples: int | None = None, surface_opacity: float = 0.05) -> np.ndarray:
    """A carving field on the grid, positive where every camera sees the point behind the
    rendered surface (solid) and negative where some camera sees it as free space.

    Per camera, with opacity A and the depth D at which a pixel's ray first reaches
    `surface_opacity` (trained NeRF surfaces are soft ramps: a ray reaches 5% opacity at the
    true surface and 50% well inside it), both interpolated bilinearly at the point's
    projection (D only from pixels that end opaque):
    m = min(pixel_size * (A - 1/2), distance - D); the field is min over cameras. Unlike a
    density level set it is solid behind a thin opaque skin, which NeRFs trained from renders
    often are, and its silhouettes are accurate to a fraction of a pixel."""
    image_resolution = image_resolution or min(96, grid_resolution)
    if hasattr(scene, "surface_maps"):  # scenes that render their own opacity and surface depth (Gaussians)
        opaque, depth = scene.surface_maps(cameras, image_resolution, surface_opacity)
    else:
        opaque, depth = marched_surface_maps(scene, cameras, image_resolution, samples or 2 * grid_resolution,
                                             surface_opacity)
    if opaque.sum() == 0:
        raise _empty_error()
    b = scene.bound
    axis = torch.linspace(-b, b, grid_resolution)
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    field = torch.full((pts.shape[0],), float("inf"))
    w2c = torch.linalg.inv(cameras.c2w())
    tan = torch.tan(torch.deg2rad(cameras.fovy) / 2)
    for k in range(len(cameras)):
        pc = pts @ w2c[k, :3, :3].T + w2c[k, :3, 3]
        z = (-pc[:, 2]).clamp(min=1e-6)
        uv = torch.stack([pc[:, 0] / (z * tan[k]), -pc[:, 1] / (z * tan[k])], -1).reshape(1, 1, -1, 2)
        a, w = (torch.nn.functional.grid_sample(img, uv, align_corners=False).reshape(-1)
                for img in (opaque[k:k + 1], depth[k:k + 1] * opaque[k:k + 1]))
        d_surface = torch.where(a > 0, w / a.clamp(min=1e-6), torch.zeros_like(a))
        dist = pc.norm(dim=-1)
        pixel = 2 * dist * tan[k] / image_resolution
        field = torch.minimum(field, torch.minimum(pixel * (a - 0.5), dist - d_surface))
    return field.reshape(grid_resolution, grid_resolution, grid_resolution).numpy()


def extract_mesh(scene: Scene, grid: np.ndarray, level: float, min_component_fraction: float = 0.05) -> trimesh.Trimesh:
    """Marching cubes of a field `grid` [R,R,R] (indexed [x,y,z] over the scene box, larger =
    inside) at `level`, in world coordinates (+Y up, front +Z), faces outward, vertex colours
    from the scene's albedo; connected pieces below `min_component_fraction` of the largest
    one's face count are dropped."""
    resolution = grid.shape[0]
    if np.isnan(grid).any():
        raise EmptySceneError("the field has NaN values; the checkpoint is damaged")
    if grid.max() <= level:
        raise EmptySceneError(f"no value above the level {level:.4g} (max {grid.max():.4g}): nothing to export")
    padded = np.pad(grid, 1, constant_values=min(float(grid.min()), level - 1.0))  # closes the surface at the box
    step = 2 * scene.bound / (resolution - 1)
    verts, faces, _, _ = marching_cubes(padded, level=level, spacing=(step, step, step))
    verts = verts - scene.bound - step
    mesh = trimesh.Trimesh(verts, faces, process=True)
    parts = mesh.split(only_watertight=False)
    if len(parts) > 1:
        biggest = max(len(p.faces) for p in parts)
        mesh = trimesh.util.concatenate([p for p in parts if len(p.faces) >= min_component_fraction * biggest])
    if mesh.volume < 0:
        mesh.invert()
    with torch.no_grad():
        rgb = scene.color(torch.as_tensor(mesh.vertices, dtype=torch.float32)).clamp(0, 1).numpy()
    mesh.visual.vertex_colors = np.concatenate([np.round(rgb * 255), np.full((len(rgb), 1), 255)], 1).astype(np.uint8)
    if not np.isfinite(mesh.vertices).all():
        raise EmptySceneError("marching cubes produced non-finite vertices")
    return mesh
