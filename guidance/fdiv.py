"""f-divergence distribution matching (Xu et al. 2025, "One-step Diffusion Models with
f-Divergence Distribution Matching"): VSD/ESD's update weighted by h(r_t) = r_t^2 f''(r_t),

G = w(t) h(r_t) (eps_teacher - eps_fake),  r_t = p_t(x_t) / q_t(x_t)  (teacher over renders).

h is normalised by its batch mean (so a batch of one is VSD: a divergence other than reverse KL
needs train.batch_size >= 2) and r is clipped to [0.1, 20]. r comes from a discriminator on noisy
inputs, log r = logit, trained with softplus(l_fake) + softplus(-l_real) at the step's timestep
range, where "real" are teacher samples noised to the same t and "fake" are the renders. The
teacher bank is drawn once per prompt with the prior's own DDIM sampler (CFG, view-dependent
prompts) at cameras drawn from the run's camera distribution, so bank and renders share one
distribution of views and the discriminator cannot tell them apart by the view alone.
With a closed-form prior the exact ratio can be used instead (`ratio: exact`): p_t(x_t | y, c)
over q_t(x_t | c), the noised renders of the batch made at the same camera (a kernel density
over particles that share a camera; one kernel per camera for a scene). It also tests the
discriminator. The CFG-sharpened teacher has no closed-form normaliser, so `exact` needs
guidance_scale 1 (except reverse KL, where h = 1 and r does not enter).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dream3d.kernel import draws
from dream3d.kernel.schedules import Schedule
from dream3d.kernel.schema import RUN_LENGTH_FOR_CHECKS, ConfigError, bounded, choice
from guidance.core import batch_stats, cfg_predict, per_sample
from guidance.ddim import ddim_sample
from guidance.fake_score import timestep_embedding
from guidance.vsd import ESD, ESDConfig

DIVERGENCES = ("reverse_kl", "softened_reverse_kl", "jensen_shannon", "squared_hellinger", "forward_kl", "jeffreys")


def h_weight(divergence: str, r: Tensor) -> Tensor:
    """h(r) = r^2 f''(r) [B] for density ratios r [B] (up to a constant factor per divergence)."""
    if divergence == "reverse_kl":
        return torch.ones_like(r)
    if divergence == "softened_reverse_kl":
        return 1 / (1 + r)
    if divergence == "jensen_shannon":
        return r / (1 + r)
    if divergence == "squared_hellinger":
        return r.sqrt()
    if divergence == "forward_kl":
        return r
    if divergence == "jeffreys":
        return 1 + r
    raise ValueError(f"unknown divergence {divergence!r}; valid: {', '.join(DIVERGENCES)}")


class Discriminator(nn.Module):
    """logit(x_t, t) = log p_t / q_t estimate; a small CNN for images, an MLP for vectors."""

    def __init__(self, sample_shape: tuple[int, ...], width: int = 64):
        super().__init__()
        self.width = width
        if len(sample_shape) == 3:
            c = sample_shape[0]
            self.body = nn.Sequential(nn.Conv2d(c, 32, 3, 2, 1), nn.SiLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.SiLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, width))
        else:
            self.body = nn.Sequential(nn.Linear(sample_shape[0], width), nn.SiLU(), nn.Linear(width, width))
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Logits [B] for x_t [B,...], t [B]."""
        return self.head(self.body(x_t) + timestep_embedding(t, self.width)).squeeze(-1)


@dataclass
class FDivConfig(ESDConfig):
    name: str = "fdiv"
    entropy_weight: float = bounded(0.0, 0.0, 1.0)  # ESD's lambda for the fake score; 0 = VSD's
    divergence: str = choice("jensen_shannon", DIVERGENCES)
    ratio: str = choice("discriminator", ("discriminator", "exact"))  # exact needs a closed-form prior
    ratio_clip_min: float = bounded(0.1, 1e-6, None)
    ratio_clip_max: float = bounded(20.0, 1e-6, None)
    bank_size: int = bounded(256, 1, 65536)  # teacher samples drawn once per prompt
    bank_sampler_steps: int = bounded(50, 1, 1000)
    discriminator_lr: float = bounded(1e-4, 0.0, 1.0)

    def prior_calls_at_start(self) -> int:
        return self.bank_size * self.bank_sampler_steps * 2  # the teacher bank: DDIM with CFG

    def min_batch_size(self) -> int:
        return 1 if self.divergence == "reverse_kl" else 2  # h / mean(h) over one view is 1: VSD

    def validate(self) -> None:
        super().validate()
        scale = Schedule.parse(self.guidance_scale, "guidance_scale", RUN_LENGTH_FOR_CHECKS)
        if self.ratio == "exact" and self.divergence != "reverse_kl" and (scale.start, scale.end) != (1.0, 1.0):
            raise ConfigError(f"guidance.ratio=exact uses the teacher's closed-form density, which CFG (guidance_scale="
                              f"{self.guidance_scale}) sharpens by an unknown normaliser: set guidance.guidance_scale=1 "
                              "or guidance.ratio=discriminator")


class FDiv(ESD):
    def __init__(self, cfg: FDivConfig, prior, run=None):
        super().__init__(cfg, prior, run)
        self.discriminator = Discriminator(prior.sample_shape)
        self.register_buffer("bank", torch.empty(0))  # drawn lazily
        self.register_buffer("bank_views", torch.empty(0))  # [bank_size, 2] elevation, azimuth of the bank's cameras

    def teacher_bank(self, cond, step, generator, device=None) -> Tensor:
        """[bank_size, *sample_shape] samples of the teacher (DDIM with its CFG prediction and the
        view-dependent prompts), at cameras drawn from the run's camera distribution; drawn on the
        first call and kept (part of the checkpoint)."""
        if self.bank.numel() == 0:
            n = self.cfg.bank_size
            cams = self.run.cameras.sample(n, generator).to(device)
            scale = self.guidance_scale(step)
            self.bank = ddim_sample(self.prior, (n, *self.prior.sample_shape), None, cams, self.cfg.bank_sampler_steps,
                                    generator, device=device,
                                    eps_fn=lambda x, t: cfg_predict(self.prior, x, t, cond, cams, scale)[0])
            self.bank_views = torch.stack([cams.elevation, cams.azimuth], -1)
        return self.bank

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Checkpoints from before the bank's cameras were kept have no bank_views: an empty one."""
        if "bank_views" not in state_dict:
            state_dict = {**state_dict, "bank_views": torch.empty(0)}
        return super().load_state_dict(state_dict, strict, assign)

    def optimizer_groups(self) -> list[dict]:
        disc = set(map(id, self.discriminator.parameters()))
        return [{"params": [p for p in self.parameters() if id(p) not in disc], "lr": self.cfg.lr, "name": "fake_score"},
                {"params": list(self.discriminator.parameters()), "lr": self.cfg.discriminator_lr, "name": "discriminator"}]

    def log_ratio(self, x_t: Tensor, t: Tensor, cond, cameras, renders: Tensor, render_cameras) -> Tensor:
        """log p_t(x_t) / q_t(x_t) [B] for x_t [B,...] at cameras [B]: the discriminator's logit, or
        (ratio: exact) the prior's closed-form log p_t(x_t | y, c_b) over
        log q_t(x_t | c_b) = log mean_{j: c'_j = c_b} N(x_t; a_t x_j, s_t^2 I), the renders x [N,...] made at
        render_cameras c' [N] (every query's camera must be among them)."""
        if self.cfg.ratio == "discriminator":
            with torch.no_grad():
                return self.discriminator(x_t, t)
        if not self.prior.supports("log_prob"):
            raise ValueError("guidance.ratio=exact needs a closed-form prior (with log_prob); use ratio=discriminator")
        a, s = self.prior.coefficients(t, x_t.ndim)
        xf, xtf = renders.reshape(renders.shape[0], -1).double(), x_t.reshape(x_t.shape[0], -1).double()
        a2, s2 = a.reshape(-1, 1).double(), s.reshape(-1, 1).double() ** 2
        d2 = ((xtf[:, None, :] - a2[:, :, None] * xf[None]) ** 2).sum(-1)  # [B, N]
        view = lambda c: torch.stack([c.elevation, c.azimuth], -1).to(x_t.device)  # noqa: E731
        same = (view(cameras)[:, None] == view(render_cameras)[None]).all(-1)  # [B, N]: the renders at b's camera
        if not same.any(-1).all():
            raise ValueError("ratio=exact: a query's camera has no render to estimate q_t from")
        log_kernel = torch.where(same, -d2 / (2 * s2), -math.inf)
        log_q = (torch.logsumexp(log_kernel, -1) - same.sum(-1).double().log()
                 - 0.5 * xf.shape[1] * torch.log(2 * math.pi * s2[:, 0]))
        log_p = self.prior.log_prob(x_t, t, cond.embedding(cond.prompt), cameras)
        return (log_p.double() - log_q).float()

    def gradient(self, x, cameras, cond, step, generator):
        t, _, x_t = self.noised(x, step, generator)
        eps_w, _, _ = cfg_predict(self.prior, x_t, t, cond, cameras, self.guidance_scale(step))
        r = self.log_ratio(x_t, t, cond, cameras, x, cameras).exp().clamp(self.cfg.ratio_clip_min, self.cfg.ratio_clip_max)
        h = h_weight(self.cfg.divergence, r)
        h = per_sample(h / h.mean(), x.ndim)
        g = self.weight(t, x.ndim) * h * (eps_w - self.fake_eps(x_t, t, cameras, cond.plain(cameras)))
        return g, batch_stats(t, ratio=r)

    def discriminator_loss(self, fake: Tensor, real: Tensor, step: int, generator=None) -> Tensor:
        """softplus(l_fake) + softplus(-l_real) (a scalar) for renders `fake` and teacher samples
        `real` [B,...], both noised to the same fresh t per pair, drawn from the step's range."""
        t = self.timesteps.sample(fake.shape[0], step, generator, fake.device)
        noise = draws.randn((2, *fake.shape), generator, fake.device)
        l_fake = self.discriminator(self.prior.add_noise(fake, t, noise[0]), t)
        l_real = self.discriminator(self.prior.add_noise(real, t, noise[1]), t)
        return (F.softplus(l_fake) + F.softplus(-l_real)).mean()

    def aux_losses(self, x, cameras, cond, step, generator):
        losses = super().aux_losses(x, cameras, cond, step, generator)
        if self.cfg.ratio == "discriminator":
            bank = self.teacher_bank(cond, step, generator, x.device)
            real = bank[draws.randint(0, bank.shape[0], (x.shape[0],), generator, bank.device)]
            losses["discriminator"] = self.discriminator_loss(x, real, step, generator)
        return losses
