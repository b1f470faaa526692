"""Batch throughput side by side in one process (issue 24): `--backend local` (one run at a
time, 1 thread) against Ray with 1 and with N workers (1 thread each), each with the prior kept in
the worker between runs (warm, the default) or built anew for every run (cold, `--fresh-prior`),
and the machine's own ceiling (how much faster N busy processes finish than one, N times over).

    python benchmarks/batch_scaling.py [--prompts 3] [--seeds 2] [--steps 150] [key=value ...]

Every mode runs the same prompts x seeds (a batch repeats prompts over seeds, as users' do) into
its own folder. Reported per mode: wall seconds, runs per minute, the mean seconds a run spent on
its prior (building it, plus its first training step, where the ToyWorld prior loads the shape's
multi-view dataset; from each run's metrics.json and logs/steps.csv) and the speed-up over local.
The ToyWorld dataset cache is filled first, so "cold" loads the prior from the disk cache, as a
user's second batch would. One Ray session serves every Ray mode (started once, outside the timing).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from dream3d.batch import run_batch

PROMPTS = ["a red cube", "a blue sphere", "a green cylinder", "a yellow cone", "a purple torus", "an orange cube"]


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


def prior_seconds(run_dir: Path) -> float:
    """The run's setup phase (building the prior and the scene) plus its first step (where the
    ToyWorld prior loads its dataset), in seconds."""
    setup = json.loads((run_dir / "metrics.json").read_text())["phases_s"]["setup"]
    with open(run_dir / "logs" / "steps.csv", newline="") as f:
        first = next(csv.DictReader(f))
    return setup + float(first["step_ms"]) / 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=3, help=f"distinct prompts (at most {len(PROMPTS)})")
    p.add_argument("--seeds", type=int, default=2, help="seeds per prompt")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--config", default="configs/toy/sds-nerf.yaml")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    import ray

    cores = os.cpu_count() or 1
    seeds = list(range(args.seeds))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.txt"
        prompts.write_text("\n".join(PROMPTS[:args.prompts]) + "\n")
        common = (f"train.steps={args.steps}", *args.overrides)
        run_batch(prompts, args.config, ("train.steps=1", "output.turntable_frames=0", "output.export.formats=[]",
                                         *args.overrides), "local", name="fill-cache", out=tmp, progress=False)
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
        modes = [("local, 1 thread", "local", None, True), ("ray, 1 worker, cold prior", "ray", 1, False),
                 ("ray, 1 worker, warm prior", "ray", 1, True), (f"ray, {cores} workers, cold prior", "ray", cores, False),
                 (f"ray, {cores} workers, warm prior", "ray", cores, True)]
        try:
            for label, backend, workers, keep in modes:
                t0 = time.perf_counter()
                index = run_batch(prompts, args.config, common, backend, seeds=seeds, name=label.replace(",", ""),
                                  out=tmp, progress=False, workers=workers, keep_prior=keep)
                wall = time.perf_counter() - t0
                finished = [r for r in index["runs"] if r["status"] == "finished"]
                if len(finished) < len(index["runs"]):
                    raise SystemExit(f"{label}: a run failed: {next(r['error'] for r in index['runs'] if r['error'])}")
                rows.append({"mode": label, "runs": len(index["runs"]), "finished": len(finished), "wall_s": round(wall, 1),
                             "runs_per_min": round(60 * len(finished) / wall, 2),
                             "prior_s_mean": round(statistics.mean(prior_seconds(Path(r["run_dir"])) for r in finished), 2)})
                print(rows[-1], flush=True)
        finally:
            ray.shutdown()
    ceiling = parallel_ceiling(cores)
    base = rows[0]["runs_per_min"]
    print(f"\n{args.prompts} prompts x {args.seeds} seeds of {args.config} at {args.steps} steps, {cores} cores; "
          f"machine ceiling: {cores} copies of a CPU-bound loop give {ceiling:.2f}x the throughput of one\n")
    print("| mode | wall (s) | runs / min | prior per run (s) | vs local |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['wall_s']} | {r['runs_per_min']} | {r['prior_s_mean']} | "
              f"{r['runs_per_min'] / base:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "ceiling": ceiling}, indent=2))


if __name__ == "__main__":
    main()
