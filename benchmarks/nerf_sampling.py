"""NeRF sampling on the CPU, dense vs occupancy-grid skipping, side by side in one run.

    python benchmarks/nerf_sampling.py [--prompt "a red cube"] [--steps 300] [--eval-every 10] [key=value ...]

1. Trains the preset twice from the same seed, `scene.sampler=dense` (the vertical slice's
   path) and `scene.sampler=occupancy`, measuring silhouette IoU on held-out views every
   `--eval-every` steps (evaluation time excluded): training seconds to IoU 0.9 and the ratio.
2. On the converged occupancy-trained scene: ms per training step at 64x64 (render + backward,
   4 views) and rays/s for both samplers at equal sample spacing, interleaved repetitions, and
   the PSNR between the two samplers' images (same scene, same samples).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dream3d import bench
from dream3d.config import load_config
from dream3d.kernel.cameras import CameraSampler
from dream3d.toyworld.metrics import psnr


def step_ms(scene, cams, res: int, samplers: dict, reps: int) -> dict:
    """Median ms of render + backward per sampler, repetitions interleaved; also the images."""
    times = {k: [] for k in samplers}
    images = {}
    for _ in range(reps):
        for name, grid in samplers.items():
            scene.occupancy = grid
            scene.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            out = scene.render(cams, res, res, torch.Generator().manual_seed(0), train=True)
            (out.rgb.mean() + out.alpha.mean()).backward()
            times[name].append(1000 * (time.perf_counter() - t0))
            images[name] = out.rgb.detach()
    return {k: statistics.median(v) for k, v in times.items()}, images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", default="a red cube")
    ap.add_argument("--config", default="configs/toy/sds-nerf.yaml")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sampler in ("dense", "occupancy"):
            cfg = load_config(args.config, [f"prompt={args.prompt}", f"train.steps={args.steps}", "output.progress=false",
                                            "output.turntable_frames=0", "output.export.formats=[]",
                                            f"scene.sampler={sampler}", *args.overrides])
            rows[sampler] = bench.train_with_curve(cfg, Path(tmp), sampler, args.eval_every)
    scene = rows["occupancy"]["trainer"].scene
    grid = scene.occupancy
    cams = CameraSampler().sample(4, torch.Generator().manual_seed(1))
    ms, images = step_ms(scene, cams, 64, {"dense": None, "occupancy": grid}, args.reps)
    with torch.no_grad():
        evals = {}
        for name, g in (("dense", None), ("occupancy", grid)):
            scene.occupancy = g
            evals[name] = scene.render(bench.held_out(rows["occupancy"]["trainer"].cfg), 64, 64, train=False).rgb
    scene.occupancy = grid

    print(f"\n{args.prompt!r}, {args.config}, {args.steps} steps, 2 threads")
    print(f"{'sampler':<12}{'train s':>9}{'IoU':>7}{'colour':>8}{'IoU 0.9 at step':>17}{'s':>8}")
    for name, r in rows.items():
        step, secs = (r["to_iou_0.9"]["step"], r["to_iou_0.9"]["seconds"]) if r["to_iou_0.9"] else ("-", float("nan"))
        print(f"{name:<12}{r['train_s']:>9.1f}{r['iou']:>7.3f}{r['colour_error']:>8.3f}{step!s:>17}{secs:>8.1f}")
    if all(r["to_iou_0.9"] for r in rows.values()):
        print(f"time to IoU 0.9, dense / occupancy: "
              f"{rows['dense']['to_iou_0.9']['seconds'] / rows['occupancy']['to_iou_0.9']['seconds']:.2f}x")
    print(f"\nconverged scene (occupancy run, step {args.steps}); occupied cells: {grid.occupied_fraction:.1%}")
    rays = 4 * 64 * 64
    print(f"{'sampler':<12}{'ms/step 64x64':>15}{'rays/s':>10}")
    for name in ("dense", "occupancy"):
        print(f"{name:<12}{ms[name]:>15.1f}{rays / ms[name] * 1000:>10.0f}")
    print(f"speed-up: {ms['dense'] / ms['occupancy']:.2f}x; PSNR between the samplers' images: "
          f"training render {psnr(images['dense'], images['occupancy']):.1f} dB, "
          f"evaluation render {psnr(evals['dense'], evals['occupancy']):.1f} dB")
    for name, r in rows.items():
        print(name, "curve (step, train s, IoU):", r["curve"])


if __name__ == "__main__":
    main()
