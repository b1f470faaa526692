"""Balanced Score Distillation (Huang et al. 2024, PlacidDreamer).

Per sample, with the classifier direction d_c = lam (eps_y - eps_u) and d_s = eps_u, take the
minimum-norm point of the segment between them (a two-objective Pareto step):
alpha = clip(<d_s - d_c, d_s> / |d_s - d_c|^2, 0, 1), G = lambda_g a_t (alpha d_c + (1 - alpha) d_s);
the a_t factor is BSD's default weighting ("a_t"), so `weighting` can change it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from dream3d.kernel.schema import bounded, choice
from guidance.core import WEIGHTINGS, GuidanceConfig, ScoreDistillation, batch_stats, per_sample, predict_cond_uncond


@dataclass
class BSDConfig(GuidanceConfig):
    name: str = "bsd"
    guidance_scale: Any = bounded(15.0, 0.0, 1000.0, schedule="run")  # lam
    weighting: str = choice("a_t", WEIGHTINGS)


def min_norm_on_segment(d_c: Tensor, d_s: Tensor) -> tuple[Tensor, Tensor]:
    """alpha [B] and the minimum-norm point alpha d_c + (1 - alpha) d_s [B,...] of each segment
    between d_c and d_s [B,...]."""
    b = d_c.shape[0]
    diff = (d_s - d_c).reshape(b, -1)
    alpha = ((diff * d_s.reshape(b, -1)).sum(-1) / diff.square().sum(-1).clamp(min=1e-20)).clamp(0, 1)
    a = per_sample(alpha, d_c.ndim)
    return alpha, a * d_c + (1 - a) * d_s


class BSD(ScoreDistillation):
    def gradient(self, x, cameras, cond, step, generator):
        t, _, x_t = self.noised(x, step, generator)
        eps_y, eps_u = predict_cond_uncond(self.prior, x_t, t, cond, cameras)
        alpha, g = min_norm_on_segment(self.guidance_scale(step) * (eps_y - eps_u), eps_u)
        return self.weight(t, x.ndim) * g, batch_stats(t, alpha=alpha)
