"""Texture baking without OpenGL: xatlas UV unwrap, UV-space rasterisation in torch, colour
queries at the surface points, seam dilation.

UVs follow trimesh/OBJ (origin bottom-left, v up); image row 0 is the top (v = 1). trimesh's
glTF writer flips v for glTF's top-left convention.
"""
from __future__ import annotations

import numpy as np
import torch
import trimesh
import xatlas
from PIL import Image
from torch import Tensor

from dream3d.export.isosurface import scene_colors
from dream3d.kernel.timing import PhaseTimer
from renderers.base import Scene


def unwrap(vertices: np.ndarray, faces: np.ndarray, texture_size: int, padding: int = 4, texels_per_unit: float = 0.0,
           min_size: int = 64):
    """xatlas charts packed into a square atlas with `padding` texels between charts.
    texels_per_unit 0: the atlas is texture_size². Otherwise the charts are packed at that scale
    (texels per world unit) and the atlas is the smallest power of two (>= min_size) that holds
    them, at most texture_size (beyond it the scale shrinks to fit). Returns (vmapping [V'] index of
    each new vertex in the input, faces [F,3] into the new vertices, uv [V',2] in [0,1], the atlas
    side in texels); vertices are split along chart seams."""
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(faces, np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = 0 if texels_per_unit > 0 else texture_size
    pack.texels_per_unit = texels_per_unit
    pack.padding = padding
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    vmapping, new_faces, uv = atlas[0]
    uv = uv.astype(np.float64)
    size = texture_size
    if texels_per_unit > 0:  # a w x h atlas: place it in the corner of the smallest square that holds it
        extent = max(atlas.width, atlas.height)
        size = int(min(texture_size, max(min_size, 2 ** int(np.ceil(np.log2(max(extent, 1)))))))
        uv = uv * np.array([atlas.width, atlas.height]) / max(extent, size)
    return vmapping.astype(np.int64), new_faces.astype(np.int64), uv, size


def _edge(u: Tensor, v: Tensor, p: Tensor) -> Tensor:
    """Twice the signed area of the triangles (u, v, p), [N]."""
    return (v[:, 0] - u[:, 0]) * (p[:, 1] - u[:, 1]) - (v[:, 1] - u[:, 1]) * (p[:, 0] - u[:, 0])


def rasterize_uv(uv: Tensor, faces: Tensor, size: int, margin: int = 0,
                 max_candidates: int = 1 << 22) -> tuple[Tensor, Tensor]:
    """Which triangle covers each texel centre of a size² image, and where.

    uv [V,2] in [0,1] (v up), faces [F,3]. Returns face index [S,S] (-1 where no triangle) and
    barycentric weights [S,S,3]. Texels up to `margin` texels outside every triangle are given
    the closest point of the nearest one (so seams are padded with the surface's own colours
    rather than smeared ones). Each triangle's texel bounding box (grown by the margin) is
    enumerated and tested with edge functions, in chunks of at most `max_candidates` texels."""
    px = torch.stack([uv[:, 0] * size, (1 - uv[:, 1]) * size], -1).double()  # texel (r, c) centre = (c+.5, r+.5)
    tri = px[faces]  # [F,3,2]
    lo = (tri.min(1).values - 0.5 - margin).ceil().clamp(0, size - 1).long()
    hi = (tri.max(1).values - 0.5 + margin).floor().clamp(0, size - 1).long()
    w, h = (hi - lo + 1).clamp(min=0).unbind(-1)
    count = w * h
    a, b, c = tri.unbind(1)
    area = _edge(a, b, c)
    best = torch.full((size * size,), float("inf"), dtype=torch.float64)
    face_id = torch.full((size * size,), -1, dtype=torch.long)
    bary = torch.zeros(size * size, 3, dtype=torch.float64)
    ends = torch.cumsum(count, 0)
    start = 0
    while start < len(faces):
        base = int(ends[start - 1]) if start else 0
        stop = max(int(torch.searchsorted(ends, base + max_candidates, right=True)), start + 1)
        n = count[start:stop]
        f = torch.arange(start, stop).repeat_interleave(n)
        k = torch.arange(len(f)) - (torch.cumsum(n, 0) - n).repeat_interleave(n)
        col, row = lo[f, 0] + k % w[f], lo[f, 1] + k // w[f]
        p = torch.stack([col + 0.5, row + 0.5], -1).double()

        s = area[f]
        wts = torch.stack([_edge(b[f], c[f], p), _edge(c[f], a[f], p), _edge(a[f], b[f], p)], -1) / s[:, None]
        inside = (wts >= -1e-9).all(-1)
        dist = torch.where(inside, 0.0, float("inf")).double()
        if margin > 0 and not inside.all():  # outside: the closest point of the triangle's three edges
            corners = (a[f], b[f], c[f])
            for i, j in ((1, 2), (2, 0), (0, 1)):
                u, e = corners[i], corners[j] - corners[i]
                t = (((p - u) * e).sum(-1) / (e * e).sum(-1).clamp(min=1e-12)).clamp(0, 1)
                d = (p - u - t[:, None] * e).norm(dim=-1)
                closer = ~inside & (d < dist)
                dist = torch.where(closer, d, dist)
                on_edge = torch.zeros(len(f), 3, dtype=torch.float64)
                on_edge[:, i], on_edge[:, j] = 1 - t, t
                wts = torch.where(closer[:, None], on_edge, wts)
        ok = (s.abs() > 1e-12) & (dist <= margin)
        texel = (row * size + col)[ok]
        dist, f, wts = dist[ok], f[ok], wts[ok]
        before = best[texel]
        best.scatter_reduce_(0, texel, dist, "amin")
        # one winner per texel whatever the thread count (index_put with duplicate indices is
        # not ordered): the nearest triangle, ties to the lowest face index
        win = (dist <= best[texel]) & (dist < before)
        lowest = torch.full_like(face_id, len(faces)).scatter_reduce_(0, texel[win], f[win], "amin")
        win &= f == lowest[texel]
        face_id[texel[win]] = f[win]
        bary[texel[win]] = wts[win]
        start = stop
    return face_id.reshape(size, size), bary.reshape(size, size, 3)


def dilate(image: Tensor, mask: Tensor, iterations: int) -> tuple[Tensor, Tensor]:
    """Grow covered texels into their empty neighbours (3x3 mean of covered ones), `iterations`
    times, so bilinear filtering and mip-maps at chart seams never mix in background.
    image [C,S,S], mask [S,S] bool; returns both grown."""
    img, m = image.clone(), mask.clone().float()
    ones = torch.ones(1, 1, 3, 3, dtype=img.dtype)
    for _ in range(iterations):
        total = torch.nn.functional.conv2d((img * m)[:, None], ones, padding=1)[:, 0]
        n = torch.nn.functional.conv2d(m[None, None], ones.to(m.dtype), padding=1)[0, 0]
        grow = (n > 0) & (m == 0)
        if not grow.any():
            break
        img = torch.where(grow, total / n.clamp(min=1), img)
        m = torch.where(grow, torch.ones_like(m), m)
    return img, m.bool()


def bake_texture(scene: Scene, mesh: trimesh.Trimesh, texture_size: int, padding: int = 4,
                 texels_per_unit: float = 0.0, timer: PhaseTimer | None = None) -> trimesh.Trimesh:
    """A copy of `mesh` with xatlas UVs and a base-colour texture baked from the scene's albedo
    at the surface point of every covered texel (glTF metallic-roughness material, metallic 0,
    roughness 1). Normals come from the welded mesh, so seams do not show in shading. The texture
    is texture_size² or, with texels_per_unit > 0, the smallest power of two that holds the surface
    at that density (see unwrap). `timer` records the seconds of the phases uv (xatlas) and bake."""
    timer = timer or PhaseTimer()
    with timer("uv"):
        vmapping, faces, uv, texture_size = unwrap(mesh.vertices, mesh.faces, texture_size, padding, texels_per_unit)
    with timer("bake"):
        return _bake(scene, mesh, texture_size, padding, vmapping, faces, uv)


def _bake(scene: Scene, mesh: trimesh.Trimesh, texture_size: int, padding: int, vmapping: np.ndarray,
          faces: np.ndarray, uv: np.ndarray) -> trimesh.Trimesh:
    vertices = mesh.vertices[vmapping]
    face_id, bary = rasterize_uv(torch.from_numpy(uv), torch.from_numpy(faces), texture_size, margin=padding // 2)
    covered = face_id >= 0
    corners = torch.from_numpy(vertices)[torch.from_numpy(faces)[face_id[covered]]]  # [N,3,3]
    points = (bary[covered][:, :, None] * corners).sum(1)
    image = torch.zeros(3, texture_size, texture_size)
    rgb = scene_colors(scene, points)
    image[:, covered] = rgb.T
    image, filled = dilate(image, covered, 2 * padding)
    image[:, ~filled] = rgb.mean(0)[:, None] if len(rgb) else 0.5
    pil = Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8))
    material = trimesh.visual.material.PBRMaterial(name="dream3d", baseColorTexture=pil, metallicFactor=0.0,
                                                    roughnessFactor=1.0)
    out = trimesh.Trimesh(vertices, faces, visual=trimesh.visual.TextureVisuals(uv=uv, material=material), process=False)
    out.vertex_normals = mesh.vertex_normals[vmapping]
    return out
