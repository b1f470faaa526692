"""Asynchronous Score Distillation (Ma et al. 2024, ScaleDreamer).

The target is the prior's own conditional prediction at a later timestep with the same noise:
G = w(t) (eps_w(x_t, t, y) - eps(x_{t+D}, t + D, y)), D = floor(U * min(rho (t - t_min), T - 1 - t)).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dream3d.kernel.schema import bounded
from guidance.core import GuidanceConfig, ScoreDistillation, batch_stats, cfg_predict


@dataclass
class ASDConfig(GuidanceConfig):
    name: str = "asd"
    rho: float = bounded(0.1, 0.0, 10.0)


class ASD(ScoreDistillation):
    def gradient(self, x, cameras, cond, step, generator):
        t, noise, x_t = self.noised(x, step, generator)
        t_min, _ = self.timesteps.range(step)
        T = self.prior.num_timesteps
        span = torch.minimum(self.cfg.rho * (t - t_min).float(), (T - 1 - t).float())
        t_d = t + torch.floor(self.group_rand(t.shape[0], generator, t.device) * span).long()
        x_d = self.prior.add_noise(x, t_d, noise)
        # one call: cond and uncond at t, and the delayed conditional target at t + D
        eps_w, _, _, eps_d = cfg_predict(self.prior, x_t, t, cond, cameras, self.guidance_scale(step),
                                         extra=[(x_d, t_d, cond.cond(cameras))])
        return self.weight(t, x.ndim) * (eps_w - eps_d), batch_stats(t)
