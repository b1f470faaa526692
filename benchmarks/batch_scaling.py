"""Wall time of one small batch, side by side in one process: `--backend local` (one run at a
time, with 1 and with all torch threads) vs Ray packing single-thread runs onto the cores, and
the machine's own ceiling (how much faster N busy processes finish than one, N times over).

    python benchmarks/batch_scaling.py [--runs 4] [--steps 100] [key=value ...]

Caches (ToyWorld datasets) are warmed first so every mode pays the same.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from dream3d.batch import run_batch


def _busy(_=None) -> float:
    t0 = time.perf_counter()
    x = 0
    for i in range(20_000_000):
        x += i
    return time.perf_counter() - t0


def parallel_ceiling(cores: int) -> float:
    """Throughput of `cores` copies of a CPU-bound loop relative to one copy: what any
    scheduler can get from this machine (2 means two truly independent cores)."""
    from multiprocessing import Pool

    one = _busy()
    with Pool(cores) as pool:
        t0 = time.perf_counter()
        pool.map(_busy, range(cores))
        many = time.perf_counter() - t0
    return cores * one / many


PROMPTS = ["a red cube", "a blue sphere", "a green cylinder", "a yellow cone", "a purple torus", "an orange cube"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--config", default="configs/toy/sds-nerf.yaml")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.txt"
        prompts.write_text("\n".join((PROMPTS * args.runs)[:args.runs]) + "\n")
        common = (f"train.steps={args.steps}", *args.overrides)
        run_batch(prompts, args.config, ("train.steps=1", "output.turntable_frames=0", "output.export.formats=[]",
                                         *args.overrides), "local", name="warm", out=tmp, progress=False)
        modes = [("local, 1 thread", "local", 1), (f"local, {cores} threads", "local", cores),
                 (f"ray, {cores} runs x 1 thread", "ray", 1)]
        rows = []
        for label, backend, cpus in modes:
            t0 = time.perf_counter()
            index = run_batch(prompts, args.config, common, backend, cpus_per_run=cpus, name=label.replace(",", ""),
                              out=tmp, progress=False)
            wall = time.perf_counter() - t0
            ok = sum(r["status"] == "finished" for r in index["runs"])
            rows.append((label, wall, ok))
    base = rows[1][1]
    print(f"{args.runs} runs of {args.config} at {args.steps} steps, {cores} cores")
    print(f"machine ceiling: {cores} copies of a CPU-bound loop give {parallel_ceiling(cores):.2f}x the throughput of one")
    print(f"{'mode':<28}{'wall s':>8}{'finished':>10}{'speed-up vs local all threads':>32}")
    for label, wall, ok in rows:
        print(f"{label:<28}{wall:8.1f}{ok:>10}{base / wall:31.2f}x")


if __name__ == "__main__":
    main()
