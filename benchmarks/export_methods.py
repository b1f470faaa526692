"""Mesh export methods compared on the same trained scenes: for each ToyWorld shape, one run of a preset
(`dream3d run`, in a fresh process), then its scene exported with each `output.export.method` and measured
by `dream3d eval` (volumetric IoU, Chamfer distance to the true surface) plus the mean signed distance
(+ = outside) of the mesh's underside and sides (benchmarks/refine_variants.py's `offsets`).

    python benchmarks/export_methods.py [--preset configs/toy/sds-gaussians.yaml] [--prompts ...] [--out DIR]
        [--methods visibility hull density]

Prints one row per shape and method, then the means per method.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from quick_start import PROMPTS, timed_run  # noqa: E402
from refine_variants import offsets  # noqa: E402

from dream3d.evaluate import evaluate_run  # noqa: E402
from dream3d.export import export_scene  # noqa: E402
from dream3d.export.config import ISOSURFACE_METHODS  # noqa: E402
from dream3d.lifecycle import load_run  # noqa: E402
from dream3d.toyworld import parse_prompt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="configs/toy/sds-gaussians.yaml")
    ap.add_argument("--prompts", nargs="+", default=PROMPTS)
    ap.add_argument("--methods", nargs="+", default=[m for m in ISOSURFACE_METHODS if m != "auto"], choices=ISOSURFACE_METHODS)
    ap.add_argument("--out", help="folder for the runs (default: a temporary one)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="export-methods-"))
    print(f"{args.preset}: runs in {out}")
    print(f"{'prompt':<20}{'method':<12}{'vol IoU':>9}{'chamfer':>9}{'underside':>11}{'sides':>9}{'faces':>7}")
    rows = []
    for i, prompt in enumerate(args.prompts):
        folder = out / f"run-{i}"
        folder.mkdir(parents=True, exist_ok=True)
        run_dir = next(folder.iterdir()) if any(folder.iterdir()) else timed_run(
            args.preset, prompt, 0, ["output.turntable_frames=0"], folder)[0]
        trainer, _ = load_run(run_dir, ())
        for method in args.methods:
            cfg = dataclasses.replace(trainer.cfg.output.export, method=method, formats=["glb"])
            info = export_scene(trainer.scene, trainer.run_dir.model, cfg, tuple(trainer.cfg.camera.elevation_range))
            ev = evaluate_run(run_dir)
            under, sides = offsets(run_dir / "model.glb", parse_prompt(prompt).shape)
            row = {"prompt": prompt, "method": method, "volumetric_iou": ev["volumetric_iou"], "chamfer": ev["chamfer"],
                   "underside": under, "sides": sides, "faces": info.get("faces")}
            rows.append(row)
            print(f"{prompt:<20}{method:<12}{row['volumetric_iou']:>9.4f}{row['chamfer']:>9.4f}{under:>+11.4f}"
                  f"{sides:>+9.4f}{row['faces'] or 0:>7}", flush=True)
    print("\nmean")
    for method in args.methods:
        mine = [r for r in rows if r["method"] == method]
        print(f"{'':<20}{method:<12}" + "".join(f"{statistics.mean(r[k] for r in mine):>{w}.4f}" for k, w in
                                                (("volumetric_iou", 9), ("chamfer", 9), ("underside", 11), ("sides", 9))))


if __name__ == "__main__":
    main()
