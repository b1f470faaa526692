"""Diffusion priors behind one interface; `build_prior` picks one by config name."""
import torch

from dream3d.kernel.schema import registry
from guidance.priors.base import DiffusionPrior, scaled_linear_alphas_cumprod
from guidance.priors.deepfloyd_if import DeepFloydIFPrior, DeepFloydIFPriorConfig
from guidance.priors.mvdream import MVDreamPrior, MVDreamPriorConfig
from guidance.priors.stable_diffusion import StableDiffusionPrior, StableDiffusionPriorConfig
from guidance.priors.toyworld import ToyWorldPrior, ToyWorldPriorConfig
from guidance.priors.zero123 import Zero123Prior, Zero123PriorConfig

PRIORS = registry((ToyWorldPrior, ToyWorldPriorConfig), (StableDiffusionPrior, StableDiffusionPriorConfig),
                   (DeepFloydIFPrior, DeepFloydIFPriorConfig), (MVDreamPrior, MVDreamPriorConfig),
                   (Zero123Prior, Zero123PriorConfig))


def build_prior(cfg, progress: bool = False, device: torch.device | None = None) -> DiffusionPrior:
    """The prior of a config section on `device` (the run's train.device; None: the prior's own
    default, the CPU for ToyWorld and prior.device for Stable Diffusion)."""
    cls, _ = PRIORS[cfg.name]
    return cls(cfg, progress=progress, device=device)


__all__ = ["DiffusionPrior", "MVDreamPrior", "MVDreamPriorConfig", "StableDiffusionPrior", "StableDiffusionPriorConfig",
           "ToyWorldPrior", "ToyWorldPriorConfig", "Zero123Prior",
           "Zero123PriorConfig", "PRIORS", "build_prior", "scaled_linear_alphas_cumprod"]
