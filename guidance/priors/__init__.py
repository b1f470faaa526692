"""Diffusion priors behind one interface; `build_prior` picks one by config name."""
from guidance.priors.base import DiffusionPrior, ddim_sample, scaled_linear_alphas_cumprod
from guidance.priors.stable_diffusion import StableDiffusionPrior, StableDiffusionPriorConfig
from guidance.priors.toyworld import ToyWorldPrior, ToyWorldPriorConfig

PRIORS = {
    "toyworld": (ToyWorldPrior, ToyWorldPriorConfig),
    "stable_diffusion": (StableDiffusionPrior, StableDiffusionPriorConfig),
}


def build_prior(cfg, progress: bool = False) -> DiffusionPrior:
    cls, _ = PRIORS[cfg.name]
    return cls(cfg, progress=progress)


__all__ = ["DiffusionPrior", "StableDiffusionPrior", "StableDiffusionPriorConfig", "ToyWorldPrior", "ToyWorldPriorConfig",
           "PRIORS", "build_prior", "ddim_sample", "scaled_linear_alphas_cumprod"]
