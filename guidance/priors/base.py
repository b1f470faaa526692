"""The DiffusionPrior interface: what every guidance may ask of a diffusion model, and the DDPM
marginal maths it shares with the fake score (`per_sample`, `q_sample`)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from dream3d.kernel.cameras import Cameras
from dream3d.kernel.schema import SectionConfig


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


class PriorConfig(SectionConfig):
    """Base of the prior sections of a run config."""

    def joint_views(self) -> int:
        """How many views the configured prior denoises jointly (1: a single-view prior); a run renders
        train.batch_size views a step, so that must be a multiple of it (dream3d/config.py)."""
        return 1


class DiffusionPrior(ABC):
    """A noise predictor eps(x_t, t, y[, camera]) with DDPM marginals x_t = a_t x + s_t eps.

    Subclasses set `alphas_cumprod` [T]. Text embeddings are opaque to guidances: they come
    from `embed` and go back into `predict_eps`, one per batch element. The methods named in
    `OPTIONAL` exist on some priors only: ask `supports(name)` before calling one.
    """

    alphas_cumprod: Tensor
    device: torch.device  # where predict_eps computes; predictions come back on x_t's device
    OPTIONAL = ("log_prob", "trainable_copy", "embed_image")

    @property
    def joint_views(self) -> int:
        """N > 1 for a multi-view prior (MVDream's kind): `predict_eps` then takes B = groups x N samples,
        each group's N views consecutive, and predicts each group's noise jointly, from all its views and
        their cameras. Whoever renders for it sends such groups (CameraSampler.sample_groups), and a
        guidance draws one timestep per group (ScoreDistillation.sample_t). 1 here."""
        return 1

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
    @classmethod
    def supports(cls, method: str) -> bool:
        """Whether this prior (class or instance) implements the optional `method` (one of OPTIONAL)."""
        if method not in cls.OPTIONAL:
            raise ValueError(f"{method!r} is not an optional prior method; optional: {', '.join(cls.OPTIONAL)}")
        return getattr(cls, method) is not getattr(DiffusionPrior, method)

    def log_prob(self, x_t: Tensor, t: Tensor, text: Any, cameras: Cameras | None = None) -> Tensor:
        """Optional: the closed-form log p_t(x_t | y) [B] for x_t [B,...], t [B] and one embedding
        (f-div's exact ratio). Implemented by ToyWorldPrior and GaussianMixturePrior."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form density: log_prob is implemented by "
                                  "the closed-form priors only (ToyWorldPrior, GaussianMixturePrior)")

    def embed_image(self, image: Tensor, camera: Cameras) -> Any:
        """Optional: an embedding of a reference view, image [3,H,W] in [0,1] on a white background seen from
        camera [1] (the run's azimuth 0), that conditions `predict_eps` on it in place of a prompt's
        (image-to-3D, Zero123's kind of prior). Implemented by ToyWorldPrior."""
        raise NotImplementedError(f"{type(self).__name__} cannot condition on an image: image-to-3D runs need a prior "
                                  "with embed_image (ToyWorld's)")

    def trainable_copy(self) -> nn.Module:
        """Optional: a trainable copy of the denoiser network (the base of the LoRA fake score of
        VSD/ESD). Implemented by StableDiffusionPrior."""
        raise NotImplementedError(f"{type(self).__name__} has no network to copy: trainable_copy is implemented by "
                                  "StableDiffusionPrior only")
