"""The web UI's admission estimate (dream3d/cost.py) against measured runs, side by side.

    python benchmarks/request_cost.py [--only LABEL ...]

Each config runs end to end (dataset, training, previews, turntable, export) in its own
process with a fresh dataset cache; the table prints estimated and measured wall time and peak
RSS and their ratios (estimate / measured: >= 1 means the estimate is an upper bound). Machines
are noisy: compare the ratios, not the seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CASES = {
    "nerf-default-200": ("configs/toy/sds-nerf.yaml", ["train.steps=200"]),
    "nerf-res64-b4-100": ("configs/toy/sds-nerf.yaml", ["train.steps=100", "train.resolution=64"]),
    "nerf-views4096-50": ("configs/toy/sds-nerf.yaml", ["train.steps=50", "prior.num_views=4096",
                                                        "prior.dataset_resolution=96"]),
    "nerf-tex2048-50": ("configs/toy/sds-nerf.yaml", ["train.steps=50", "output.export.texture_size=2048"]),
    "nerf-grid256-nodecimate-50": ("configs/toy/sds-nerf.yaml", ["train.steps=50", "output.export.resolution=256",
                                                                 "output.export.max_faces=0"]),
    "gaussians-default-200": ("configs/toy/sds-gaussians.yaml", ["train.steps=200"]),
    "gaussians-res64-100": ("configs/toy/sds-gaussians.yaml", ["train.steps=100", "train.resolution=64"]),
}

CHILD = """
import json, resource, sys, time
from collections import defaultdict
from dream3d.config import load_config
from dream3d.lifecycle import start_run
from dream3d.trainer import Trainer
from guidance.priors.toyworld import ToyWorldPrior

phases = defaultdict(float)

def timed(cls, name, phase):
    real = getattr(cls, name)
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            phases[phase] += time.perf_counter() - t0
    setattr(cls, name, wrapper)

timed(ToyWorldPrior, "_shape", "dataset")
timed(Trainer, "save_preview", "previews")
timed(Trainer, "save_turntable", "turntable")
timed(Trainer, "export", "export")
cfg = load_config(sys.argv[1], json.loads(sys.argv[2]))
t0 = time.perf_counter()
start_run(cfg, "cost", progress=False)
total = time.perf_counter() - t0
phases["training"] = total - sum(phases.values())
print(json.dumps({"seconds": total, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "phases": phases}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(CASES))
    args = ap.parse_args(argv)
    from dream3d.config import load_config
    from dream3d.cost import estimate_cost

    rows = []
    for label in args.only or list(CASES):
        config, overrides = CASES[label]
        with tempfile.TemporaryDirectory() as tmp:
            overrides = overrides + [f"output.out_dir={tmp}/runs", "output.progress=false"]
            est = estimate_cost(load_config(config, overrides))
            env = {**os.environ, "DREAM3D_CACHE": f"{tmp}/cache"}
            out = subprocess.run([sys.executable, "-c", CHILD, config, json.dumps(overrides)], env=env,
                                 capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{label}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            measured = json.loads(out.stdout.strip().splitlines()[-1])
            wall, rss = measured["seconds"], measured["rss"]  # the run itself (after imports), the child's peak RSS
            print("  phases (s):", ", ".join(f"{k} est {est.phases.get(k, (0, 0))[0]:.1f} / meas {v:.1f}"
                                             for k, v in measured["phases"].items()), flush=True)
        rows.append((label, est.seconds, wall, est.peak_bytes, rss, est.largest(2)))
        print(f"{label}: estimated {est.seconds:.0f} s / {est.peak_bytes / 2**30:.2f} GiB, measured {wall:.0f} s / "
              f"{rss / 2**30:.2f} GiB", flush=True)
    print("\n| config | est. s | measured s | est/meas | est. GiB | measured GiB | est/meas | largest phases (est.) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, es, ms, eb, mb, top in rows:
        print(f"| {label} | {es:.0f} | {ms:.0f} | {es / ms:.2f} | {eb / 2**30:.2f} | {mb / 2**30:.2f} | "
              f"{eb / mb:.2f} | {top} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
