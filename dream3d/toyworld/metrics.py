"""Quality against ToyWorld ground truth: silhouettes, colours, saturation, mesh volume IoU, Chamfer distance."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from dream3d.toyworld.geometry import inside


def psnr(a: Tensor, b: Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0,1] (inf when identical)."""
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else -10 * float(np.log10(mse))


def silhouette_iou(alpha: Tensor, mask: Tensor, threshold: float = 0.5) -> float:
    """IoU of (alpha > t) and (mask > t); alpha, mask [B,1,H,W]."""
    a, m = alpha > threshold, mask > threshold
    return float((a & m).sum() / (a | m).sum().clamp(min=1))


def colour_error(rgb: Tensor, gt: Tensor, alpha: Tensor, mask: Tensor, threshold: float = 0.5) -> float:
    """Mean absolute RGB error over pixels that are foreground in both (silhouette errors are
    IoU's business); rgb, gt [B,3,H,W]."""
    both = ((alpha > threshold) & (mask > threshold)).expand_as(rgb)
    if not both.any():
        return 1.0
    return float((rgb - gt).abs()[both].mean())


def mean_saturation(rgb: Tensor, mask: Tensor, threshold: float = 0.5) -> float:
    """Mean HSV saturation (max-min)/max of foreground pixels."""
    mx, mn = rgb.max(1, keepdim=True).values, rgb.min(1, keepdim=True).values
    sat = (mx - mn) / mx.clamp(min=1e-6)
    fg = mask > threshold
    return float(sat[fg].mean()) if fg.any() else 0.0


def sharpness(rgb: Tensor, gt: Tensor) -> float:
    """RMS image gradient of renders over the truth's, both [B,3,H,W] on the same cameras: 1 = as
    sharp as the truth, < 1 blurrier, > 1 noisier. (RMS, not mean |gradient|: blur keeps a step's
    total variation but spreads it, which lowers the squared gradient.)"""
    def grad(img: Tensor) -> float:
        return float(((img.diff(dim=-1) ** 2).mean() + (img.diff(dim=-2) ** 2).mean()).sqrt())

    return grad(rgb) / max(grad(gt), 1e-8)


def mesh_occupancy(vertices: np.ndarray, faces: np.ndarray, xs: np.ndarray, ys: np.ndarray | None = None,
                   zs: np.ndarray | None = None) -> np.ndarray:
    """Inside test of a closed mesh at the grid points xs x ys x zs, by ray parity along x.

    For every triangle, the grid columns (y_j, z_k) that fall inside its projection on the yz
    plane get a crossing at the triangle's x; a point is inside when the number of crossings
    beyond it is odd. Keep the columns off mesh edges (offset ys and zs by different irrational
    amounts). Returns bool [nx,ny,nz].
    """
    ys = xs if ys is None else ys
    zs = xs if zs is None else zs
    ny, nz, nx = len(ys), len(zs), len(xs)
    tri = vertices[faces]  # [F,3,3]
    lo = np.stack([np.searchsorted(ys, tri[..., 1].min(1), side="left"),
                   np.searchsorted(zs, tri[..., 2].min(1), side="left")], -1)  # [F,2]
    hi = np.stack([np.searchsorted(ys, tri[..., 1].max(1), side="right"),
                   np.searchsorted(zs, tri[..., 2].max(1), side="right")], -1)
    counts = np.clip(hi - lo, 0, None).prod(1)
    keep = counts > 0
    tri, lo, hi, counts = tri[keep], lo[keep], hi[keep], counts[keep]
    fid = np.repeat(np.arange(len(tri)), counts)
    offs = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    span_z = (hi - lo)[:, 1][fid]
    jy, jz = lo[fid, 0] + offs // span_z, lo[fid, 1] + offs % span_z
    p = np.stack([ys[jy], zs[jz]], -1)
    a, b, c = tri[fid, 0], tri[fid, 1], tri[fid, 2]
    v0, v1, v2 = b[:, 1:] - a[:, 1:], c[:, 1:] - a[:, 1:], p - a[:, 1:]
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    ok = np.abs(den) > 1e-15
    den = np.where(ok, den, 1.0)
    u = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    v = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1)
    x = (a[:, 0] + u * (b[:, 0] - a[:, 0]) + v * (c[:, 0] - a[:, 0]))[hit]
    col = (jy * nz + jz)[hit]
    ix = np.searchsorted(xs, x, side="left")  # grid points with index < ix lie before the crossing
    diff = np.zeros((ny * nz, nx + 1), dtype=np.int64)
    np.add.at(diff, (col, np.zeros_like(col)), 1)
    np.add.at(diff, (col, ix), -1)
    crossings = np.cumsum(diff[:, :nx], axis=1)
    return (crossings % 2 == 1).reshape(ny, nz, nx).transpose(2, 0, 1)


def volumetric_iou(vertices: np.ndarray, faces: np.ndarray, shape: str, resolution: int = 64,
                   bound: float = 0.6) -> float:
    """IoU of a closed mesh's interior with the true shape on a resolution^3 grid over the box."""
    # distinct irrational offsets keep the sample columns off mesh edges and vertices
    base = np.linspace(-bound, bound, resolution)
    xs, ys, zs = base + 1e-4 * np.sqrt(2), base + 1e-4 * np.sqrt(3), base + 1e-4 * np.sqrt(5)
    occ = mesh_occupancy(np.asarray(vertices, dtype=np.float64), np.asarray(faces), xs, ys, zs)
    g = torch.from_numpy(np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), -1)).float()
    truth = inside(shape, g).numpy()
    return float((occ & truth).sum() / max((occ | truth).sum(), 1))


def true_surface(shape: str, resolution: int = 160, bound: float = 0.6):
    """The true shape's surface as a trimesh: marching cubes of its occupancy (scikit-image) on a
    resolution^3 grid over the box (within half a cell of the shape; cube edges slightly rounded)."""
    import trimesh
    from skimage.measure import marching_cubes

    axis = np.linspace(-bound, bound, resolution)
    g = torch.from_numpy(np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1)).float()
    occ = np.pad(inside(shape, g).numpy().astype(np.float32), 1)  # padded: closed where the shape meets the box
    verts, faces, _, _ = marching_cubes(occ, 0.5)
    return trimesh.Trimesh((verts - 1) * (axis[1] - axis[0]) - bound, faces)


def chamfer_distance(vertices: np.ndarray, faces: np.ndarray, shape: str, n: int = 5000, bound: float = 0.6,
                     seed: int = 0) -> float:
    """Symmetric mean point-to-surface distance (world units) between a mesh and the true surface: n
    area-uniform points on each, the distance of each to the other surface (trimesh.proximity, exact
    to the surface, so there is no sampling floor), (mean mesh->truth + mean truth->mesh) / 2."""
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces, process=False)
    truth = true_surface(shape, bound=bound)
    a, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
    b, _ = trimesh.sample.sample_surface(truth, n, seed=seed)
    to_truth = trimesh.proximity.closest_point(truth, a)[1]
    to_mesh = trimesh.proximity.closest_point(mesh, b)[1]
    return float((to_truth.mean() + to_mesh.mean()) / 2)
