"""Diffusion priors behind one interface; `build_prior` picks one by config name."""
from dream3d.kernel.schema import registry
from guidance.priors.base import DiffusionPrior, scaled_linear_alphas_cumprod
from guidance.priors.stable_diffusion import StableDiffusionPrior, StableDiffusionPriorConfig
from guidance.priors.toyworld import ToyWorldPrior, ToyWorldPriorConfig

PRIORS = registry((ToyWorldPrior, ToyWorldPriorConfig), (StableDiffusionPrior, StableDiffusionPriorConfig))


def build_prior(cfg, progress: bool = False) -> DiffusionPrior:
    cls, _ = PRIORS[cfg.name]
    return cls(cfg, progress=progress)


__all__ = ["DiffusionPrior", "StableDiffusionPrior", "StableDiffusionPriorConfig", "ToyWorldPrior", "ToyWorldPriorConfig",
           "PRIORS", "build_prior", "scaled_linear_alphas_cumprod"]
