"""ToyWorld multi-view images: rendered once per shape and camera, tinted per colour, cached.

Geometry is rendered once per (shape, camera) into three antialiased layers [N,3,H,W]:
coverage, shading of the unmarked surface, shading of the marker region (outward normal
n_z > 0.7). Any item is then an exact linear tint of those layers on a white background:
`img = (1 - cov) + base * albedo + marker * marker_albedo`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dream3d.kernel.atomic_io import atomic_torch_save
from dream3d.kernel.cache import cache_root, prune
from dream3d.kernel.cameras import Cameras, wrap_degrees
from dream3d.toyworld.catalogue import COLOURS, Item
from dream3d.toyworld.geometry import LIGHT, intersect

CACHE_VERSION = "v1"
MARKER_NZ = 0.7
DATASET_ELEVATIONS = (-10.0, 45.0)  # the dataset cameras' elevation range (toyworld.md)


def cache_dir() -> Path:
    return cache_root() / "toyworld" / CACHE_VERSION


def render_layers(shape: str, cameras: Cameras, resolution: int, supersample: int = 2, chunk: int = 8) -> Tensor:
    """Antialiased geometry layers [B,3,H,W] (coverage, base shading, marker shading)."""
    out = []
    for i in range(0, len(cameras), chunk):
        o, d = cameras[i : i + chunk].rays(resolution, resolution, supersample)
        t, n = intersect(shape, o, d)
        hit = torch.isfinite(t)
        shade = 0.35 + 0.65 * (n @ LIGHT).clamp(min=0)
        marker = hit & (n[..., 2] > MARKER_NZ)
        layers = torch.stack([hit.float(), (hit & ~marker) * shade, marker * shade], 1)  # [b,3,Hs,Ws]
        out.append(F.avg_pool2d(layers, supersample) if supersample > 1 else layers)
    return torch.cat(out)


def tint(layers: Tensor, item_colour: str, marker: str | None = None) -> Tensor:
    """Images in [0,1] [B,3,H,W] from geometry layers [B,3,H,W]."""
    body = torch.tensor(COLOURS[item_colour], device=layers.device)[None, :, None, None]
    mark = torch.tensor(COLOURS[marker or item_colour], device=layers.device)[None, :, None, None]
    cov, base, mk = layers[:, 0:1].float(), layers[:, 1:2].float(), layers[:, 2:3].float()
    return (1 - cov) + base * body + mk * mark


def render_gt(item: Item, cameras: Cameras, resolution: int, colour: str | None = None,
              supersample: int = 2) -> tuple[Tensor, Tensor]:
    """Ground-truth images [B,3,H,W] and coverage masks [B,1,H,W] of an item from any cameras, from
    `supersample` x `supersample` rays per pixel (2, as the dataset's images; dream3d eval uses more)."""
    layers = render_layers(item.shape, cameras, resolution, supersample)
    return tint(layers, colour or item.colours[0], item.marker), layers[:, :1]


def sample_dataset_cameras(
    n: int, seed: int, distribution: str = "uniform", kappa: float = 2.0, uniform_floor: float = 0.2,
    elevation_range: tuple[float, float] = DATASET_ELEVATIONS, distance: float = 2.5, fovy: float = 40.0,
) -> Cameras:
    """Dataset cameras: elevation U[range]; azimuth uniform or front-biased (von Mises around 0
    with concentration kappa, mixed with a uniform floor)."""
    rng = np.random.default_rng(seed)
    el = rng.uniform(*elevation_range, size=n)
    az = rng.uniform(-180.0, 180.0, size=n)
    if distribution == "front_biased":
        vm = np.degrees(rng.vonmises(0.0, kappa, size=n))
        az = np.where(rng.uniform(size=n) < uniform_floor, az, vm)
    elif distribution != "uniform":
        raise ValueError(f"unknown camera distribution {distribution!r}; valid: uniform, front_biased")
    return Cameras.make(torch.from_numpy(el).float(), torch.from_numpy(az).float(), distance, fovy)


@dataclass
class ShapeViews:
    """One shape's cached geometry layers [N,3,H,W] (float16) and camera angles [N] (degrees)."""

    layers: Tensor
    elevation: Tensor
    azimuth: Tensor

    def images(self, colour: str, marker: str | None, resolution: int) -> Tensor:
        """Tinted images in [0,1], area-downsampled to `resolution` [N,3,r,r] (float32)."""
        layers = self.layers.float()
        if resolution != layers.shape[-1]:
            layers = F.interpolate(layers, size=(resolution, resolution), mode="area")
        return tint(layers, colour, marker)


def grid_elevations(elevation_step: float, elevation_range: tuple[float, float] = DATASET_ELEVATIONS) -> int:
    """E, the number of grid elevations: from the range's low end every `elevation_step` degrees."""
    return int((elevation_range[1] - elevation_range[0]) / elevation_step + 1e-6) + 1


def grid_cameras(elevation_step: float, azimuth_steps: int, elevation_range: tuple[float, float] = DATASET_ELEVATIONS,
                 distance: float = 2.5, fovy: float = 40.0) -> Cameras:
    """A regular grid of cameras, elevation-major [E*A]: `grid_elevations` elevations, azimuths k * 360/A
    from 0 (the multi-view prior's candidate views, guidance/priors/toyworld_multiview.py)."""
    el = elevation_range[0] + elevation_step * torch.arange(grid_elevations(elevation_step, elevation_range),
                                                            dtype=torch.float32)
    az = wrap_degrees(torch.arange(azimuth_steps, dtype=torch.float32) * (360.0 / azimuth_steps))
    return Cameras.make(el.repeat_interleave(azimuth_steps), az.repeat(len(el)), distance, fovy)


def load_shape_views(
    shape: str, num_views: int = 1024, resolution: int = 64, seed: int = 0,
    distribution: str = "uniform", kappa: float = 2.0, progress: bool = False,
) -> ShapeViews:
    """Build (once) or load the cached views of a shape; deterministic in the seed."""
    key = f"{shape}-n{num_views}-r{resolution}-s{seed}-{distribution}" + (f"-k{kappa}" if distribution != "uniform" else "")
    return load_views(shape, key, sample_dataset_cameras(num_views, seed, distribution, kappa), resolution, progress)


def load_grid_views(shape: str, elevation_step: float, azimuth_steps: int, resolution: int = 64,
                    progress: bool = False) -> ShapeViews:
    """Build (once) or load the cached views of a shape from the `grid_cameras` grid."""
    key = f"{shape}-grid-e{elevation_step:g}-a{azimuth_steps}-r{resolution}"
    return load_views(shape, key, grid_cameras(elevation_step, azimuth_steps), resolution, progress)


def load_views(shape: str, key: str, cams: Cameras, resolution: int, progress: bool = False) -> ShapeViews:
    """A shape's geometry layers from `cams`, rendered once and cached on disk under `key` (which must
    name everything the cameras are made from)."""
    num_views = len(cams)
    path = cache_dir() / f"{key}.pt"
    if path.exists():
        try:
            data = torch.load(path, weights_only=True)
            if data["layers"].shape == (num_views, 3, resolution, resolution):
                try:
                    os.utime(path)  # recently used: pruned last
                except OSError:  # a read-only cache is still a cache
                    pass
                return ShapeViews(data["layers"], cams.elevation, cams.azimuth)
        except Exception:  # a corrupt cache entry is rebuilt, never trusted
            pass
    chunks = range(0, num_views, 64)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc=f"ToyWorld: rendering {num_views} views of the {shape}", unit="x64", leave=False)
    layers = torch.cat([render_layers(shape, cams[i : i + 64], resolution) for i in chunks]).half()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"layers": layers}, path)
    prune(path.parent, keep=path)  # bounded: $DREAM3D_CACHE_MAX_GB
    return ShapeViews(layers, cams.elevation, cams.azimuth)
