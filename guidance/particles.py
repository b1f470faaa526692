"""Particles as a "scene": optimise vectors x [n,D] directly with a guidance against a
closed-form prior, the instrument for checking what each objective converges to."""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from dream3d.kernel.cameras import Cameras


def make_guidance(name: str, prior, total_steps: int = 1000, **overrides):
    """A registered guidance with its config defaults plus overrides (no view-dependent prompts), for
    a run of `total_steps` (schedules written in shares of the run resolve against it)."""
    from guidance import GUIDANCES, RunContext, build_guidance

    _, cfg_cls = GUIDANCES[name]
    cfg = dataclasses.replace(cfg_cls(), view_dependent_prompt=False, **overrides)
    cfg.validate()
    return build_guidance(cfg, prior, RunContext(total_steps))


def optimise_particles(guidance, x: Tensor, cameras: Cameras, steps: int, lr: float = 0.1, prompt: str = "y",
                       seed: int = 0) -> Tensor:
    """x <- x - lr * G for `steps` steps, with the guidance's own trainables (fake score,
    discriminator) stepped by Adam alongside; returns the final particles."""
    groups = guidance.optimizer_groups()
    opt = torch.optim.Adam(groups) if groups else None
    cond, gen = guidance.embed(prompt), torch.Generator().manual_seed(seed)
    n = x.shape[0]
    for step in range(steps):
        xr = x.clone().requires_grad_()
        out = guidance(xr, cameras, cond, step, gen)
        if opt:
            opt.zero_grad()
        (out.loss + sum(out.aux_losses.values())).backward()
        if opt:
            opt.step()
        x = x - lr * xr.grad * n  # the injection divides by the batch size
    return x.detach()
