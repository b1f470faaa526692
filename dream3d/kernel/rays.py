"""Rays through the scene box: where they enter and leave it, and samples between.

Used by the NeRF renderers and by the exporter (which marches the same rays to find the surface).
"""
from __future__ import annotations

import torch
from torch import Tensor

from dream3d.kernel import draws


def ray_aabb(origins: Tensor, dirs: Tensor, bound: float) -> tuple[Tensor, Tensor, Tensor]:
    """Entry/exit distances [R] of rays with the box [-bound, bound]^3 and a hit mask [R]."""
    return ray_box(origins, dirs, -bound, bound)


def ray_box(origins: Tensor, dirs: Tensor, lo: Tensor | float, hi: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
    """Entry/exit distances [R] of rays with the axis-aligned box [lo, hi] (corners [3] or scalars)
    and a hit mask [R]."""
    inv = 1.0 / torch.where(dirs.abs() > 1e-9, dirs, torch.full_like(dirs, 1e-9))
    ta, tb = (lo - origins) * inv, (hi - origins) * inv
    near = torch.minimum(ta, tb).max(-1).values.clamp(min=0)
    far = torch.maximum(ta, tb).min(-1).values
    return near, far, far > near


def stratified_samples(near: Tensor, far: Tensor, n: int, perturb: bool,
                       generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Interval starts and ends [R,n] splitting [near, far] evenly, jittered when perturb."""
    u = draws.rand((near.shape[0], n), generator, near.device) if perturb else near.new_full((near.shape[0], n), 0.5)
    edges = torch.linspace(0, 1, n + 1, device=near.device)
    t0 = near[:, None] + (far - near)[:, None] * edges[None, :-1]
    dt = (far - near)[:, None] / n
    mid = t0 + u * dt
    starts = torch.cat([t0[:, :1], (mid[:, :-1] + mid[:, 1:]) / 2], -1)
    ends = torch.cat([(mid[:, :-1] + mid[:, 1:]) / 2, t0[:, -1:] + dt], -1)
    return starts, ends
