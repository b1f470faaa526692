"""Score Distillation Sampling (Poole et al. 2022, DreamFusion): G = w(t) (eps_w(x_t, t, y) - eps)."""
from __future__ import annotations

import torch

from guidance.core import ScoreDistillation, cfg_predict


class SDS(ScoreDistillation):
    def gradient(self, x, cameras, cond, step, generator):
        t = self.timesteps.sample(x.shape[0], step, generator)
        noise = torch.randn(x.shape, generator=generator)
        x_t = self.prior.add_noise(x, t, noise)
        eps_w, _, _ = cfg_predict(self.prior, x_t, t, cond, cameras, self.guidance_scale(step))
        return self.weight(t, x.ndim) * (eps_w - noise), {"t": float(t.float().mean())}
