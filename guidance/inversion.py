"""Deterministic DDIM (eta 0) steps and inversion, shared by ISM, TSM, CSM and CDS.

A DDIM step from timestep u to v (either direction) keeps the predicted noise:
x_v = a_v * x0hat(x_u, u) + s_v * eps(x_u, u) (Song et al. 2021; inversion: v > u).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from dream3d.cameras import Cameras
from guidance.core import predict_batched
from guidance.priors.base import DiffusionPrior


def ddim_step(prior: DiffusionPrior, x_u: Tensor, u: Tensor, v: Tensor, eps: Tensor) -> Tensor:
    """x_v from x_u [B,...] and its noise prediction eps; u, v integer timesteps [B]."""
    return prior.add_noise(prior.x0_from_eps(x_u, u, eps), v, eps)


def ddim_invert(prior: DiffusionPrior, x: Tensor, target: Tensor, texts: list, cameras: Cameras,
                stride: int = 200, max_steps: int = 5) -> tuple[Tensor, Tensor]:
    """Invert a clean x [B,...] to timestep `target` [B] along the deterministic DDIM path.

    Uses n = min(max_steps, ceil(max(target) / stride)) steps u_i = round(target * i / n), one
    prior call each. Returns (x_target, the noise prediction made at the last visited timestep).
    """
    n = max(1, min(max_steps, math.ceil(int(target.max()) / stride)))
    x_u, u = x, torch.zeros_like(target)
    eps = torch.zeros_like(x)
    for i in range(1, n + 1):
        v = torch.round(target.float() * i / n).long()
        (eps,) = predict_batched(prior, [(x_u, u, texts)], cameras)
        x_u, u = ddim_step(prior, x_u, u, v, eps), v
    return x_u, eps
