"""Interval Score Matching (Liang et al. 2024, LucidDreamer) and Trajectory Score Matching
(Miao et al. 2024, Dreamer XL).

ISM: no fresh noise. x_s is the DDIM inversion of x (empty prompt, no CFG) to s = t - delta;
one more inversion step gives x_t; G = lambda_g w_ism(t) (eps_w(x_t, t, y) - eps(x_s, s, empty)).
TSM: from x_s, path A s -> t gives x_t; path B s -> mu -> t with mu = s + round((t - s) sqrt(1 - gamma^2));
the target is the prediction made at mu: G = lambda_g w_ism(t) (eps_w(x_t, t, y) - eps(x_mu, mu, empty)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from dream3d.kernel.schema import bounded, choice
from guidance.core import WEIGHTINGS, GuidanceConfig, ScoreDistillation, batch_stats, cfg_predict, predict_batched
from guidance.ddim import ddim_invert, ddim_step


@dataclass
class ISMConfig(GuidanceConfig):
    name: str = "ism"
    guidance_scale: Any = bounded(7.5, 0.0, 1000.0, schedule="run")
    weighting: str = choice("ism", WEIGHTINGS)
    loss_weight: float = bounded(0.1, 0.0, None)  # lambda_g
    t_max: Any = bounded([0, 0.98, 0.5, 1500], 0.0, 1.0, schedule="run")
    delta_t: Any = bounded([0, 100, 80, 1500], 0.0, 1000.0, schedule="run")  # interval s = t - delta_t
    inversion_stride: int = bounded(200, 1, 1000)
    inversion_max_steps: int = bounded(5, 1, 100)

    def prior_calls_per_image(self) -> float:
        return 3.0 + 2.0 * self.inversion_max_steps  # and the DDIM inversion steps


class ISM(ScoreDistillation):
    def __init__(self, cfg: ISMConfig, prior, run=None):
        super().__init__(cfg, prior, run)
        self.delta_t = self.schedule(cfg.delta_t, "delta_t")

    def invert(self, x, cameras, cond, step, generator):
        """(t [B], s [B], x_s, eps_s = eps(x_s, s, empty), x_t), each x-shaped [B,...]: the deterministic
        points ISM and TSM share."""
        t = self.sample_t(x.shape[0], step, generator, x.device)
        s = (t - int(round(self.delta_t(step)))).clamp(min=0)
        empty = cond.empty(cameras)
        x_s, _ = ddim_invert(self.prior, x, s, empty, cameras, self.cfg.inversion_stride, self.cfg.inversion_max_steps)
        (eps_s,) = predict_batched(self.prior, [(x_s, s, empty)], cameras)
        return t, s, x_s, eps_s, ddim_step(self.prior, x_s, s, t, eps_s)

    def gradient(self, x, cameras, cond, step, generator):
        t, s, _, eps_s, x_t = self.invert(x, cameras, cond, step, generator)
        eps_w, _, _ = cfg_predict(self.prior, x_t, t, cond, cameras, self.guidance_scale(step))
        return self.weight(t, x.ndim) * (eps_w - eps_s), batch_stats(t)


@dataclass
class TSMConfig(ISMConfig):
    name: str = "tsm"
    gamma: float = bounded(0.3, 0.0, 1.0)
    pixel_grad_clip: Any = bounded(0.05, 0.0, None, nullable=True)


class TSM(ISM):
    def gradient(self, x, cameras, cond, step, generator):
        t, s, x_s, eps_s, x_t = self.invert(x, cameras, cond, step, generator)
        mu = s + torch.round((t - s).float() * math.sqrt(1 - self.cfg.gamma**2)).long()
        x_mu = ddim_step(self.prior, x_s, s, mu, eps_s)
        # one call: cond, uncond and the path-B target eps(x_mu, mu, empty)
        eps_w, _, _, eps_mu = cfg_predict(self.prior, x_t, t, cond, cameras, self.guidance_scale(step),
                                          extra=[(x_mu, mu, cond.empty(cameras))])
        return self.weight(t, x.ndim) * (eps_w - eps_mu), batch_stats(t)
