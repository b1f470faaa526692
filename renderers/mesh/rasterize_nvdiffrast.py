"""nvdiffrast's CUDA rasterize / interpolate / antialias (Laine et al. 2020) behind the interface of the torch
twin (rasterize_torch.py), for meshes on a GPU when nvdiffrast is installed. It is not on PyPI:
`pip install git+https://github.com/NVlabs/nvdiffrast` (it compiles its CUDA plugin on first use).

Our cameras (OpenCV axes, pixel (i, j) centred at (j + 0.5, i + 0.5), dream3d.kernel.cameras) become clip
space so that nvdiffrast's pixel centres are ours: x_ndc = 2u/W - 1, y_ndc = 2v/H - 1, w = camera depth.
nvdiffrast's row 0 is y_ndc = -1, which is then our top row, so no image is flipped. Its output
(u, v, z/w, triangle id + 1) gives the face index and barycentrics (u, v, 1 - u - v) of the triangle's
three vertices, differentiable with respect to the vertices as in the torch path (nvdiffrast's rasterize
passes gradients from u, v to the clip positions), so attributes are interpolated by the torch path's own
`interpolate` from them; the ray distance is that of the interpolated world position. Antialiasing is
nvdiffrast's. Triangles crossing the near plane are clipped (the torch path skips them). The CUDA
rasteriser takes any image size from nvdiffrast 0.3.2 (earlier: multiples of 8).
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass

import torch
from torch import Tensor

from dream3d.kernel.cameras import Cameras
from renderers.mesh.rasterize_torch import Rasterized, camera_space, interpolate, project

NEAR, FAR = 0.01, 100.0  # clip planes, in camera-space depth (world units)
_CONTEXTS: dict[torch.device, object] = {}


@functools.cache
def available() -> bool:
    """Whether nvdiffrast is importable (its CUDA plugin is built at the first rasterisation)."""
    return importlib.util.find_spec("nvdiffrast") is not None


def use_nvdiffrast(verts: Tensor) -> bool:
    """The mesh renders through nvdiffrast when its vertices are on a GPU and nvdiffrast is installed."""
    return torch.cuda.is_available() and verts.is_cuda and available()


def clip_positions(verts: Tensor, cameras: Cameras, height: int, width: int) -> Tensor:
    """World vertices [V,3] -> clip-space positions [B,V,4] for nvdiffrast: (x_ndc w, y_ndc w, z_ndc w, w) with
    w the camera-space depth, x_ndc = 2u/W - 1 and y_ndc = 2v/H - 1 for the pixel coordinates (u, v) of
    `project`, and z_ndc running from -1 at NEAR to 1 at FAR (OpenGL's depth mapping)."""
    cam, Ks = camera_space(verts, cameras, height, width)
    z = cam[..., 2]
    pix = torch.einsum("bij,bvj->bvi", Ks, cam)  # (u z, v z, z)
    x = 2 * pix[..., 0] / width - z
    y = 2 * pix[..., 1] / height - z
    depth = (FAR + NEAR) / (FAR - NEAR) * z - 2 * FAR * NEAR / (FAR - NEAR)
    return torch.stack([x, y, depth, z], -1)


@dataclass
class NvdiffrastRasterized(Rasterized):
    """Rasterized, plus what nvdiffrast's antialias reads: its raw output [B,H,W,4] and the clip positions [B,V,4]."""

    raw: Tensor | None = None
    clip: Tensor | None = None


def _context(device: torch.device):
    import nvdiffrast.torch as dr

    if device not in _CONTEXTS:
        _CONTEXTS[device] = dr.RasterizeCudaContext(device=device)
    return _CONTEXTS[device]


def rasterize(verts: Tensor, faces: Tensor, cameras: Cameras, height: int, width: int) -> NvdiffrastRasterized:
    """Rasterise the mesh (world vertices [V,3] on a GPU, triangles [F,3] long) for B cameras; see Rasterized."""
    if not verts.is_cuda:
        raise RuntimeError(f"nvdiffrast rasterises on a CUDA device; the mesh is on {verts.device} (train.device=cuda, "
                           "or the rasterizer setting auto / torch)")
    import nvdiffrast.torch as dr

    cameras = cameras.to(verts.device)
    clip = clip_positions(verts.float(), cameras, height, width).contiguous()
    tri = faces.to(torch.int32).contiguous()
    raw, _ = dr.rasterize(_context(verts.device), clip, tri, resolution=(height, width))
    face = raw[..., 3].long() - 1
    mask = face >= 0
    bary = torch.stack([raw[..., 0], raw[..., 1], 1 - raw[..., 0] - raw[..., 1]], -1) * mask[..., None]
    screen, _ = project(verts, cameras, height, width)  # Rasterized's contract (the torch antialias reads it; this one does not)
    rast = NvdiffrastRasterized(face, bary.to(verts.dtype), torch.zeros_like(raw[..., 0]), screen, raw, clip)
    hit = interpolate(verts, faces, rast)
    rast.distance = (hit - cameras.positions.to(hit)[:, None, None]).norm(dim=-1) * mask
    return rast


def antialias(image: Tensor, faces: Tensor, rast: NvdiffrastRasterized) -> Tensor:
    """nvdiffrast's antialias of [B,H,W,C] across the silhouette edges of the rasterised mesh."""
    import nvdiffrast.torch as dr

    return dr.antialias(image.float().contiguous(), rast.raw, rast.clip, faces.to(torch.int32).contiguous()).to(image.dtype)
