"""The classifier-score family: only the direction eps(y) - eps(empty) (the implicit classifier).

- CSD (Yu et al. 2024, "Text-to-3D with Classifier Score Distillation"):
  G = w(t) (eps(x_t, y) - eps(x_t, empty)); with a negative prompt, the mix
  G = w(t) (eps_y + a_neg eps_neg + a_null eps_empty), a_null = -1 - a_neg, continuous in a_neg:
  a_neg = -1 (the default with a negative prompt) is eps_y - eps_neg, 0 would ignore the negative
  (refused), and without a negative prompt a_neg must stay unset (0). No CFG scale enters.
- CSM (TV-3DG; no code was released, this is a reconstruction and unconfirmed): the same
  classifier term at a deterministically noised point x_t (DDIM inversion as in ISM), scaled by
  the CFG scale: G = w(t) w (eps(x_t, t, y) - eps(x_t, t, u)).
- NFSD (Katzir et al. 2024, Noise-Free Score Distillation; checked against the authors' project page):
  G = w(t) (delta_D + w (eps_y - eps_empty)), delta_D = eps_empty if t < 200 else eps_empty - eps_neg,
  where neg is the paper's fixed "unrealistic, blurry, ..." prompt (`realism_negative`), or the run's
  negative prompt when one is given. A prior with no notion of realism (ToyWorld) sets it to "":
  then delta_D = 0 for t >= 200.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dream3d.kernel.schema import ConfigError, bounded
from guidance.core import (
    Conditioning,
    GuidanceConfig,
    ScoreDistillation,
    batch_stats,
    per_sample,
    predict_batched,
    predict_cond_uncond,
)
from guidance.ddim import ddim_invert


@dataclass
class CSDConfig(GuidanceConfig):
    IGNORED = ("guidance_scale",)  # no CFG scale: the classifier direction alone
    name: str = "csd"
    t_max: Any = bounded(0.5, 0.0, 1.0, schedule="run")
    # a_neg, with a negative prompt only; unset = -1 then (eps_y - eps_neg), 0 without one
    negative_weight: float | None = bounded(None, -10.0, 10.0, nullable=True)


class CSD(ScoreDistillation):
    def embed(self, prompt: str, negative: str = "", image: Any = None) -> Conditioning:
        a_neg = self.cfg.negative_weight
        if a_neg is not None and a_neg != 0.0 and not negative:
            raise ConfigError(f"guidance.negative_weight={a_neg} weighs a negative prompt: set negative_prompt, or leave "
                              "negative_weight unset")
        if a_neg == 0.0 and negative:
            raise ConfigError("guidance.negative_weight=0 would ignore negative_prompt: leave negative_weight unset (-1: "
                              "eps_y - eps_neg) or pick another non-zero weight")
        return super().embed(prompt, negative, image)

    def gradient(self, x, cameras, cond, step, generator):
        t, _, x_t = self.noised(x, step, generator)
        a_neg = -1.0 if self.cfg.negative_weight is None else self.cfg.negative_weight
        a_null = -1.0 - a_neg
        if not cond.negative or a_null == 0.0:  # eps_y - eps_empty, or eps_y - eps_neg
            eps_y, eps_u = predict_cond_uncond(self.prior, x_t, t, cond, cameras)
            direction = eps_y - eps_u
        else:
            eps_y, eps_n, eps_e = predict_cond_uncond(self.prior, x_t, t, cond, cameras, [(x_t, t, cond.empty(cameras))])
            direction = eps_y + a_neg * eps_n + a_null * eps_e
        return self.weight(t, x.ndim) * direction, batch_stats(t)


@dataclass
class CSMConfig(GuidanceConfig):
    name: str = "csm"
    guidance_scale: Any = bounded(7.5, 0.0, 1000.0, schedule="run")
    inversion_stride: int = bounded(200, 1, 1000)
    inversion_max_steps: int = bounded(5, 1, 100)

    def prior_calls_per_image(self) -> float:
        return 3.0 + 2.0 * self.inversion_max_steps  # and the DDIM inversion steps


class CSM(ScoreDistillation):
    def gradient(self, x, cameras, cond, step, generator):
        t = self.sample_t(x.shape[0], step, generator, x.device)
        x_t, _ = ddim_invert(self.prior, x, t, cond.empty(cameras), cameras, self.cfg.inversion_stride,
                             self.cfg.inversion_max_steps)
        eps_y, eps_u = predict_cond_uncond(self.prior, x_t, t, cond, cameras)
        return self.weight(t, x.ndim) * self.guidance_scale(step) * (eps_y - eps_u), batch_stats(t)


REALISM_NEGATIVE = ("unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, low-resolution, "
                    "gloomy")  # NFSD's fixed negative prompt (Katzir et al. 2024)


@dataclass
class NFSDConfig(GuidanceConfig):
    name: str = "nfsd"
    guidance_scale: Any = bounded(7.5, 0.0, 1000.0, schedule="run")
    small_t: int = bounded(200, 0, 1000)  # below it delta_D = eps_empty
    realism_negative: str = REALISM_NEGATIVE  # eps_neg's prompt when the run has no negative_prompt; "" = none

    def validate(self) -> None:
        super().validate()
        if self.perp_neg:  # its queries (cond, negative, empty) are its own, outside the shared CFG path
            raise ConfigError("guidance.perp_neg=true does not apply to nfsd (its negative-prompt term replaces CFG); "
                              "use it with sds, vsd, ism, csd, ... or set guidance.perp_neg=false")


class NFSD(ScoreDistillation):
    def negative_text(self, cond: Conditioning) -> str:
        """eps_neg's prompt: the run's negative prompt, else guidance.realism_negative."""
        return cond.negative or self.cfg.realism_negative

    def embed(self, prompt: str, negative: str = "", image: Any = None) -> Conditioning:
        cond = super().embed(prompt, negative, image)
        try:
            cond.embedding(self.negative_text(cond))
        except ValueError as e:
            raise ConfigError(f"nfsd's negative prompt {self.negative_text(cond)!r} cannot be read by this prior ({e}); "
                              "set negative_prompt, or guidance.realism_negative='' (no realism term: delta_D = 0 for "
                              "t >= small_t)") from None
        return cond

    def gradient(self, x, cameras, cond, step, generator):
        t, _, x_t = self.noised(x, step, generator)
        negative = self.negative_text(cond)
        queries = [(x_t, t, cond.cond(cameras)), (x_t, t, cond.empty(cameras))]
        if negative:
            queries.append((x_t, t, [cond.embedding(negative)] * len(cameras)))
        eps = predict_batched(self.prior, queries, cameras)
        eps_y, eps_e = eps[0], eps[1]
        eps_neg = eps[2] if negative else eps_e
        small = per_sample(t < self.cfg.small_t, x.ndim)
        delta_d = torch.where(small, eps_e, eps_e - eps_neg)
        g = self.weight(t, x.ndim) * (delta_d + self.guidance_scale(step) * (eps_y - eps_e))
        return g, batch_stats(t)
