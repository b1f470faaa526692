"""The Scene interface: a differentiable 3D representation that renders cameras."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dream3d.cameras import Cameras


@dataclass
class RenderOutput:
    """rgb [B,3,H,W] composited on the background, alpha [B,1,H,W], depth [B,1,H,W],
    normal [B,3,H,W] or None; meta: renderer-specific extras (Gaussians: what densification reads)."""

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    normal: Tensor | None = None
    meta: dict | None = None


class Scene(nn.Module):
    """What the trainer and exporters may ask of any scene."""

    def render(self, cameras: Cameras, height: int, width: int, generator: torch.Generator | None = None,
               train: bool = True) -> RenderOutput:
        raise NotImplementedError

    def optimizer_groups(self) -> list[dict]:
        """Parameter groups with their learning rates."""
        raise NotImplementedError

    def regularizers(self, out: RenderOutput, step: int) -> dict[str, Tensor]:
        """Extra weighted losses for this step (e.g. opacity sparsity)."""
        return {}

    def begin_step(self, step: int) -> None:
        """Called before each training step's render, and after a checkpoint is loaded, with the
        step about to run (schedules inside the scene: progressive grid levels, shading warm-up)."""

    def post_backward(self, step: int, out: RenderOutput, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Hook after backward, before the optimiser step (densify, occupancy updates); densification
        edits the optimiser's parameter groups in place."""

    def density(self, points: Tensor) -> Tensor:
        """Volume density [N] at world points [N,3]."""
        raise NotImplementedError

    def color(self, points: Tensor) -> Tensor:
        """Albedo [N,3] in [0,1] at world points [N,3]."""
        raise NotImplementedError

    @property
    def bound(self) -> float:
        """Half-side of the axis-aligned box [-bound, bound]^3 that holds the scene."""
        raise NotImplementedError
