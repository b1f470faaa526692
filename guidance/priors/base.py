"""The DiffusionPrior interface: what every guidance may ask of a diffusion model, and the DDPM
marginal maths it shares with the fake score (`per_sample`, `q_sample`)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from dream3d.kernel.cameras import Cameras


def scaled_linear_alphas_cumprod(T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> Tensor:
    """Stable Diffusion's DDPM schedule: betas linear in sqrt space. Returns abar_t [T]."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def per_sample(v: Tensor, ndim: int) -> Tensor:
    """Per-sample values [B] reshaped to [B,1,...] (ndim dimensions) to broadcast over x."""
    return v.reshape(-1, *([1] * (ndim - 1)))


def marginal_coefficients(alphas_cumprod: Tensor, t: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
    """a_t = sqrt(abar_t), s_t = sqrt(1 - abar_t) for integer t [B], shaped [B,1,...]."""
    abar = per_sample(alphas_cumprod.to(t.device)[t], ndim)
    return abar.sqrt(), (1 - abar).sqrt()


def q_sample(alphas_cumprod: Tensor, x: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """The DDPM marginal x_t = a_t x + s_t noise [B,...] for x, noise [B,...] and integer t [B]."""
    a, s = marginal_coefficients(alphas_cumprod, t, x.ndim)
    return a * x + s * noise


class DiffusionPrior(ABC):
    """A noise predictor eps(x_t, t, y[, camera]) with DDPM marginals x_t = a_t x + s_t eps.

    Subclasses set `alphas_cumprod` [T]. Text embeddings are opaque to guidances: they come
    from `embed` and go back into `predict_eps`, one per batch element. The methods named in
    `OPTIONAL` exist on some priors only: ask `supports(name)` before calling one.
    """

    alphas_cumprod: Tensor
    device: torch.device  # where predict_eps computes; predictions come back on x_t's device
    OPTIONAL = ("log_prob", "trainable_copy")

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
        """x0hat = (x_t - s_t eps) / a_t [B,...]."""
        a, s = self.coefficients(t, x_t.ndim)
        return (x_t - s * eps) / a

    def coefficients(self, t: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
        """a_t = sqrt(abar_t), s_t = sqrt(1 - abar_t), shaped [B,1,...] to broadcast over x."""
        return marginal_coefficients(self.alphas_cumprod, t, ndim)

    def add_noise(self, x: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = a_t x + s_t noise [B,...] (`q_sample` with this prior's schedule)."""
        return q_sample(self.alphas_cumprod, x, t, noise)

    def clear_run_cache(self) -> None:
        """Forget what earlier runs left in memory (their prompts' embeddings, warnings already
        given) before the prior serves another run; a batch worker keeps one prior for many runs.
        Nothing by default."""

    # -- optional capabilities -----------------------------------------------------------
    def supports(self, method: str) -> bool:
        """Whether this prior implements the optional `method` (one of OPTIONAL)."""
        if method not in self.OPTIONAL:
            raise ValueError(f"{method!r} is not an optional prior method; optional: {', '.join(self.OPTIONAL)}")
        return getattr(type(self), method) is not getattr(DiffusionPrior, method)

    def log_prob(self, x_t: Tensor, t: Tensor, text: Any, cameras: Cameras | None = None) -> Tensor:
        """Optional: the closed-form log p_t(x_t | y) [B] for x_t [B,...], t [B] and one embedding
        (f-div's exact ratio). Implemented by ToyWorldPrior and GaussianMixturePrior."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form density: log_prob is implemented by "
                                  "the closed-form priors only (ToyWorldPrior, GaussianMixturePrior)")

    def trainable_copy(self) -> nn.Module:
        """Optional: a trainable copy of the denoiser network (the base of the LoRA fake score of
        VSD/ESD). Implemented by StableDiffusionPrior."""
        raise NotImplementedError(f"{type(self).__name__} has no network to copy: trainable_copy is implemented by "
                                  "StableDiffusionPrior only")
