"""Batched volume rendering along rays with stratified samples inside the scene box.

Weights come from nerfacc's `render_weight_from_density` and colours from
`accumulate_along_rays` (both run on CPU tensors for batched [R,S] inputs).
"""
from __future__ import annotations

from typing import Callable

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
                num_samples: int, perturb: bool = True, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Render rays [R,3] through `field(points [P,3]) -> (density [P], albedo [P,3])`.
    Returns rgb [R,3] (not yet composited), opacity [R,1], depth [R,1]."""
    n = origins.shape[0]
    near, far, hit = ray_aabb(origins, dirs, bound)
    rgb, opacity, depth = torch.zeros(n, 3), torch.zeros(n, 1), torch.zeros(n, 1)
    if not hit.any():
        return rgb, opacity, depth
    o, d = origins[hit], dirs[hit]
    starts, ends = stratified_samples(near[hit], far[hit], num_samples, perturb, generator)
    mids = (starts + ends) / 2
    points = (o[:, None, :] + d[:, None, :] * mids[..., None]).clamp(-bound, bound)
    sigma, albedo = field(points.reshape(-1, 3))
    weights, _, _ = render_weight_from_density(starts, ends, sigma.reshape(starts.shape))
    rgb = rgb.index_put((hit,), accumulate_along_rays(weights, albedo.reshape(*starts.shape, 3)))
    opacity = opacity.index_put((hit,), accumulate_along_rays(weights, None))
    depth = depth.index_put((hit,), accumulate_along_rays(weights, mids[..., None]))
    return rgb, opacity, depth
