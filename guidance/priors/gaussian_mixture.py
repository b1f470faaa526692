"""A closed-form prior over vectors: each prompt is a mixture of isotropic Gaussians.

p_0(x | y) = sum_k pi_k N(mu_k, sigma_k^2 I) noises to sum_k pi_k N(a_t mu_k, (a_t^2 sigma_k^2 + s_t^2) I),
so the score and eps = -s_t * score are exact. Particles x [B,D] stand in for a scene's renders:
the instrument for checking what each guidance converges to (mode seeking, mode coverage).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from dream3d.kernel.cameras import Cameras
from guidance.priors.base import DiffusionPrior, scaled_linear_alphas_cumprod


class GaussianMixturePrior(DiffusionPrior):
    def __init__(self, mixtures: dict[str, tuple[Tensor, Tensor, Tensor]]):
        """mixtures: prompt -> (means [K,D], stds [K], weights [K]); "" is the unconditional one."""
        if "" not in mixtures:
            raise ValueError("a GaussianMixturePrior needs an unconditional mixture under the prompt ''")
        self.mixtures = {k: tuple(torch.as_tensor(v, dtype=torch.float64) for v in m) for k, m in mixtures.items()}
        self.alphas_cumprod = scaled_linear_alphas_cumprod()
        self.device = torch.device("cpu")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.mixtures[""][0].shape[1],)

    def encode(self, img: Tensor) -> Tensor:
        return img

    def decode(self, x: Tensor) -> Tensor:
        return x

    def embed(self, prompt: str) -> str:
        if prompt not in self.mixtures:
            raise ValueError(f"unknown prompt {prompt!r}; valid: {', '.join(map(repr, self.mixtures))}")
        return prompt

    def log_prob(self, x_t: Tensor, t: Tensor, prompt: str, cameras: Cameras | None = None) -> Tensor:
        """log p_t(x_t | y) [B] for x_t [B,D], t [B] (no camera conditioning)."""
        means, stds, weights = self.mixtures[prompt]
        abar = self.alphas_cumprod.double()[t][:, None]
        var = abar * stds[None] ** 2 + (1 - abar)  # [B,K]
        d2 = ((x_t.double()[:, None, :] - abar.sqrt()[..., None] * means[None]) ** 2).sum(-1)
        dim = x_t.shape[-1]
        return torch.logsumexp(torch.log(weights)[None] - d2 / (2 * var) - 0.5 * dim * torch.log(2 * math.pi * var), -1)

    def score(self, x_t: Tensor, t: Tensor, prompt: str) -> Tensor:
        """grad_x log p_t(x_t | y) [B,D], in float64."""
        means, stds, weights = self.mixtures[prompt]
        x = x_t.double()
        abar = self.alphas_cumprod.double()[t][:, None]
        var = abar * stds[None] ** 2 + (1 - abar)
        diff = x[:, None, :] - abar.sqrt()[..., None] * means[None]  # [B,K,D]
        logits = torch.log(weights)[None] - (diff**2).sum(-1) / (2 * var) - 0.5 * x.shape[-1] * torch.log(var)
        r = torch.softmax(logits, -1)
        return (r[..., None] * (-diff / var[..., None])).sum(1)

    @torch.no_grad()
    def predict_eps(self, x_t: Tensor, t: Tensor, text: Sequence[str], cameras: Cameras | None = None) -> Tensor:
        eps = torch.empty_like(x_t)
        s = (1 - self.alphas_cumprod.double()[t]).sqrt()[:, None]
        for key in dict.fromkeys(text):
            idx = torch.tensor([i for i, k in enumerate(text) if k == key], device=x_t.device)
            eps[idx] = (-s[idx] * self.score(x_t[idx], t[idx], key)).to(x_t.dtype)
        return eps
