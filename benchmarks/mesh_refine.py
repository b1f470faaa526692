"""Mesh refinement (issue 21) against today's export, side by side in one run: for each ToyWorld
shape, `dream3d run configs/toy/sds-nerf.yaml` (the NeRF's exported mesh) and
`dream3d run configs/toy/sds-nerf-refine.yaml` (the same NeRF, then DMTet geometry and texture
stages), each in a fresh process, measured by `dream3d eval` on held-out cameras. `--chain gaussians`
does the same from the Gaussian preset (sds-gaussians.yaml against sds-gaussians-refine.yaml).

    python benchmarks/mesh_refine.py [--chain nerf|gaussians] [--prompts "a purple sphere" ...] [--seeds 0]
        [KEY=VALUE ... for the refined runs]

Per run: wall seconds of the whole process, silhouette IoU and colour error over held-out cameras,
the exported GLB's volumetric IoU and Chamfer distance to the true surface (world units; the box
is 1.2 wide), its faces, whether it is watertight and in one piece (trimesh) and whether it passes
the Khronos validator. Prints one table, then the means and the refined/coarse ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import trimesh

sys.path.insert(0, str(Path(__file__).parent))
from quick_start import PROMPTS, glb_valid, run_variants, timed_run  # noqa: E402

CHAINS = {"nerf": {"nerf": "configs/toy/sds-nerf.yaml", "refined": "configs/toy/sds-nerf-refine.yaml"},
          "gaussians": {"gaussians": "configs/toy/sds-gaussians.yaml",
                        "refined": "configs/toy/sds-gaussians-refine.yaml"}}
MEASURES = ("wall_s", "iou", "colour_error", "volumetric_iou", "chamfer")


def one_run(config: str, prompt: str, seed: int, overrides: list[str], out: Path) -> dict:
    from dream3d.export import load_mesh

    run_dir, wall, ev, metrics = timed_run(config, prompt, seed, ["output.turntable_frames=0", *overrides], out)
    mesh = load_mesh(run_dir / "model.glb")
    pieces = len(trimesh.Trimesh(mesh.vertices, mesh.faces).split(only_watertight=False))
    return {"prompt": prompt, "seed": seed, "wall_s": round(wall, 1), "step": metrics["step"],
            "iou": round(ev["silhouette_iou"], 4), "colour_error": round(ev["colour_error"], 4),
            "volumetric_iou": round(ev["volumetric_iou"], 4), "chamfer": round(ev["chamfer"], 4),
            "faces": len(mesh.faces), "watertight": bool(trimesh.Trimesh(mesh.vertices, mesh.faces).is_watertight),
            "pieces": pieces, "glb": glb_valid(run_dir / "model.glb"), "phases": metrics.get("phases_s", {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chain", choices=list(CHAINS), default="nerf", help="the coarse stage: NeRF or Gaussians")
    ap.add_argument("--prompts", nargs="+", default=PROMPTS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--json", help="also write every row to this file")
    ap.add_argument("overrides", nargs="*", help="config overrides for the refined runs (to try other settings)")
    args = ap.parse_args()
    variants = CHAINS[args.chain]
    coarse = next(name for name in variants if name != "refined")
    rows = run_variants(args.prompts, args.seeds, list(variants), lambda name, p, s, out: one_run(
        variants[name], p, s, args.overrides if name == "refined" else [], out), args.json)
    print(f"\n{'variant':<10}{'prompt':<20}{'seed':>5}{'wall s':>8}{'step':>6}{'IoU':>8}{'colour':>8}{'vol IoU':>9}"
          f"{'chamfer':>9}{'faces':>7}  closed  pieces  glb")
    for r in rows:
        print(f"{r['variant']:<10}{r['prompt']:<20}{r['seed']:>5}{r['wall_s']:>8.1f}{r['step']:>6}{r['iou']:>8.4f}"
              f"{r['colour_error']:>8.4f}{r['volumetric_iou']:>9.4f}{r['chamfer']:>9.4f}{r['faces']:>7}  "
              f"{'yes' if r['watertight'] else 'no':<8}{r['pieces']:<8}{r['glb']}")
    means = {name: {m: statistics.mean(r[m] for r in rows if r["variant"] == name) for m in MEASURES} for name in variants}
    print(f"\n{'mean':<9}" + "".join(f"{m:>16}" for m in MEASURES))
    for name in variants:
        print(f"{name[:9]:<9}" + "".join(f"{means[name][m]:>16.4f}" for m in MEASURES))
    print(f"{'ratio':<9}" + "".join(f"{means['refined'][m] / means[coarse][m]:>16.3f}" for m in MEASURES)
          + f"   (refined / {coarse})")
    phases = sorted({k for r in rows if r["variant"] == "refined" for k in r["phases"]})
    print("\nrefined runs, median seconds per phase: " + ", ".join(
        f"{k} {statistics.median(r['phases'].get(k, 0.0) for r in rows if r['variant'] == 'refined'):.1f}" for k in phases))


if __name__ == "__main__":
    main()
