"""The classifier-score family: only the direction eps(y) - eps(empty) (the implicit classifier).

- CSD (Yu et al. 2024, "Text-to-3D with Classifier Score Distillation"):
  G = w(t) (eps(x_t, y) - eps(x_t, u)); with a negative prompt and `negative_weight` a_neg != 0:
  G = w(t) (eps_y + a_neg eps_neg + a_null eps_empty), a_null = -1 - a_neg.
- CSM (TV-3DG; no code was released, this is a reconstruction and unconfirmed): the same
  classifier term at a deterministically noised point x_t (DDIM inversion as in ISM), scaled by
  the CFG scale: G = w(t) w (eps(x_t, t, y) - eps(x_t, t, u)).
- NFSD (Katzir et al. 2024, Noise-Free Score Distillation; from memory, unverified):
  G = w(t) (delta_D + w (eps_y - eps_empty)), delta_D = eps_empty if t < 200 else eps_empty - eps_neg
  (without a negative prompt eps_neg = eps_empty, so delta_D = 0 for t >= 200).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dream3d.kernel.schema import ConfigError, bounded
from guidance.core import GuidanceConfig, ScoreDistillation, batch_stats, per_sample, predict_batched, predict_cond_uncond
from guidance.ddim import ddim_invert


@dataclass
class CSDConfig(GuidanceConfig):
    name: str = "csd"
    t_max: Any = bounded(0.5, 0.0, 1.0, schedule=True)
    negative_weight: float = bounded(0.0, -10.0, 10.0)  # a_neg; needs negative_prompt when != 0


class CSD(ScoreDistillation):
    def gradient(self, x, cameras, cond, step, generator):
        t, _, x_t = self.noised(x, step, generator)
        a_neg = self.cfg.negative_weight
        if a_neg == 0.0:
            eps_y, eps_u = predict_cond_uncond(self.prior, x_t, t, cond, cameras)
            direction = eps_y - eps_u
        else:
            if not cond.negative:
                raise ConfigError("guidance.negative_weight != 0 needs a negative_prompt")
            eps_y, eps_n, eps_e = predict_cond_uncond(self.prior, x_t, t, cond, cameras, [(x_t, t, cond.empty(cameras))])
            direction = eps_y + a_neg * eps_n + (-1.0 - a_neg) * eps_e
        return self.weight(t, x.ndim) * direction, batch_stats(t)


@dataclass
class CSMConfig(GuidanceConfig):
    name: str = "csm"
    guidance_scale: Any = bounded(7.5, 0.0, 1000.0, schedule=True)
    inversion_stride: int = bounded(200, 1, 1000)
    inversion_max_steps: int = bounded(5, 1, 100)

    def prior_calls_per_image(self) -> float:
        return 3.0 + 2.0 * self.inversion_max_steps  # and the DDIM inversion steps


class CSM(ScoreDistillation):
    def gradient(self, x, cameras, cond, step, generator):
        t = self.timesteps.sample(x.shape[0], step, generator, x.device)
        x_t, _ = ddim_invert(self.prior, x, t, cond.empty(cameras), cameras, self.cfg.inversion_stride,
                             self.cfg.inversion_max_steps)
        eps_y, eps_u = predict_cond_uncond(self.prior, x_t, t, cond, cameras)
        return self.weight(t, x.ndim) * self.guidance_scale(step) * (eps_y - eps_u), batch_stats(t)


@dataclass
class NFSDConfig(GuidanceConfig):
    name: str = "nfsd"
    guidance_scale: Any = bounded(7.5, 0.0, 1000.0, schedule=True)
    small_t: int = bounded(200, 0, 1000)  # below it delta_D = eps_empty

    def validate(self) -> None:
        super().validate()
        if self.perp_neg:  # its queries (cond, negative, empty) are its own, outside the shared CFG path
            raise ConfigError("guidance.perp_neg=true does not apply to nfsd (its negative-prompt term replaces CFG); "
                              "use it with sds, vsd, ism, csd, ... or set guidance.perp_neg=false")


class NFSD(ScoreDistillation):
    def gradient(self, x, cameras, cond, step, generator):
        t, _, x_t = self.noised(x, step, generator)
        queries = [(x_t, t, cond.cond(cameras)), (x_t, t, cond.empty(cameras))]
        if cond.negative:
            queries.append((x_t, t, cond.uncond(cameras)))
        eps = predict_batched(self.prior, queries, cameras)
        eps_y, eps_e = eps[0], eps[1]
        eps_neg = eps[2] if cond.negative else eps_e
        small = per_sample(t < self.cfg.small_t, x.ndim)
        delta_d = torch.where(small, eps_e, eps_e - eps_neg)
        g = self.weight(t, x.ndim) * (delta_d + self.guidance_scale(step) * (eps_y - eps_e))
        return g, batch_stats(t)
