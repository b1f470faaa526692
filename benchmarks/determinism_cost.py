"""What PyTorch's deterministic algorithms cost a CPU run (the trainer turns them on for CPU runs): the same
short runs timed with them and without (the trainer's call made a no-op), each set in its own process, side by
side in one invocation.

    python benchmarks/determinism_cost.py [--steps 150]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

RUNS = [("configs/toy/sds-nerf.yaml", []), ("configs/toy/sds-gaussians.yaml", []),
        ("configs/toy/sds-nerf-refine.yaml", ["train.steps=20", "refine.texture_steps=0"])]

CHILD = """
import json, sys, time, torch
mode, steps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "without":
    torch.use_deterministic_algorithms = lambda *a, **k: None
from dream3d.config import load_config
from dream3d.lifecycle import start_run
times = {}
for preset, extra in json.loads(sys.argv[4]):
    cfg = load_config(preset, [f"train.steps={steps}", "output.turntable_frames=0", "output.export.formats=[]",
                               f"output.out_dir={out}", "output.progress=false", "output.val_every=1000",
                               "train.convergence.enabled=false", *extra])
    t = time.perf_counter()
    start_run(cfg)
    times[preset + (" " + " ".join(extra) if extra else "")] = time.perf_counter() - t
print(json.dumps(times))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    args = ap.parse_args()
    results = {}
    for mode in ("without", "with"):
        with tempfile.TemporaryDirectory() as out:
            proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(args.steps), out, json.dumps(RUNS)],
                                  capture_output=True, text=True, check=True)
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{'run':<70}{'without s':>10}{'with s':>10}{'with/without':>14}")
    for name in results["with"]:
        a, b = results["without"][name], results["with"][name]
        print(f"{name:<70}{a:>10.1f}{b:>10.1f}{b / a:>14.2f}")


if __name__ == "__main__":
    main()
