"""Variational Score Distillation (Wang et al. 2023, ProlificDreamer) and Entropic Score
Distillation (Wang et al. 2024, "Taming Mode Collapse in Score Distillation").

VSD: G = w(t) (eps_w(x_t, t, y) - eps_phi(x_t, t, c)), the fake score trained online on the
renders (one step per scene step, `aux_losses["fake_score"]`). The sampled noise does not appear.
ESD: the fake score gets CFG over the camera, eps_fake = eps_phi(empty_c) + g (eps_phi(c) - eps_phi(empty_c)),
g = 1 - lambda. lambda ("entropy weight") = 0 is VSD; 1 uses only the camera-marginal fake score
(maximum entropy over views). The sign convention of the paper's lambda was not confirmed from a
primary source; this mapping is the one documented in shared/docs/guidance.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dream3d.kernel.cameras import Cameras
from dream3d.kernel.schema import ConfigError, bounded
from guidance.core import GuidanceConfig, ScoreDistillation, batch_stats, cfg_predict
from guidance.fake_score import build_fake_score


@dataclass
class VSDConfig(GuidanceConfig):
    name: str = "vsd"
    guidance_scale: Any = bounded(7.5, 0.0, 1000.0, schedule="run")
    t_max: Any = bounded(["20%", 0.98, 0.5, "20%"], 0.0, 1.0, schedule="run")  # drops after the first 20% of the run
    lr: float = bounded(1e-4, 0.0, 1.0)  # fake-score learning rate
    camera_dropout: float = bounded(0.1, 0.0, 1.0)
    lora_rank: int = bounded(4, 1, 256)  # LoRA fake score (Stable Diffusion priors) only
    fake_loss_weight: float = bounded(1.0, 0.0, None)

    def trains_prior_copy(self) -> bool:
        return True


class VSD(ScoreDistillation):
    def __init__(self, cfg: VSDConfig, prior, run=None):
        super().__init__(cfg, prior, run)
        self.fake = build_fake_score(prior, cfg.camera_dropout, cfg.lora_rank)

    @property
    def camera_scale(self) -> float:
        """CFG scale over the camera on the fake score: 1 (VSD uses eps_phi(c) alone)."""
        return 1.0

    def fake_eps(self, x_t: Tensor, t: Tensor, cameras: Cameras, text: list) -> Tensor:
        """eps_fake [B,...] for x_t [B,...], t [B] (no graph)."""
        with torch.no_grad():
            return self.fake.camera_cfg(x_t, t, cameras, self.camera_scale, text)

    def gradient(self, x, cameras, cond, step, generator):
        t, _, x_t = self.noised(x, step, generator)
        eps_w, _, _ = cfg_predict(self.prior, x_t, t, cond, cameras, self.guidance_scale(step))
        eps_fake = self.fake_eps(x_t, t, cameras, cond.plain(cameras))
        return self.weight(t, x.ndim) * (eps_w - eps_fake), batch_stats(t)

    def aux_losses(self, x, cameras, cond, step, generator):
        # the fake score sees the plain prompt and the camera (ProlificDreamer, threestudio): a view suffix in its
        # text would leak the view into ESD's camera-marginal branch
        loss = self.fake.loss(x, cameras, self.prior.alphas_cumprod, generator, text=cond.plain(cameras))
        return {"fake_score": self.cfg.fake_loss_weight * loss}

    def optimizer_groups(self) -> list[dict]:
        return [{"params": list(self.parameters()), "lr": self.cfg.lr, "name": "guidance"}]


@dataclass
class ESDConfig(VSDConfig):
    name: str = "esd"
    entropy_weight: float = bounded(0.5, 0.0, 1.0)  # lambda; 0 = VSD

    def validate(self) -> None:
        super().validate()
        if self.entropy_weight > 0 and self.camera_dropout <= 0:
            raise ConfigError(f"guidance.entropy_weight={self.entropy_weight} mixes in the camera-free fake score, which "
                              "only camera dropout trains: set guidance.camera_dropout > 0 (e.g. 0.1)")


class ESD(VSD):
    @property
    def camera_scale(self) -> float:
        """g = 1 - lambda: 1 is VSD, 0 the camera-marginal fake score alone."""
        return 1.0 - self.cfg.entropy_weight
