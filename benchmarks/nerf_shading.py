"""NeRF shading and normals on the CPU: what they cost per step and what they do to quality, side by side.

    python benchmarks/nerf_shading.py [--prompt "a red cube"] [--steps 400] [--orientation 0.01] [key=value ...]

1. Trains the preset three times from the same seed: plain albedo renders (the default),
   DreamFusion's random shading (`scene.shading=diffuse`, albedo-only for the first quarter of the
   steps), and shading plus the orientation loss; silhouette IoU and colour error on held-out views
   against ToyWorld's ground truth, training seconds to IoU 0.9.
2. On the converged albedo scene: ms per 64x64 training step (render + backward, 4 views) with
   albedo renders, with shading and autograd normals, and with finite-difference normals,
   repetitions interleaved.
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


def step_ms(scene, cams, res: int, variants: dict, reps: int) -> dict:
    """Median ms of render + backward per variant (a dict of scene.cfg field overrides)."""
    base = dict(vars(scene.cfg))
    times = {k: [] for k in variants}
    for _ in range(reps):
        for name, changes in variants.items():
            for k, v in {**base, **changes}.items():
                setattr(scene.cfg, k, v)
            scene.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            out = scene.render(cams, res, res, torch.Generator().manual_seed(0), train=True)
            (out.rgb.mean() + sum(scene.regularizers(out, scene.step).values(), torch.tensor(0.0))).backward()
            times[name].append(1000 * (time.perf_counter() - t0))
    for k, v in base.items():
        setattr(scene.cfg, k, v)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", default="a red cube")
    ap.add_argument("--config", default="configs/toy/sds-nerf.yaml")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--orientation", type=float, default=0.01, help="orientation loss weight of the third run")
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    shaded = ["scene.shading=diffuse", f"scene.ambient_only_steps={args.steps // 4}"]
    runs = {"albedo": [], "diffuse": shaded, "diffuse+orientation": [*shaded, f"scene.orientation_weight={args.orientation}"]}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in runs.items():
            cfg = load_config(args.config, [f"prompt={args.prompt}", f"train.steps={args.steps}", "output.progress=false",
                                            "output.turntable_frames=0", "output.export.formats=[]", *extra,
                                            *args.overrides])
            rows[name] = bench.train_with_curve(cfg, Path(tmp), name.replace("+", "-"), args.eval_every)
    scene = rows["albedo"]["trainer"].scene
    scene.begin_step(args.steps)
    cams = CameraSampler().sample(4, torch.Generator().manual_seed(1))
    ms = step_ms(scene, cams, 64, {
        "albedo": {},
        "diffuse, autograd normals": {"shading": "diffuse", "ambient_only_steps": 0, "normal_method": "analytic"},
        "diffuse, finite differences": {"shading": "diffuse", "ambient_only_steps": 0,
                                        "normal_method": "finite_difference"},
    }, args.reps)

    print(f"\n{args.prompt!r}, {args.config}, {args.steps} steps, {torch.get_num_threads()} threads")
    print(f"{'run':<22}{'train s':>9}{'IoU':>7}{'colour':>8}{'sharpness':>11}{'IoU 0.9 at step':>17}")
    for name, r in rows.items():
        step = r["to_iou_0.9"]["step"] if r["to_iou_0.9"] else "-"
        print(f"{name:<22}{r['train_s']:>9.1f}{r['iou']:>7.3f}{r['colour_error']:>8.3f}{r['sharpness']:>11.2f}{step!s:>17}")
    print("\nms per 64x64 training step (render + backward, 4 views), converged albedo scene:")
    for name, v in ms.items():
        print(f"{name:<30}{v:>8.1f}  ({v / ms['albedo']:.2f}x)")


if __name__ == "__main__":
    main()
