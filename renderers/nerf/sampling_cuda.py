"""CUDA twin of the skipping sampler: nerfacc's OccGridEstimator marches packed samples through
the scene's OccupancyGrid (one occupancy state for both paths, so checkpoints move between CPU
and GPU), with early stopping at `min_transmittance`. Weights and accumulation are nerfacc's
packed `render_weight_from_density` / `accumulate_along_rays`.

Selected by NeRFScene when its field lives on a CUDA device; `render_rays` in
volume_rendering.py is the torch reference it is tested against (tests/test_nerf_cuda.py).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from dream3d.kernel import draws
from renderers.nerf.occupancy import OccupancyGrid
from renderers.nerf.volume_rendering import RayOutput, composite


def use_cuda(field: torch.nn.Module) -> bool:
    return torch.cuda.is_available() and next(field.parameters()).is_cuda


class NerfaccMarcher:
    """Packed ray marching on the GPU over an OccupancyGrid's cells."""

    def __init__(self, grid: OccupancyGrid):
        from nerfacc import OccGridEstimator

        b = grid.bound
        self.grid = grid
        self.estimator = OccGridEstimator([-b, -b, -b, b, b, b], resolution=grid.resolution, levels=1)
        self.estimator.to(grid.occupied.device)

    def render(self, field: Callable[[Tensor], tuple[Tensor, ...]], origins: Tensor, dirs: Tensor,
               num_samples: int, perturb: bool, min_transmittance: float,
               generator: torch.Generator | None = None) -> RayOutput:
        """Rays [R,3] on the GPU -> RayOutput, like `render_rays` with the same sample spacing
        (the box diagonal over `num_samples`). Stratified jitter (perturb) is one uniform offset of
        the first sample per ray, as nerfacc's `stratified=True` draws it, but from the run's
        `generator` (nerfacc would use the global CUDA generator, which the run does not control)."""
        from nerfacc import accumulate_along_rays, render_weight_from_density

        n = origins.shape[0]
        self.estimator.binaries.copy_(self.grid.occupied[None])  # nerfacc's [levels, x, y, z] layout
        step = 2 * math.sqrt(3) * self.grid.bound / num_samples

        def sigma_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor:
            t = (t_starts + t_ends)[:, None] / 2
            return field(origins[ray_indices] + dirs[ray_indices] * t)[0]

        with torch.no_grad():
            t_min = draws.rand((n,), generator, origins.device) * step if perturb else None
            ray_indices, t_starts, t_ends = self.estimator.sampling(
                origins, dirs, sigma_fn=sigma_fn, render_step_size=step, t_min=t_min, stratified=False,
                early_stop_eps=min_transmittance)
        mids = (t_starts + t_ends)[:, None] / 2
        sigma, *rest = field(origins[ray_indices] + dirs[ray_indices] * mids)
        weights, _, _ = render_weight_from_density(t_starts, t_ends, sigma, ray_indices=ray_indices, n_rays=n)
        return composite(lambda w, v: accumulate_along_rays(w, v, ray_indices, n), weights, torch.cat(rest, -1), mids,
                         dirs[ray_indices])
