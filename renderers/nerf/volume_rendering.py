"""Batched volume rendering along rays with stratified samples inside the scene box.

Weights come from nerfacc's `render_weight_from_density` and colours from
`accumulate_along_rays` (both run on CPU tensors for batched [R,S] inputs).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from nerfacc import accumulate_along_rays, render_weight_from_density
from torch import Tensor


def ray_aabb(origins: Tensor, dirs: Tensor, bound: float) -> tuple[Tensor, Tensor, Tensor]:
    """Entry/exit distances [R] of rays with the box [-bound, bound]^3 and a hit mask [R]."""
    inv = 1.0 / torch.where(dirs.abs() > 1e-9, dirs, torch.full_like(dirs, 1e-9))
    ta, tb = (-bound - origins) * inv, (bound - origins) * inv
    near = torch.minimum(ta, tb).max(-1).values.clamp(min=0)
    far = torch.maximum(ta, tb).min(-1).values
    return near, far, far > near


def stratified_samples(near: Tensor, far: Tensor, n: int, perturb: bool,
                       generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Interval starts and ends [R,n] splitting [near, far] evenly, jittered when perturb."""
    u = torch.rand(near.shape[0], n, generator=generator) if perturb else torch.full((near.shape[0], n), 0.5)
    edges = torch.linspace(0, 1, n + 1)
    t0 = near[:, None] + (far - near)[:, None] * edges[None, :-1]
    dt = (far - near)[:, None] / n
    mid = t0 + u * dt
    starts = torch.cat([t0[:, :1], (mid[:, :-1] + mid[:, 1:]) / 2], -1)
    ends = torch.cat([(mid[:, :-1] + mid[:, 1:]) / 2, t0[:, -1:] + dt], -1)
    return starts, ends


def render_rays(field: Callable[[Tensor], tuple[Tensor, Tensor]], origins: Tensor, dirs: Tensor, bound: float,
                num_samples: int, perturb: bool = True, generator: torch.Generator | None = None,
                occupied: Callable[[Tensor], Tensor] | None = None, segments: int = 4,
                min_transmittance: float = 1e-4) -> tuple[Tensor, Tensor, Tensor]:
    """Render rays [R,3] through `field(points [P,3]) -> (density [P], albedo [P,3])`.
    Returns rgb [R,3] (not yet composited), opacity [R,1], depth [R,1].

    With `occupied(points [P,3]) -> [P] bool` (an OccupancyGrid) the same samples are laid out,
    but the field is evaluated only at occupied ones, marching the rays in `segments` pieces and
    dropping rays whose transmittance fell below `min_transmittance` (early termination);
    skipped samples count as empty. The image equals the dense one up to what was skipped."""
    n = origins.shape[0]
    near, far, hit = ray_aabb(origins, dirs, bound)
    rgb, opacity, depth = torch.zeros(n, 3), torch.zeros(n, 1), torch.zeros(n, 1)
    if not hit.any():
        return rgb, opacity, depth
    o, d = origins[hit], dirs[hit]
    starts, ends = stratified_samples(near[hit], far[hit], num_samples, perturb, generator)
    mids = (starts + ends) / 2
    points = (o[:, None, :] + d[:, None, :] * mids[..., None]).clamp(-bound, bound)
    if occupied is None:
        sigma, albedo = field(points.reshape(-1, 3))
        sigma, albedo = sigma.reshape(starts.shape), albedo.reshape(*starts.shape, 3)
    else:
        sigma, albedo = _march_occupied(field, points, ends - starts, occupied, segments, min_transmittance)
    weights, _, _ = render_weight_from_density(starts, ends, sigma)
    rgb = rgb.index_put((hit,), accumulate_along_rays(weights, albedo))
    opacity = opacity.index_put((hit,), accumulate_along_rays(weights, None))
    depth = depth.index_put((hit,), accumulate_along_rays(weights, mids[..., None]))
    return rgb, opacity, depth


def _march_occupied(field, points: Tensor, deltas: Tensor, occupied, segments: int,
                    min_transmittance: float) -> tuple[Tensor, Tensor]:
    """Density [R,S] and albedo [R,S,3] with the field evaluated only at occupied samples of
    rays still visible (zeros elsewhere); points [R,S,3], deltas [R,S]."""
    r, s = deltas.shape
    keep = occupied(points.reshape(-1, 3)).reshape(r, s)
    max_depth = -float(np.log(min_transmittance))
    optical = torch.zeros(r)
    flat_idx, sigmas, albedos = [], [], []
    step = -(-s // segments)
    for lo in range(0, s, step):
        hi = min(s, lo + step)
        m = keep[:, lo:hi] & (optical < max_depth)[:, None]
        if not m.any():
            continue
        rows, cols = m.nonzero(as_tuple=True)
        cols = cols + lo
        sig, alb = field(points[rows, cols])
        optical = optical.index_add(0, rows, sig.detach() * deltas[rows, cols])
        flat_idx.append(rows * s + cols)
        sigmas.append(sig)
        albedos.append(alb)
    if not flat_idx:
        return torch.zeros(r, s), torch.zeros(r, s, 3)
    idx = torch.cat(flat_idx)
    sigma = torch.zeros(r * s, dtype=points.dtype).index_put((idx,), torch.cat(sigmas))
    albedo = torch.zeros(r * s, 3, dtype=points.dtype).index_put((idx,), torch.cat(albedos))
    return sigma.reshape(r, s), albedo.reshape(r, s, 3)
