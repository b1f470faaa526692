"""What each objective converges to on closed-form Gaussian targets (particles as the scene).

    python benchmarks/guidance_particles.py

Prints: particle variance under SDS / VSD (target 0.25), spread across 64 cameras for VSD vs
ESD (lambda = 1), and the fraction of particles in the far mode of a two-mode target for
reverse KL / JS / forward KL weighting (truth 0.5). Same settings as tests/test_guidance_family.py.
"""
from __future__ import annotations

import torch

from dream3d.kernel.cameras import Cameras
from guidance.particles import make_guidance, optimise_particles
from guidance.priors.gaussian_mixture import GaussianMixturePrior

D, MU = 2, torch.tensor([1.0, -0.5])


def main() -> None:
    one = GaussianMixturePrior({"y": (MU[None], torch.tensor([0.5]), torch.tensor([1.0])),
                                "": (torch.zeros(1, D), torch.tensor([1.0]), torch.tensor([1.0]))})
    front = Cameras.make(torch.zeros(256), torch.zeros(256))
    for name, kw in (("sds", {}), ("vsd", dict(lr=3e-3, camera_dropout=0.0))):
        torch.manual_seed(0)
        x = optimise_particles(make_guidance(name, one, guidance_scale=1.0, t_max=0.98, **kw), torch.randn(256, D),
                               front, 600 if name == "vsd" else 300)
        print(f"{name}: mean {x.mean(0).numpy().round(3)}  variance {x.var(0).numpy().round(3)}  (target 0.25)")
    ring = Cameras.make(torch.linspace(-10, 45, 64), torch.linspace(-180, 180, 65)[:-1])
    for name, kw in (("vsd", {}), ("esd", dict(entropy_weight=1.0))):
        torch.manual_seed(0)
        x = optimise_particles(make_guidance(name, one, guidance_scale=1.0, t_max=0.98, lr=3e-3, **kw),
                               torch.randn(64, D), ring, 600)
        print(f"{name} over 64 cameras: variance {x.var(0).numpy().round(3)}")
    modes = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])
    two = GaussianMixturePrior({"y": (modes, torch.tensor([0.3, 0.3]), torch.tensor([0.5, 0.5])),
                                "": (torch.zeros(1, D), torch.tensor([1.5]), torch.tensor([1.0]))})
    cams = Cameras.make(torch.zeros(128), torch.zeros(128))
    for div in ("reverse_kl", "jensen_shannon", "forward_kl"):
        torch.manual_seed(0)
        g = make_guidance("fdiv", two, guidance_scale=1.0, t_max=0.98, lr=3e-3, divergence=div, ratio="exact",
                          camera_dropout=0.0)
        torch.manual_seed(1)
        x = optimise_particles(g, torch.randn(128, D) * 0.5 + torch.tensor([1.0, 0.0]), cams, 600)
        print(f"f-div {div}: fraction in the far mode {float((x[:, 0] < 0).float().mean()):.3f} (truth 0.5)")


if __name__ == "__main__":
    main()
