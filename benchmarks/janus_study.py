"""Janus studies on ToyWorld, over seeds, in one process: Perp-Neg, and the multi-view prior.

    python benchmarks/janus_study.py --study perp-neg|multiview [--seeds 8] [--scene nerf] [--suite full] [--out DIR] \\
        [overrides ...]

Each run is the bench's Janus job (`dream3d.bench.bench_job`, kind "janus": "a blue cube with a yellow
front", the suite's fixed step budget for the scene: 400 steps in the full suite, whose Janus scene is the
NeRF; the quick suite's 200 Gaussian steps do not yet paint the marker). Studies (cells: bench method and
view conditioning):
- `perp-neg`: `sds` vs its variant `sds-perpneg` (`guidance.perp_neg=true`), view conditioning `text` (the
  prompt's view word picks the prior's view bucket, which is what Perp-Neg's negatives need) on
  `front_biased` data (toyworld.md).
- `multiview`: the bench's Janus setting (view conditioning `none`, the dataset's uniform cameras) for
  single-view `sds` and `vsd`, and single-view `sds` on `front_biased` data (photo collections' bias, which
  the multi-view prior's 3D-rendered data do not have); single-view `sds` with `camera` conditioning (the
  fidelity reference); the multi-view prior (`prior.views=4`, bench variants `sds-mv`, `asd-mv`) with
  `camera` (MVDream: each view's camera) and `none` (only the views' relative azimuths, so the object may
  settle turned).
Runs go one after the other; results.json is rewritten after every run and a finished run is not redone.
Per run: the bench's Janus rate (share of the 5 back views, |azimuth| > 120, painted with the marker), the
mean marker share of the foreground over those views and over the 3 front views (|azimuth| < 45; a finer
reading, with the truth's for reference), the two-faced rate (share of the 8 pairs of opposite views among
16 that both show the marker: 0 for any single front, however the object turned), silhouette IoU and colour
error over the bench's held-out views (the back included).
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

FRONT_BIASED = ("prior.camera_distribution=front_biased",)  # single-view data as photo collections: mostly fronts
# study -> cells as (bench method, view conditioning, overrides of the cell's runs)
STUDIES = {
    "perp-neg": [("sds", "text", FRONT_BIASED), ("sds-perpneg", "text", FRONT_BIASED)],
    "multiview": [("sds", "none", ()), ("vsd", "none", ()), ("sds", "camera", ()), ("sds-mv", "camera", ()),
                  ("sds-mv", "none", ()), ("asd-mv", "camera", ()), ("sds", "none", FRONT_BIASED)],
}


AZIMUTHS = torch.linspace(-180, 180, 17)[:-1]  # the bench's Janus cameras (elevation 15)
BACK, FRONT = AZIMUTHS.abs() > 120, AZIMUTHS.abs() < 45


def shares(run_dir: str, marker_share: float = 0.05) -> dict:
    """Marker shares of a finished run's renders at the 16 azimuths from -180 (and the truth's), their means
    over the back and front views, and the share of opposite pairs both showing the marker (>= 5%)."""
    from dream3d.lifecycle import load_run

    trainer, _ = load_run(run_dir)
    run, gt = marker_shares(trainer.scene, trainer.cfg, AZIMUTHS)
    shown = run >= marker_share
    half = len(AZIMUTHS) // 2
    return {"back_marker_share": float(run[BACK].mean()), "front_marker_share": float(run[FRONT].mean()),
            "two_faced_rate": float((shown[:half] & shown[half:]).float().mean()),
            "front_marker_share_gt": float(gt[FRONT].mean()), "marker_share_by_azimuth": [round(float(v), 3) for v in run],
            "marker_share_by_azimuth_gt": [round(float(v), 3) for v in gt]}


def label(method: str, vc: str, overrides: tuple[str, ...]) -> str:
    """A cell's name: method and view conditioning, and ", front-biased data" for that setting."""
    return f"{method} {vc}" + (", front-biased data" if FRONT_BIASED[0] in overrides else "")


def cell(row: dict) -> str:
    """A results row's cell (rows written before cells had names: from the method and its config)."""
    biased = row["config"]["prior"].get("camera_distribution") == "front_biased"
    return row.get("cell") or label(row["method"], row["view_conditioning"], FRONT_BIASED if biased else ())


def summary(runs: list[dict], cells: list[tuple[str, str, tuple[str, ...]]]) -> str:
    def ms(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        return f"{statistics.mean(values):.3f} ± {sd:.3f}"

    truth = runs[0]["front_marker_share_gt"] if runs else float("nan")
    lines = [f"| method, view cond. | seeds | Janus rate | two-faced rate | back-view marker share | front-view marker "
             f"share (truth {truth:.3f}) | silhouette IoU | colour error |", "|---|---|---|---|---|---|---|---|"]
    for m, vc, extra in cells:
        mine = [r for r in runs if cell(r) == label(m, vc, extra)]
        if mine:
            cols = ("janus_rate", "two_faced_rate", "back_marker_share", "front_marker_share", "silhouette_iou",
                    "colour_error")
            lines.append(f"| {label(m, vc, extra)} | {len(mine)} | "
                         + " | ".join(ms([r[c] for r in mine]) if all(c in r for r in mine) else "-" for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="perp-neg", choices=list(STUDIES))
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--scene", default="nerf", choices=["gaussians", "nerf"])
    ap.add_argument("--suite", default="full", help="the bench suite whose step budget the runs use")
    ap.add_argument("--out", help="results folder (default bench/<study>)")
    ap.add_argument("--only", nargs="*", help="run only these cells (their names in the table)")
    ap.add_argument("overrides", nargs="*", help="key=value for every run (after the cell's own)")
    args = ap.parse_args()
    cells = [c for c in STUDIES[args.study] if not args.only or label(*c) in args.only]
    folder = Path(args.out or f"bench/{args.study}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    for seed in range(args.seeds):
        for method, vc, extra in cells:
            name = label(method, vc, extra)
            if any(cell(r) == name and r["seed"] == seed for r in runs):
                continue
            row = bench_job("janus", method, args.scene, vc, seed, folder, args.suite, (*extra, *args.overrides))
            row.update(cell=name, **shares(row["run_dir"]))
            runs.append(row)
            print(f"{name} seed {seed}: Janus rate {row['janus_rate']:.2f}, two-faced {row['two_faced_rate']:.2f}, "
                  f"back / front marker share {row['back_marker_share']:.3f} / {row['front_marker_share']:.3f}, "
                  f"IoU {row['silhouette_iou']:.3f}, {row['wall_s']:.0f} s", flush=True)
            write_json(path, {"study": args.study, "overrides": list(args.overrides), "scene": args.scene,
                              "suite": args.suite, "runs": runs})
    table = summary(runs, cells)
    (folder / "results.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
