"""Consistency Distillation Sampling (Wu et al. 2024, Consistent3D).

One noise eps* is drawn once and kept for the whole run (it is part of the checkpoint). x_t is
noised with it; one DDIM step with the CFG prediction goes to t' < t; the target is the CFG
prediction there: G = w(t) (eps_w(x_t, t) - eps_w(x_t', t')). t' is annealed from t'_start to
t'_end with a square-root law, and t = t' + U{100..299}: the timesteps are CDS's own, so the
shared t_min / t_max are refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dream3d.kernel import draws
from dream3d.kernel.schema import bounded
from guidance.core import GuidanceConfig, ScoreDistillation, batch_stats, cfg_predict
from guidance.ddim import ddim_step


@dataclass
class CDSConfig(GuidanceConfig):
    IGNORED = ("t_min", "t_max")  # t = t' + gap
    name: str = "cds"
    t_prime_start: int = bounded(700, 0, 998)
    t_prime_end: int = bounded(100, 0, 998)
    anneal_steps: int = bounded(1000, 1, None)
    gap_min: int = bounded(100, 1, 999)  # t - t' ~ U{gap_min .. gap_max}
    gap_max: int = bounded(299, 1, 999)


class CDS(ScoreDistillation):
    def __init__(self, cfg: CDSConfig, prior, run=None):
        super().__init__(cfg, prior, run)
        self.register_buffer("fixed_noise", torch.empty(0))  # drawn lazily

    def t_prime(self, step: int) -> int:
        """t' at this step: t'_start -> t'_end along sqrt(step / anneal_steps)."""
        f = min(1.0, step / self.cfg.anneal_steps)
        return int(round(self.cfg.t_prime_start + (self.cfg.t_prime_end - self.cfg.t_prime_start) * math.sqrt(f)))

    def gradient(self, x, cameras, cond, step, generator):
        if self.fixed_noise.shape != x.shape:
            self.fixed_noise = draws.randn(x.shape, generator, x.device)
        T = self.prior.num_timesteps
        tp = torch.full((x.shape[0],), self.t_prime(step), device=x.device)
        t = (tp + draws.randint(self.cfg.gap_min, self.cfg.gap_max + 1, tp.shape, generator, x.device)).clamp(max=T - 1)
        scale = self.guidance_scale(step)
        x_t = self.prior.add_noise(x, t, self.fixed_noise)
        eps_t, _, _ = cfg_predict(self.prior, x_t, t, cond, cameras, scale)
        x_tp = ddim_step(self.prior, x_t, t, tp, eps_t)
        eps_tp, _, _ = cfg_predict(self.prior, x_tp, tp, cond, cameras, scale)
        return self.weight(t, x.ndim) * (eps_t - eps_tp), batch_stats(t)
