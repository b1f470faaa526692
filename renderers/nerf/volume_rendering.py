"""Batched volume rendering along rays with stratified samples inside the scene box.

Weights come from nerfacc's `render_weight_from_density` and colours from
`accumulate_along_rays` (both run on CPU tensors for batched [R,S] inputs).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch
from nerfacc import accumulate_along_rays, render_weight_from_density
from torch import Tensor

from dream3d.kernel.rays import ray_aabb, stratified_samples


class RayOutput(NamedTuple):
    """Per ray: rgb [R,3] (not yet composited), opacity [R,1], depth [R,1]; with normals also the
    opacity-weighted normal [R,3] and the orientation penalty [R] (Ref-NeRF/DreamFusion:
    sum_i stopgrad(w_i) max(0, n_i . d)^2, normals that face away from the camera)."""

    rgb: Tensor
    opacity: Tensor
    depth: Tensor
    normal: Tensor | None = None
    orientation: Tensor | None = None


def render_rays(field: Callable[[Tensor], tuple[Tensor, ...]], origins: Tensor, dirs: Tensor, bound: float,
                num_samples: int, perturb: bool = True, generator: torch.Generator | None = None,
                occupied: Callable[[Tensor], Tensor] | None = None, segments: int = 4,
                min_transmittance: float = 1e-4) -> RayOutput:
    """Render rays [R,3] through `field(points [P,3]) -> (density [P], albedo [P,3])` or
    `(density, albedo, normal [P,3])` (renderers.nerf.normals.with_normals).

    With `occupied(points [P,3]) -> [P] bool` (an OccupancyGrid) the same samples are laid out,
    but the field is evaluated only at occupied ones, marching the rays in `segments` pieces and
    dropping rays whose transmittance fell below `min_transmittance` (early termination);
    skipped samples count as empty. The image equals the dense one up to what was skipped."""
    n = origins.shape[0]
    near, far, hit = ray_aabb(origins, dirs, bound)
    if not hit.any():
        with torch.no_grad():
            probe = field(origins.new_zeros(1, 3))  # how many outputs (normals or not), at one point
        out = RayOutput(origins.new_zeros(n, 3), origins.new_zeros(n, 1), origins.new_zeros(n, 1))
        return out._replace(normal=origins.new_zeros(n, 3), orientation=origins.new_zeros(n)) if len(probe) == 3 else out
    o, d = origins[hit], dirs[hit]
    starts, ends = stratified_samples(near[hit], far[hit], num_samples, perturb, generator)
    mids = (starts + ends) / 2
    points = (o[:, None, :] + d[:, None, :] * mids[..., None]).clamp(-bound, bound)
    if occupied is None:
        sigma, *rest = field(points.reshape(-1, 3))
        sigma, feats = sigma.reshape(starts.shape), torch.cat(rest, -1).reshape(*starts.shape, -1)
    else:
        sigma, feats = march_occupied(field, points, ends - starts, occupied, segments, min_transmittance)
    weights, _, _ = render_weight_from_density(starts, ends, sigma)

    def accumulate(w: Tensor, values: Tensor | None) -> Tensor:  # zeros for rays that miss the box
        out = accumulate_along_rays(w, values)
        return out.new_zeros(n, out.shape[-1]).index_put((hit,), out)

    return composite(accumulate, weights, feats, mids[..., None], d[:, None, :])


def composite(accumulate: Callable[[Tensor, Tensor | None], Tensor], weights: Tensor, feats: Tensor,
              depths: Tensor, dirs: Tensor) -> RayOutput:
    """Per-ray outputs from per-sample weights, features (albedo [..,3], then normals [..,3] if
    any), depths [..,1] and ray directions (broadcastable to the normals); `accumulate(weights,
    values)` sums samples into rays [R,C] (batched [R,S] or nerfacc's packed layout)."""
    rgb, opacity, depth = accumulate(weights, feats[..., :3]), accumulate(weights, None), accumulate(weights, depths)
    if feats.shape[-1] == 3:
        return RayOutput(rgb, opacity, depth)
    normals = feats[..., 3:6]
    facing_away = (normals * dirs).sum(-1, keepdim=True).clamp(min=0) ** 2
    return RayOutput(rgb, opacity, depth, accumulate(weights, normals),
                     accumulate(weights.detach(), facing_away)[:, 0])


def march_occupied(field, points: Tensor, deltas: Tensor, occupied, segments: int,
                   min_transmittance: float) -> tuple[Tensor, Tensor]:
    """Density [R,S] and the other outputs concatenated [R,S,C] with the field evaluated only at
    occupied samples of rays still visible (zeros elsewhere); points [R,S,3], deltas [R,S]. The rays
    are marched in `segments` pieces; a ray stops after the piece in which its transmittance fell
    below `min_transmittance`. Also the exporter's march (dream3d.export.isosurface)."""
    r, s = deltas.shape
    keep = occupied(points.reshape(-1, 3)).reshape(r, s)
    max_depth = -float(np.log(min_transmittance)) if min_transmittance > 0 else float("inf")  # 0: never stop
    optical = points.new_zeros(r)
    flat_idx, sigmas, feats = [], [], []
    step = -(-s // segments)
    for lo in range(0, s, step):
        hi = min(s, lo + step)
        m = keep[:, lo:hi] & (optical < max_depth)[:, None]
        if not m.any():
            continue
        rows, cols = m.nonzero(as_tuple=True)
        cols = cols + lo
        sig, *rest = field(points[rows, cols])
        optical = optical.index_add(0, rows, sig.detach() * deltas[rows, cols])
        flat_idx.append(rows * s + cols)
        sigmas.append(sig)
        feats.append(torch.cat(rest, -1))
    if not flat_idx:
        with torch.no_grad():
            channels = sum(t.shape[-1] for t in field(points[:1, 0])[1:])
        return points.new_zeros(r, s), points.new_zeros(r, s, channels)
    idx = torch.cat(flat_idx)
    feat = torch.cat(feats)
    sigma = points.new_zeros(r * s).index_put((idx,), torch.cat(sigmas))
    feat = points.new_zeros(r * s, feat.shape[-1]).index_put((idx,), feat)
    return sigma.reshape(r, s), feat.reshape(r, s, -1)
