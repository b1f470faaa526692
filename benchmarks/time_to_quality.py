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
import time

import torch

from dream3d.bench import held_out, silhouette_quality
from dream3d.config import load_config
from dream3d.runs import RunDir
from dream3d.toyworld import parse_prompt, render_gt
from dream3d.trainer import Trainer


def measure(config: str, prompt: str, target: float, eval_every: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config, [f"prompt={prompt}", f"output.out_dir={tmp}", "output.progress=false", *overrides])
        trainer = Trainer(cfg, RunDir.create(tmp, cfg.prompt, "bench", cfg.seed), progress=False)
        cams = held_out(cfg)
        gt, mask = render_gt(parse_prompt(prompt), cams, 64, parse_prompt(prompt).colours[0])
        train_time, reached, curve = 0.0, None, []
        while trainer.step < cfg.train.steps:
            t0 = time.perf_counter()
            for _ in range(min(eval_every, cfg.train.steps - trainer.step)):
                trainer.train_step()
            train_time += time.perf_counter() - t0
            iou, err = silhouette_quality(trainer.scene, cams, gt, mask)
            curve.append((trainer.step, round(train_time, 1), round(iou, 3)))
            if reached is None and iou >= target:
                reached = (trainer.step, train_time)
        return {"config": config, "steps": cfg.train.steps, "train_s": train_time, "iou": iou, "colour_error": err,
                "reached": reached, "curve": curve}


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
