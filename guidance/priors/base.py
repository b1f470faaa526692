"""The DiffusionPrior interface: what every guidance may ask of a diffusion model."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import torch
from torch import Tensor

from dream3d.cameras import Cameras


def scaled_linear_alphas_cumprod(T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> Tensor:
    """Stable Diffusion's DDPM schedule: betas linear in sqrt space. Returns abar_t [T]."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


class DiffusionPrior(ABC):
    """A noise predictor eps(x_t, t, y[, camera]) with DDPM marginals x_t = a_t x + s_t eps.

    Subclasses set `alphas_cumprod` [T]. Text embeddings are opaque to guidances: they come
    from `embed` and go back into `predict_eps`, one per batch element.
    """

    alphas_cumprod: Tensor

    @property
    def num_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    @property
    @abstractmethod
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one x in prior space, e.g. (C, H, W) or (D,)."""

    @abstractmethod
    def encode(self, img: Tensor) -> Tensor:
        """Renders [B,3,H,W] in [0,1] -> prior space x (differentiable)."""

    @abstractmethod
    def decode(self, x: Tensor) -> Tensor:
        """Prior space x -> images [B,3,H,W] in [0,1]."""

    @abstractmethod
    def embed(self, prompt: str) -> Any:
        """A (cached) embedding of one prompt; raises ValueError with a clear message on bad input."""

    @abstractmethod
    def predict_eps(self, x_t: Tensor, t: Tensor, text: Sequence[Any], cameras: Cameras | None = None) -> Tensor:
        """Noise prediction [B,...] for x_t [B,...], integer t [B], one embedding per element."""

    def x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        a, s = self.coefficients(t, x_t.ndim)
        return (x_t - s * eps) / a

    def coefficients(self, t: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
        """a_t = sqrt(abar_t), s_t = sqrt(1 - abar_t), shaped [B,1,...] to broadcast over x."""
        abar = self.alphas_cumprod.to(t.device)[t].reshape(-1, *([1] * (ndim - 1)))
        return abar.sqrt(), (1 - abar).sqrt()

    def add_noise(self, x: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        a, s = self.coefficients(t, x.ndim)
        return a * x + s * noise


@torch.no_grad()
def ddim_sample(prior: DiffusionPrior, shape, text, cameras=None, steps: int = 50,
                generator: torch.Generator | None = None, eps_fn=None) -> Tensor:
    """Deterministic DDIM (eta 0) from pure noise at t = T-1 down to t = 0; returns x_0.
    `eps_fn(x_t, t)` overrides the plain conditional prediction (e.g. for CFG)."""
    eps_fn = eps_fn or (lambda x, t: prior.predict_eps(x, t, text, cameras))
    T = prior.num_timesteps
    ts = torch.linspace(T - 1, 0, steps).round().long()
    x = torch.randn(shape, generator=generator)
    for i, t in enumerate(ts):
        tb = t.repeat(shape[0])
        eps = eps_fn(x, tb)
        x0 = prior.x0_from_eps(x, tb, eps)
        if i + 1 == len(ts):
            return x0
        x = prior.add_noise(x0, ts[i + 1].repeat(shape[0]), eps)
    return x
