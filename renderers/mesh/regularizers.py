"""Surface regularisers for mesh refinement, for a mesh of vertices [V,3] and triangles [F,3]: vertex
normals, normal consistency between neighbouring faces and uniform Laplacian smoothing (Magic3D, Fantasia3D
and threestudio use these), and the enclosed volume (ours: the least volume the views allow, in the spirit
of the opacity/sparsity penalties on NeRFs), in full or on the faces no training camera sees."""
from __future__ import annotations

import torch
from torch import Tensor


def face_normals(verts: Tensor, faces: Tensor, unit: bool = True) -> Tensor:
    """[F,3]: (v1 - v0) x (v2 - v0), unit length or (unit=False) twice the face's area long."""
    p = verts[faces]
    n = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    return torch.nn.functional.normalize(n, dim=-1) if unit else n


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """[V,3] unit normals: the area-weighted sum of the normals of the faces around each vertex."""
    n = face_normals(verts, faces, unit=False)
    out = torch.zeros_like(verts).index_add(0, faces.reshape(-1), n.repeat_interleave(3, 0))
    return torch.nn.functional.normalize(out, dim=-1)


def _edge_keys(faces: Tensor) -> Tensor:
    """[3F] one integer per (undirected) edge of each face: min * n + max for n = 1 + largest index."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(1).values
    n = int(faces.max()) + 1 if faces.numel() else 1
    return edges[:, 0] * n + edges[:, 1]


def _edge_faces(faces: Tensor) -> Tensor:
    """[K,2] pairs of faces that share an edge (edges with exactly two faces)."""
    owner = torch.arange(faces.shape[0], device=faces.device).repeat(3)
    _, inverse, counts = torch.unique(_edge_keys(faces), return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)
    sorted_inv = inverse[order]
    first = torch.ones_like(sorted_inv, dtype=torch.bool)
    first[1:] = sorted_inv[1:] != sorted_inv[:-1]
    start = torch.nonzero(first).squeeze(1)
    two = counts[sorted_inv[start]] == 2
    a = order[start[two]]
    return torch.stack([owner[a], owner[order[start[two] + 1]]], 1)


def normal_consistency(verts: Tensor, faces: Tensor) -> Tensor:
    """Mean of 1 - cos(angle between the normals of two faces sharing an edge): 0 for a plane."""
    pairs = _edge_faces(faces)
    if pairs.shape[0] == 0:
        return verts.sum() * 0
    n = face_normals(verts, faces)
    return (1 - (n[pairs[:, 0]] * n[pairs[:, 1]]).sum(-1)).mean()


def laplacian_loss(verts: Tensor, faces: Tensor) -> Tensor:
    """Mean squared distance of each vertex from the mean of its neighbours (uniform weights)."""
    n = int(faces.max()) + 1 if faces.numel() else 1
    keys = _edge_keys(faces).unique()
    a, b = keys // n, keys % n
    i, j = torch.cat([a, b]), torch.cat([b, a])
    total = torch.zeros_like(verts).index_add(0, i, verts[j])
    ones = torch.ones_like(i, dtype=verts.dtype)
    degree = torch.zeros(verts.shape[0], device=verts.device, dtype=verts.dtype).index_add(0, i, ones)
    used = degree > 0
    mean = total[used] / degree[used, None]
    return ((verts[used] - mean) ** 2).sum(-1).mean()


def enclosed_volume(verts: Tensor, faces: Tensor) -> Tensor:
    """Signed volume enclosed by a closed, outward-wound mesh: sum over faces of v0 . (v1 x v2) / 6
    (the divergence theorem), positive for outward normals. On an open mesh (a DMTet surface cut by the grid's
    boundary) it depends on where the origin is."""
    p = verts[faces]
    return (p[:, 0] * torch.linalg.cross(p[:, 1], p[:, 2])).sum() / 6


def hidden_faces(verts: Tensor, faces: Tensor, elevation_range: tuple[float, float], angle: float) -> Tensor:
    """[F] bool: faces whose normal is more than `angle` degrees from every view direction of cameras at elevations
    within `elevation_range` (degrees, y up) and any azimuth, taken as far away: the normal's elevation lies more
    than `angle` below the range's low end or above its high end (a flat underside seen from -10 to 45 degrees is
    80 degrees from the nearest view)."""
    n = face_normals(verts.detach(), faces)
    elevation = torch.rad2deg(torch.asin(n[:, 1].clamp(-1, 1)))
    lo, hi = elevation_range
    return (elevation < lo - angle) | (elevation > hi + angle)


def hidden_volume(verts: Tensor, faces: Tensor, hidden: Tensor) -> Tensor:
    """A loss whose gradient is the enclosed volume's restricted to the `hidden` faces [F]: each such face is pushed
    inward along its normal in proportion to its area (d volume = sum over faces of area * normal . mean vertex
    displacement), the rest feel nothing. Its value is not a volume; only its gradient means something."""
    p = verts[faces]
    n2 = face_normals(verts, faces, unit=False).detach()  # [F,3] twice the area along the unit normal
    return (hidden.to(verts.dtype) * (n2 * p.mean(1)).sum(-1)).sum() / 2


def hidden_area(verts: Tensor, faces: Tensor, hidden: Tensor) -> Tensor:
    """The summed area of the `hidden` faces [F] (world units^2). Its gradient is the mean-curvature flow of that
    part of the surface: a bulge or a dent costs area, so its least-area shape is the flat one spanning the rim
    the views hold."""
    return hidden.to(verts.dtype) @ face_normals(verts, faces, unit=False).norm(dim=-1) / 2
