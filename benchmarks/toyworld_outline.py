"""Does the ToyWorld prior draw an object larger than it is? For each shape, true renders x_0 [B,3,r,r] from
random training cameras are noised to x_t at a few timesteps and denoised by the prior's exact posterior mean
D(x_t) (camera-conditioned, as the presets run it); the table compares D's non-white mass, sum(1 - D) over
pixels and channels, with the renders' own (on the white background it grows with the outline: a cube drawn
0.02 m larger on every side has 10% more). Mesh refinement grows the visible outline by about that much
(README: Mesh refinement); a ratio near 1 says the prior is not why.

    python benchmarks/toyworld_outline.py [--prompts ...] [--cameras 64] [--num-views 2048]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from quick_start import PROMPTS  # noqa: E402

from dream3d.kernel.cameras import CameraSampler  # noqa: E402
from dream3d.toyworld import parse_prompt  # noqa: E402
from dream3d.toyworld.dataset import render_gt  # noqa: E402
from guidance.priors.toyworld import ToyWorldPrior, ToyWorldPriorConfig  # noqa: E402

TIMESTEPS = (20, 100, 300, 600)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", nargs="+", default=PROMPTS)
    ap.add_argument("--cameras", type=int, default=64)
    ap.add_argument("--num-views", type=int, default=ToyWorldPriorConfig.num_views)
    args = ap.parse_args()
    prior = ToyWorldPrior(ToyWorldPriorConfig(num_views=args.num_views))
    r = prior.cfg.resolution
    cams = CameraSampler().sample(args.cameras, torch.Generator().manual_seed(1))
    print(f"{'prompt':<22}" + "".join(f"{f'mass t={t}':>13}{'|D-x0|':>9}" for t in TIMESTEPS))
    for prompt in args.prompts:
        img, _ = render_gt(parse_prompt(prompt), cams, r)
        x0, emb = img * 2 - 1, prior.embed(prompt)
        row = f"{prompt:<22}"
        for t in TIMESTEPS:
            tt = torch.full((len(cams),), t)
            a, s = prior.coefficients(tt, 4)
            x_t = a * x0 + s * torch.randn(x0.shape, generator=torch.Generator().manual_seed(t))
            d = prior.denoise(x_t, tt, emb, cams)
            mass = float((1 - (d + 1) / 2).clamp(min=0).sum() / (1 - img).sum())
            row += f"{mass:>13.4f}{float((d - x0).abs().mean()):>9.4f}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
