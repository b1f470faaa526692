"""Janus rate on ToyWorld, SDS vs SDS + Perp-Neg (Armandpour et al. 2023), over seeds, in one process.

    python benchmarks/perp_neg_janus.py [--seeds 8] [--scene nerf] [--suite full] [--out bench/perp-neg] [overrides ...]

Each run is the bench's Janus job (`dream3d.bench.bench_job`, kind "janus": "a blue cube with a yellow
front", the suite's fixed step budget for the scene: 400 steps in the full suite, whose Janus scene is the
NeRF; the quick suite's 200 Gaussian steps do not yet paint the marker) with view conditioning `text` (the
prompt's view word picks the prior's view bucket, which is what Perp-Neg's negatives need) on `front_biased`
data (toyworld.md: the Janus setting). Methods: the bench's `sds` and its variant `sds-perpneg`
(`guidance.perp_neg=true`). Runs go one after the other; results.json is rewritten after every run and a
finished run is not redone. Per run: the bench's Janus rate (share of the 5 back views, |azimuth| > 120,
painted with the marker), the mean marker share of the foreground over those views and over the 3 front
views (|azimuth| < 45; a finer reading, with the truth's for reference), silhouette IoU and colour error.
Prints a markdown table, mean +- std over seeds (std with ddof 1).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from dream3d.bench import bench_job, marker_shares
from dream3d.kernel.atomic_io import write_json

METHODS = ("sds", "sds-perpneg")
SETTING = ("prior.camera_distribution=front_biased",)


AZIMUTHS = torch.linspace(-180, 180, 17)[:-1]  # the bench's Janus cameras (elevation 15)
BACK, FRONT = AZIMUTHS.abs() > 120, AZIMUTHS.abs() < 45


def shares(run_dir: str) -> dict:
    """Marker shares of a finished run's renders at the 16 azimuths from -180 (and the truth's), and their
    means over the back and front views."""
    from dream3d.lifecycle import load_run

    trainer, _ = load_run(run_dir)
    run, gt = marker_shares(trainer.scene, trainer.cfg, AZIMUTHS)
    return {"back_marker_share": float(run[BACK].mean()), "front_marker_share": float(run[FRONT].mean()),
            "front_marker_share_gt": float(gt[FRONT].mean()), "marker_share_by_azimuth": [round(float(v), 3) for v in run],
            "marker_share_by_azimuth_gt": [round(float(v), 3) for v in gt]}


def summary(runs: list[dict]) -> str:
    def ms(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        return f"{statistics.mean(values):.3f} ± {sd:.3f}"

    truth = runs[0]["front_marker_share_gt"] if runs else float("nan")
    lines = [f"| method | seeds | Janus rate | back-view marker share | front-view marker share (truth {truth:.3f}) "
             "| silhouette IoU | colour error |", "|---|---|---|---|---|---|---|"]
    for m in METHODS:
        mine = [r for r in runs if r["method"] == m]
        if mine:
            cols = ("janus_rate", "back_marker_share", "front_marker_share", "silhouette_iou", "colour_error")
            lines.append(f"| {m} | {len(mine)} | " + " | ".join(ms([r[c] for r in mine]) for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--scene", default="nerf", choices=["gaussians", "nerf"])
    ap.add_argument("--suite", default="full", help="the bench suite whose step budget the runs use")
    ap.add_argument("--out", default="bench/perp-neg")
    ap.add_argument("overrides", nargs="*", help="key=value for every run (after the Janus setting)")
    args = ap.parse_args()
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    overrides = (*SETTING, *args.overrides)
    for seed in range(args.seeds):
        for method in METHODS:
            if any(r["method"] == method and r["seed"] == seed for r in runs):
                continue
            row = bench_job("janus", method, args.scene, "text", seed, folder, args.suite, overrides)
            row.update(shares(row["run_dir"]))
            runs.append(row)
            print(f"{method} seed {seed}: Janus rate {row['janus_rate']:.2f}, back / front marker share "
                  f"{row['back_marker_share']:.3f} / {row['front_marker_share']:.3f}, IoU {row['silhouette_iou']:.3f}, "
                  f"{row['wall_s']:.0f} s", flush=True)
            write_json(path, {"overrides": list(overrides), "scene": args.scene, "suite": args.suite, "runs": runs})
    table = summary(runs)
    (folder / "results.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
