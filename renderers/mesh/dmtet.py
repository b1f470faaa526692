"""DMTet geometry (Shen et al. 2021, "Deep Marching Tetrahedra"): a signed distance and a bounded
vertex offset on a tetrahedral grid, turned into a triangle mesh by marching tetrahedra. The mesh's
vertices are the SDF's zero crossings on the grid's edges, linear in the SDF values and the
(offset) grid vertices, so renders of the mesh give gradients to both.

Convention: sdf < 0 inside.
"""
from __future__ import annotations

import itertools

import torch
from torch import Tensor

TET_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def tet_grid(resolution: int) -> tuple[Tensor, Tensor]:
    """The cube [-1,1]^3 cut into resolution^3 cells of 6 tetrahedra each (Kuhn's triangulation:
    every tetrahedron runs from a cell's corner (0,0,0) to (1,1,1) along the axes in one order, so
    neighbouring cells share faces exactly). Returns vertices [(R+1)^3,3] and tetrahedra [6R^3,4]."""
    r = resolution
    axis = torch.linspace(-1.0, 1.0, r + 1)
    verts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    cell = torch.stack(torch.meshgrid(*(torch.arange(r),) * 3, indexing="ij"), -1).reshape(-1, 3)
    index = lambda p: (p[..., 0] * (r + 1) + p[..., 1]) * (r + 1) + p[..., 2]  # noqa: E731
    tets = []
    for order in itertools.permutations(range(3)):
        corner, path = cell.clone(), [index(cell)]
        for ax in order:
            corner = corner.clone()
            corner[:, ax] += 1
            path.append(index(corner))
        tets.append(torch.stack(path, 1))
    return verts, torch.cat(tets)


def _case_table() -> Tensor:
    """[16,2,3] for each inside pattern (bit i: vertex i inside) up to two triangles as local edge
    indices into TET_EDGES (-1: none), wound counter-clockwise seen from outside in a positively
    oriented tetrahedron (det[v1-v0, v2-v0, v3-v0] > 0); found once on a reference tetrahedron, so
    the winding never depends on (possibly degenerate) triangle shapes."""
    edge_id = {e: k for k, e in enumerate(TET_EDGES)}
    edge = lambda a, b: edge_id[(min(a, b), max(a, b))]  # noqa: E731
    ref = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    mid = torch.stack([(ref[a] + ref[b]) / 2 for a, b in TET_EDGES])
    table = torch.full((16, 2, 3), -1, dtype=torch.long)
    for case in range(16):
        inside = [i for i in range(4) if case >> i & 1]
        outside = [i for i in range(4) if not case >> i & 1]
        if len(inside) in (1, 3):
            lone, others = (inside[0], outside) if len(inside) == 1 else (outside[0], inside)
            tris = [[edge(lone, o) for o in others]]
        elif len(inside) == 2:
            (a, b), (c, d) = inside, outside
            ring = [edge(a, c), edge(a, d), edge(b, d), edge(b, c)]  # consecutive edges share a vertex
            tris = [ring[:3], [ring[0], ring[2], ring[3]]]
        else:
            continue
        out_dir = ref[outside].mean(0) - ref[inside].mean(0)
        for k, tri in enumerate(tris):
            p = mid[tri]
            if torch.dot(torch.linalg.cross(p[1] - p[0], p[2] - p[0]), out_dir) < 0:
                tri = [tri[0], tri[2], tri[1]]
            table[case, k] = torch.tensor(tri)
    return table


CASES = _case_table()


def marching_tets(verts: Tensor, sdf: Tensor, tets: Tensor) -> tuple[Tensor, Tensor]:
    """The zero level set of `sdf` [V] on the tetrahedral grid (vertices [V,3], tetrahedra [T,4]) as a
    mesh: vertices [M,3] (differentiable in verts and sdf) and triangles [F,3] wound counter-clockwise
    seen from outside (sdf > 0). Edges shared by tetrahedra give one vertex, so the mesh is connected
    where the surface is."""
    inside = sdf.detach() < 0
    occ = inside[tets]  # [T,4]
    n_in = occ.sum(1)
    keep = (n_in > 0) & (n_in < 4)
    tets, occ = tets[keep], occ[keep]
    if tets.shape[0] == 0:
        return verts.new_zeros(0, 3), torch.zeros(0, 3, dtype=torch.long, device=verts.device)
    local = torch.tensor(TET_EDGES, device=verts.device)  # [6,2]
    ends = tets[:, local]  # [T,6,2] global vertex ids per local edge
    crossing = occ[:, local[:, 0]] != occ[:, local[:, 1]]  # [T,6]
    edges = ends[crossing].sort(1).values  # [E',2]
    n = verts.shape[0]
    keys, inverse = torch.unique(edges[:, 0] * n + edges[:, 1], return_inverse=True)  # 1D keys: far faster than dim=0
    unique = torch.stack([keys // n, keys % n], 1)
    slot = torch.full(crossing.shape, -1, dtype=torch.long, device=verts.device)
    slot[crossing] = inverse
    a, b = unique[:, 0], unique[:, 1]
    sa, sb = sdf[a][:, None], sdf[b][:, None]
    points = (verts[a] * sb - verts[b] * sa) / (sb - sa)  # where the linear sdf along the edge is 0
    case = (occ.long() * (2 ** torch.arange(4, device=verts.device))).sum(1)
    tri_local = CASES.to(verts.device)[case]  # [T,2,3]
    has = tri_local[..., 0] >= 0
    faces = slot.gather(1, tri_local.clamp(min=0).reshape(-1, 6)).reshape(-1, 2, 3)[has]  # [F,3]
    # the table winds for positively oriented tetrahedra; the others (half of Kuhn's) are mirrored
    tv = verts.detach()[tets]
    negative = torch.linalg.det(tv[:, 1:] - tv[:, :1]) < 0
    flip = negative[:, None].expand(-1, 2)[has]
    faces = torch.where(flip[:, None], faces[:, [0, 2, 1]], faces)
    return points, faces


def grid_edges(resolution: int) -> Tensor:
    """[E,2] the edges of tet_grid(resolution), each once: in Kuhn's triangulation two vertices of a
    tetrahedron differ by a non-zero offset in {0,1}^3, so the edges are (p, p + o) for the 7 such o."""
    r = resolution + 1
    p = torch.stack(torch.meshgrid(*(torch.arange(r),) * 3, indexing="ij"), -1).reshape(-1, 3)
    index = lambda q: (q[..., 0] * r + q[..., 1]) * r + q[..., 2]  # noqa: E731
    out = []
    for o in itertools.product((0, 1), repeat=3):
        if any(o):
            q = p + torch.tensor(o)
            ok = (q < r).all(1)
            out.append(torch.stack([index(p[ok]), index(q[ok])], 1))
    return torch.cat(out)


def sdf_sign_loss(sdf: Tensor, edges: Tensor) -> Tensor:
    """DMTet's SDF regulariser on the grid's edges [E,2] (grid_edges): where the sign changes, binary
    cross-entropy of each end's sigmoid(sdf) against the other end's sign, so the zero crossings do
    not drift into spurious surfaces (Shen et al. 2021, Sec. 3.4; Magic3D uses it while refining)."""
    sa, sb = sdf[edges[:, 0]], sdf[edges[:, 1]]
    change = (sa > 0) != (sb > 0)
    if not change.any():
        return sdf.sum() * 0
    sa, sb = sa[change], sb[change]
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    return bce(sa, (sb > 0).to(sa)) + bce(sb, (sa > 0).to(sb))
