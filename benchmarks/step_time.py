"""Milliseconds per training step, split into render / prior / other guidance / backward+step.

    python benchmarks/step_time.py [CONFIG] [--steps 30] [--warmup 5] [overrides ...]

All configurations are measured side by side in one process; compare rows, don't clock them.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from dream3d.config import load_config
from dream3d.runs import RunDir
from dream3d.trainer import Trainer


def measure(config: str, overrides: list[str], steps: int, warmup: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config, overrides + [f"output.out_dir={tmp}", "output.progress=false"])
        trainer = Trainer(cfg, RunDir.create(tmp, cfg.prompt, "bench", cfg.seed), progress=False)
        prior_time = [0.0]
        predict = trainer.prior.predict_eps

        def timed(*a, **k):
            t0 = time.perf_counter()
            out = predict(*a, **k)
            prior_time[0] += time.perf_counter() - t0
            return out

        trainer.prior.predict_eps = timed
        for _ in range(warmup):
            trainer.train_step()
        trainer.timings.clear()
        prior_time[0] = 0.0
        for _ in range(steps):
            trainer.train_step()
        t = {k: 1000 * v / steps for k, v in trainer.timings.items() if k != "steps"}
        prior = 1000 * prior_time[0] / steps
        return {"render": t["render"], "prior": prior, "guidance_other": t["guidance"] - prior,
                "backward_step": t["backward_step"], "total": t["render"] + t["guidance"] + t["backward_step"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default="configs/toy/sds-nerf.yaml")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--resolutions", default="32,64", help="training render resolutions to compare")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.config} {' '.join(args.overrides)}")
    print(f"{'resolution':>10} {'render':>8} {'prior':>8} {'guid.other':>10} {'bwd+step':>9} {'total':>8}  (ms/step)")
    for r in [int(v) for v in args.resolutions.split(",")]:
        m = measure(args.config, args.overrides + [f"train.resolution={r}", f"prior.resolution={min(r, 64)}"],
                    args.steps, args.warmup)
        print(f"{r:>10} {m['render']:>8.1f} {m['prior']:>8.1f} {m['guidance_other']:>10.1f} {m['backward_step']:>9.1f} "
              f"{m['total']:>8.1f}")


if __name__ == "__main__":
    main()
