"""Score Distillation Sampling (Poole et al. 2022, DreamFusion): G = w(t) (eps_w(x_t, t, y) - eps)."""
from __future__ import annotations

from guidance.core import ScoreDistillation, batch_stats, cfg_predict


class SDS(ScoreDistillation):
    def gradient(self, x, cameras, cond, step, generator):
        t, noise, x_t = self.noised(x, step, generator)
        eps_w, _, _ = cfg_predict(self.prior, x_t, t, cond, cameras, self.guidance_scale(step))
        return self.weight(t, x.ndim) * (eps_w - noise), batch_stats(t)
