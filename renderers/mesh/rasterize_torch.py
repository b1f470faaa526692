"""A differentiable triangle-mesh rasteriser in pure PyTorch (the CPU twin of nvdiffrast's
rasterize / interpolate / antialias, Laine et al. 2020, "Modular Primitives for High-Performance
Differentiable Rendering").

Three steps, as in nvdiffrast:
- `rasterize`: which triangle each pixel sees is decided without gradients (candidate pixels from
  each triangle's projected bounding box, then a ray-triangle test, nearest hit wins); the seen
  triangle's barycentrics and ray distance are then recomputed with gradients (Moller-Trumbore),
  so attributes and depth are differentiable with respect to the vertices inside triangles.
- `interpolate`: vertex attributes [V,C] at each pixel from the barycentrics.
- `antialias`: where a silhouette edge passes between two neighbouring pixel centres, the pixel it
  cuts is blended with its neighbour in proportion to where the edge crosses (a 1D box filter along
  the pair); the crossing moves with the vertices, so silhouettes get gradients.

Pixel (i, j) is centred at (j + 0.5, i + 0.5) and its ray is `Cameras.rays`' (dream3d.kernel.cameras).
Triangles with a vertex behind the camera's near plane are skipped (not clipped).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dream3d.kernel.cameras import Cameras

NEAR = 1e-3  # camera-space depth below which a triangle is skipped
MAX_CANDIDATES = 4_000_000  # (triangle, pixel) pairs tested at a time, bounding memory


@dataclass
class Rasterized:
    """What a mesh render sees, for B cameras at H x W.

    face [B,H,W] index of the triangle seen at each pixel, -1 where none; bary [B,H,W,3]
    barycentric weights of its three vertices (perspective-correct, 0 where none) and distance
    [B,H,W] along the pixel's unit ray to the hit (0 where none), both differentiable with respect to
    the vertices; screen [B,V,2] the vertices in pixel coordinates (differentiable, for antialias)."""

    face: Tensor
    bary: Tensor
    distance: Tensor
    screen: Tensor

    @property
    def mask(self) -> Tensor:
        """[B,H,W] bool: pixels that see a triangle."""
        return self.face >= 0


def camera_space(verts: Tensor, cameras: Cameras, height: int, width: int) -> tuple[Tensor, Tensor]:
    """World vertices [V,3] -> camera-space points [B,V,3] (OpenCV axes) and the intrinsics [B,3,3]."""
    viewmats = cameras.viewmats().to(verts)
    cam = torch.einsum("bij,vj->bvi", viewmats[:, :3, :3], verts) + viewmats[:, None, :3, 3]
    return cam, cameras.intrinsics(height, width).to(verts)


def project(verts: Tensor, cameras: Cameras, height: int, width: int) -> tuple[Tensor, Tensor]:
    """World vertices [V,3] -> pixel coordinates [B,V,2] and camera-space depth [B,V] (OpenCV axes)."""
    cam, Ks = camera_space(verts, cameras, height, width)
    z = cam[..., 2]
    uv = torch.einsum("bij,bvj->bvi", Ks, cam / z.clamp(min=NEAR)[..., None])[..., :2]
    return uv, z


def ray_triangle(origins: Tensor, dirs: Tensor, v0: Tensor, v1: Tensor, v2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Moller-Trumbore for matching rows [N,3]: (u, v, t) with the hit at v0 + u (v1 - v0) + v (v2 - v0)
    = origin + t dir; rows whose ray is parallel to the triangle's plane get u = v = t = inf."""
    e1, e2 = v1 - v0, v2 - v0
    pvec = torch.linalg.cross(dirs, e2)
    det = (e1 * pvec).sum(-1)
    parallel = det.abs() < 1e-12
    inv = 1.0 / torch.where(parallel, torch.ones_like(det), det)
    tvec = origins - v0
    u = (tvec * pvec).sum(-1) * inv
    qvec = torch.linalg.cross(tvec, e1)
    v = (dirs * qvec).sum(-1) * inv
    t = (e2 * qvec).sum(-1) * inv
    inf = torch.full_like(u, float("inf"))
    return torch.where(parallel, inf, u), torch.where(parallel, inf, v), torch.where(parallel, inf, t)


@torch.no_grad()
def _visible_faces(verts: Tensor, faces: Tensor, uv: Tensor, z: Tensor, origins: Tensor, dirs: Tensor,
                   height: int, width: int) -> Tensor:
    """[B,H,W] index of the nearest triangle hit by each pixel's ray, -1 where none."""
    B = uv.shape[0]
    device = verts.device
    tri_uv, tri_z = uv[:, faces], z[:, faces]  # [B,F,3,2], [B,F,3]
    lo, hi = tri_uv.amin(2), tri_uv.amax(2)
    # pixel centres j + 0.5 inside [lo, hi]: j in [ceil(lo - 0.5), floor(hi - 0.5)]
    j0 = torch.ceil(lo[..., 0] - 0.5).clamp(min=0).long()
    j1 = torch.floor(hi[..., 0] - 0.5).clamp(max=width - 1).long()
    i0 = torch.ceil(lo[..., 1] - 0.5).clamp(min=0).long()
    i1 = torch.floor(hi[..., 1] - 0.5).clamp(max=height - 1).long()
    nx, ny = (j1 - j0 + 1).clamp(min=0), (i1 - i0 + 1).clamp(min=0)
    nx = torch.where((tri_z > NEAR).all(2), nx, torch.zeros_like(nx))
    count = (nx * ny).reshape(-1)  # [B*F]
    best_t = torch.full((B * height * width,), float("inf"), device=device, dtype=verts.dtype)
    best_face = torch.full((B * height * width,), -1, device=device, dtype=torch.long)
    pairs = torch.nonzero(count).squeeze(1)
    o_flat, d_flat = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    cum = torch.cumsum(count[pairs], 0)
    hits = []
    start = 0
    while start < pairs.numel():
        # the next run of (camera, triangle) pairs with at most MAX_CANDIDATES pixels between them
        base = cum[start - 1] if start > 0 else cum.new_zeros(())
        stop = max(int(torch.searchsorted(cum, base + MAX_CANDIDATES, right=True)), start + 1)
        sel = pairs[start:stop]
        n = count[sel]
        owner = torch.repeat_interleave(sel, n)
        offset = torch.arange(owner.numel(), device=device) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
        b, f = owner // faces.shape[0], owner % faces.shape[0]
        nx_o = nx.reshape(-1)[owner]
        i = i0.reshape(-1)[owner] + offset // nx_o
        j = j0.reshape(-1)[owner] + offset % nx_o
        pix = (b * height + i) * width + j
        tri = verts[faces[f]]
        u, v, t = ray_triangle(o_flat[pix], d_flat[pix], tri[:, 0], tri[:, 1], tri[:, 2])
        hit = (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        hits.append((pix[hit], t[hit], f[hit]))
        best_t.scatter_reduce_(0, pix[hit], t[hit], "amin")
        start = stop
    for pix, t, f in hits:  # the winners' ids: the largest index among equally near hits (deterministic)
        win = t == best_t[pix]
        best_face.scatter_reduce_(0, pix[win], f[win], "amax")
    return best_face.reshape(B, height, width)


def rasterize(verts: Tensor, faces: Tensor, cameras: Cameras, height: int, width: int) -> Rasterized:
    """Rasterise the mesh (world vertices [V,3], triangles [F,3] long) for B cameras; see Rasterized.
    Computes in the vertices' dtype and device."""
    cameras = cameras.to(verts.device)
    origins, dirs = cameras.rays(height, width)
    origins, dirs = origins.to(verts.dtype), dirs.to(verts.dtype)
    uv, z = project(verts, cameras, height, width)
    face = _visible_faces(verts.detach(), faces, uv.detach(), z.detach(), origins, dirs, height, width)
    B = len(cameras)
    bary = verts.new_zeros(B * height * width, 3)
    dist = verts.new_zeros(B * height * width)
    pix = torch.nonzero(face.reshape(-1) >= 0).squeeze(1)
    if pix.numel():
        tri = verts[faces[face.reshape(-1)[pix]]]  # [P,3,3] with gradients
        u, v, t = ray_triangle(origins.reshape(-1, 3)[pix], dirs.reshape(-1, 3)[pix], tri[:, 0], tri[:, 1], tri[:, 2])
        bary = bary.index_put((pix,), torch.stack([1 - u - v, u, v], -1))
        dist = dist.index_put((pix,), t)
    return Rasterized(face, bary.reshape(B, height, width, 3), dist.reshape(B, height, width), uv)


def interpolate(attr: Tensor, faces: Tensor, rast: Rasterized) -> Tensor:
    """Vertex attributes [V,C] at each pixel [B,H,W,C] (0 where no triangle is seen)."""
    face = rast.face.clamp(min=0)
    corner = attr[faces[face]]  # [B,H,W,3,C]
    return (rast.bary[..., None] * corner).sum(-2) * rast.mask[..., None]


MAX_HOPS = 64  # antialias: most triangles crossed between two pixel centres while looking for the silhouette (the
# walk stops early once every segment has ended; too few hops would lose the long walks, all with s > 1/2)


def face_neighbours(faces: Tensor) -> Tensor:
    """[F,3] the triangle across edge k (vertex k to k+1) of each triangle, -1 where none (a boundary)."""
    F = faces.shape[0]
    ends = torch.stack([faces, faces.roll(-1, 1)], -1)  # [F,3,2]
    n = int(faces.max()) + 1 if F else 1
    key = (ends.amin(-1) * n + ends.amax(-1)).reshape(-1)
    order = torch.argsort(key, stable=True)
    pair = torch.nonzero(key[order][:-1] == key[order][1:]).squeeze(1)
    a, b = order[pair], order[pair + 1]
    out = torch.full((3 * F,), -1, dtype=torch.long, device=faces.device)
    out[a], out[b] = b // 3, a // 3
    return out.reshape(F, 3)


def _edge_values(pts: Tensor, c: Tensor) -> Tensor:
    """Edge functions [N,3] of triangles [N,3,2] at points [N,2]: edge k from vertex k to k+1; a point is
    inside where all three have the sign of the triangle's signed area."""
    start, d = pts, pts.roll(-1, dims=1) - pts
    return d[..., 0] * (c[:, None, 1] - start[..., 1]) - d[..., 1] * (c[:, None, 0] - start[..., 0])


def _signed_area(pts: Tensor) -> Tensor:
    return ((pts[:, 1, 0] - pts[:, 0, 0]) * (pts[:, 2, 1] - pts[:, 0, 1])
            - (pts[:, 2, 0] - pts[:, 0, 0]) * (pts[:, 1, 1] - pts[:, 0, 1]))


@torch.no_grad()
def _silhouette_crossings(screen: Tensor, faces: Tensor, neighbours: Tensor, cam: Tensor, tri: Tensor, cp: Tensor,
                          cq: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For segments from pixel centres cp [N,2] (seeing triangle tri [N] in camera cam [N]) to cq [N,2]:
    walk across the triangles the segment passes through (the neighbour across each exit edge) until
    an exit edge is a silhouette: its neighbour is missing or faces the other way in the image
    (opposite signed area). Returns (found [N] bool, the triangle [N] and the edge index [N] of that
    silhouette). Segments that end inside a triangle of the surface, or need more than MAX_HOPS
    triangles, have none."""
    n = tri.shape[0]
    cur, s_in = tri.clone(), cp.new_zeros(n)
    facing = _signed_area(screen[cam[:, None], faces[tri]]).sign()
    found = torch.zeros(n, dtype=torch.bool, device=tri.device)
    edge = torch.zeros(n, dtype=torch.long, device=tri.device)
    active = torch.ones(n, dtype=torch.bool, device=tri.device)
    for _ in range(MAX_HOPS):
        idx = torch.nonzero(active).squeeze(1)
        if idx.numel() == 0:
            break
        pts = screen[cam[idx, None], faces[cur[idx]]]
        sign = _signed_area(pts).sign()[:, None]
        ep, eq = _edge_values(pts, cp[idx]), _edge_values(pts, cq[idx])
        leaving = sign * (eq - ep) < 0
        s = torch.where(leaving, ep / torch.where(leaving, ep - eq, torch.ones_like(ep)), torch.full_like(ep, float("inf")))
        s = torch.where(s >= s_in[idx, None] - 1e-9, s, torch.full_like(s, float("inf")))
        s_exit, k = s.min(1)
        inside_q = ~(s_exit <= 1)  # the segment ends in this triangle: no silhouette between the pixels
        nb = neighbours[cur[idx], k]
        nb_facing = torch.where(nb >= 0, _signed_area(screen[cam[idx, None], faces[nb.clamp(min=0)]]).sign(),
                                torch.zeros_like(s_exit))
        silhouette = ~inside_q & ((nb < 0) | (nb_facing != facing[idx]))
        found[idx[silhouette]] = True
        edge[idx[silhouette]] = k[silhouette]
        walk = ~inside_q & ~silhouette
        active[idx[~walk]] = False
        cur[idx[walk]] = nb[walk]
        s_in[idx[walk]] = s_exit[walk]
    return found, cur, edge


def antialias(image: Tensor, faces: Tensor, rast: Rasterized) -> Tensor:
    """Blend [B,H,W,C] across silhouette edges (nvdiffrast's antialias, Laine et al. 2020).

    For each pair of horizontal (vertical) neighbours that see different triangles, the segment from the
    nearer pixel's centre to the other's is followed across the nearer surface's triangles to the first
    silhouette edge it crosses (_silhouette_crossings; an edge whose other side is missing or faces
    away), which must be mostly vertical (horizontal). It crosses at fraction s from the nearer pixel
    (s = E_p / (E_p - E_q) for the edge function E). The pixel the edge cuts takes the other's colour in
    proportion to the part of it on the other side: nearer pixel + (1/2 - s) (other - nearer) when
    s < 1/2, other pixel + (s - 1/2) (nearer - other) when s > 1/2. s depends on the edge's projected
    vertices, so moving a silhouette changes the image continuously. Edges inside the surface (between
    triangles facing the same way) blend nothing."""
    B, H, W, C = image.shape
    flat = image.reshape(-1, C)
    out = flat
    if faces.shape[0] == 0:
        return image
    depth = torch.where(rast.mask, rast.distance.detach(), torch.full_like(rast.distance, float("inf"))).reshape(-1)
    face = rast.face.reshape(-1)
    idx = torch.arange(B * H * W, device=image.device).reshape(B, H, W)
    neighbours = face_neighbours(faces)
    screen = rast.screen.detach()
    for horizontal in (True, False):
        a = (idx[:, :, :-1] if horizontal else idx[:, :-1, :]).reshape(-1)
        b = (idx[:, :, 1:] if horizontal else idx[:, 1:, :]).reshape(-1)
        keep = face[a] != face[b]
        a, b = a[keep], b[keep]
        a_front = depth[a] <= depth[b]
        p, q = torch.where(a_front, a, b), torch.where(a_front, b, a)
        seen = face[p] >= 0
        p, q = p[seen], q[seen]
        if p.numel() == 0:
            continue
        cam = p // (H * W)
        centre = lambda k: torch.stack([(k % W).to(image.dtype) + 0.5, ((k // W) % H).to(image.dtype) + 0.5], -1)  # noqa: E731
        cp, cq = centre(p), centre(q)
        found, tri, k = _silhouette_crossings(screen, faces, neighbours, cam, face[p], cp, cq)
        e0 = faces[tri, k]
        e1 = faces[tri, (k + 1) % 3]
        d = screen[cam, e1] - screen[cam, e0]
        steep = d[:, 1].abs() >= d[:, 0].abs() if horizontal else d[:, 1].abs() < d[:, 0].abs()
        ok = found & steep
        p, q, cam, e0, e1, cp, cq = p[ok], q[ok], cam[ok], e0[ok], e1[ok], cp[ok], cq[ok]
        start, end = rast.screen[cam, e0], rast.screen[cam, e1]  # differentiable
        dd = end - start
        ep = dd[:, 0] * (cp[:, 1] - start[:, 1]) - dd[:, 1] * (cp[:, 0] - start[:, 0])
        eq = dd[:, 0] * (cq[:, 1] - start[:, 1]) - dd[:, 1] * (cq[:, 0] - start[:, 0])
        s = ep / (ep - eq)
        cut_p = s < 0.5
        target = torch.where(cut_p, p, q)
        weight = torch.where(cut_p, 0.5 - s, s - 0.5)
        delta = weight[:, None] * (flat[torch.where(cut_p, q, p)] - flat[target])
        out = out.index_add(0, target, delta)
    return out.reshape(B, H, W, C)
