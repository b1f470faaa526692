"""Wall time to reach a silhouette IoU on ToyWorld, NeRF vs Gaussians (or any presets), in one run.

    python benchmarks/time_to_quality.py [--prompt "a red cube"] [--target 0.9] [--eval-every 50]
        [--configs configs/toy/sds-nerf.yaml configs/toy/sds-gaussians.yaml]

Each preset trains in this process, one after the other; every `--eval-every` steps the
silhouette IoU and colour error over 8 held-out cameras are measured (that time is excluded).
Prints training seconds to first reach the target, the final numbers and the ratio.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from dream3d import bench
from dream3d.config import load_config


def measure(config: str, prompt: str, target: float, eval_every: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config, [f"prompt={prompt}", "output.progress=false", "output.turntable_frames=0",
                                   "train.convergence.enabled=false", *overrides])
        r = bench.train_with_curve(cfg, Path(tmp), "ttq", eval_every, target)
        reached = (r["to_iou_0.9"]["step"], r["to_iou_0.9"]["seconds"]) if r["to_iou_0.9"] else None
        return {"config": config, "steps": cfg.train.steps, "train_s": r["train_s"], "iou": r["iou"],
                "colour_error": r["colour_error"], "reached": reached, "curve": r["curve"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", default="a red cube")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--configs", nargs="+", default=["configs/toy/sds-nerf.yaml", "configs/toy/sds-gaussians.yaml"])
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = [measure(c, args.prompt, args.target, args.eval_every, args.overrides) for c in args.configs]
    print(f"\n{args.prompt!r}, target silhouette IoU {args.target}")
    print(f"{'config':<36}{'steps':>6}{'train s':>9}{'IoU':>7}{'colour':>8}{'to target: step':>17}{'s':>8}")
    for r in rows:
        step, secs = r["reached"] or ("-", float("nan"))
        print(f"{r['config']:<36}{r['steps']:>6}{r['train_s']:>9.1f}{r['iou']:>7.3f}{r['colour_error']:>8.3f}"
              f"{step!s:>17}{secs:>8.1f}")
    if len(rows) == 2 and all(r["reached"] for r in rows):
        print(f"time to target, {rows[0]['config']} / {rows[1]['config']}: {rows[0]['reached'][1] / rows[1]['reached'][1]:.2f}x")
    for r in rows:
        print(r["config"], "curve (step, train s, IoU):", r["curve"])


if __name__ == "__main__":
    main()
