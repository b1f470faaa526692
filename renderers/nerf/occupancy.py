"""Coarse occupancy grid for empty-space skipping on the CPU (the torch twin of nerfacc's
OccGridEstimator): per cell an exponential moving maximum of the field's density at random
points in the cell; samples in cells below a threshold are not evaluated.

Kept in the scene's state dict, so resumed runs skip exactly the same samples.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class OccupancyGrid(nn.Module):
    """Occupancy of the box [-bound, bound]^3 on a res^3 grid.

    update(): density = max(decay * min(density, cap), sigma(random point in each cell)), nerfacc's
    rule with the stored value capped at `cap_factor` x threshold: the initial density blob
    (~e^10) would otherwise keep cells occupied for thousands of steps after the surface left
    them. A cell is occupied when its density exceeds `threshold`, dilated by one cell so that
    samples near a boundary are kept. Before the first update every cell counts as occupied."""

    def __init__(self, bound: float, resolution: int = 32, threshold: float = 0.5, decay: float = 0.5,
                 cap_factor: float = 100.0):
        super().__init__()
        self.bound, self.resolution, self.threshold, self.decay = bound, resolution, threshold, decay
        self.cap = cap_factor * max(threshold, 1e-6)
        self.register_buffer("density", torch.zeros(resolution, resolution, resolution))
        self.register_buffer("occupied", torch.ones(resolution, resolution, resolution, dtype=torch.bool))

    def cell_index(self, points: Tensor) -> Tensor:
        """Flat cell index [P] of points [P,3] (clamped to the box)."""
        r = self.resolution
        ijk = ((points + self.bound) / (2 * self.bound) * r).floor().long().clamp(0, r - 1)
        return (ijk[:, 0] * r + ijk[:, 1]) * r + ijk[:, 2]

    def __call__(self, points: Tensor) -> Tensor:
        """Whether each point [P,3] lies in an occupied cell, [P] bool."""
        return self.occupied.reshape(-1)[self.cell_index(points)]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "density" not in state_dict:  # a checkpoint from before occupancy grids: start all-occupied
            return
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def update(self, density_fn, generator: torch.Generator | None = None, chunk: int = 65536) -> None:
        """Refresh from `density_fn(points [P,3]) -> [P]` at one random point per cell."""
        r = self.resolution
        idx = torch.stack(torch.meshgrid(*[torch.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3)
        points = (idx + torch.rand(idx.shape, generator=generator)) / r * 2 * self.bound - self.bound
        points = points.to(self.density.device)
        sigma = torch.cat([density_fn(points[i:i + chunk]) for i in range(0, len(points), chunk)])
        self.density.copy_(torch.maximum(self.density.clamp(max=self.cap) * self.decay, sigma.reshape(r, r, r)))
        above = (self.density > self.threshold).float()[None, None]
        self.occupied.copy_(nn.functional.max_pool3d(above, 3, stride=1, padding=1)[0, 0] > 0)

    @property
    def occupied_fraction(self) -> float:
        return float(self.occupied.float().mean())
