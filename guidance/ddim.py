"""Deterministic DDIM (eta 0): one step between any two timesteps (ISM, TSM, CDS), the inversion
of a clean x to a timestep (ISM, TSM, CSM) and the sampler from pure noise (f-div's teacher bank).

A DDIM step from timestep u to v (either direction) keeps the predicted noise:
x_v = a_v * x0hat(x_u, u) + s_v * eps(x_u, u) (Song et al. 2021; inversion: v > u).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from dream3d.kernel import draws
from dream3d.kernel.cameras import Cameras
from guidance.core import predict_batched
from guidance.priors.base import DiffusionPrior


def ddim_step(prior: DiffusionPrior, x_u: Tensor, u: Tensor, v: Tensor, eps: Tensor) -> Tensor:
    """x_v [B,...] from x_u [B,...] and its noise prediction eps; u, v integer timesteps [B]."""
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


@torch.no_grad()
def ddim_sample(prior: DiffusionPrior, shape: tuple[int, ...], text: Sequence[Any] | None, cameras: Cameras | None = None,
                steps: int = 50, generator: torch.Generator | None = None,
                eps_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
                device: torch.device | str | None = None) -> Tensor:
    """x_0 [shape] on `device` by DDIM from pure noise at t = T-1 down to t = 0 in `steps` prior
    calls. `eps_fn(x_t, t)` overrides the plain conditional prediction (e.g. for CFG)."""
    eps_fn = eps_fn or (lambda x, t: prior.predict_eps(x, t, text, cameras))
    n = shape[0]
    ts = torch.linspace(prior.num_timesteps - 1, 0, steps, device=device).round().long()
    x = draws.randn(shape, generator, device)
    for u, v in zip(ts[:-1], ts[1:]):
        ub = u.repeat(n)
        x = ddim_step(prior, x, ub, v.repeat(n), eps_fn(x, ub))
    t0 = ts[-1].repeat(n)
    return prior.x0_from_eps(x, t0, eps_fn(x, t0))
