"""The quick start, timed as a user meets it: `dream3d run configs/toy/sds-nerf.yaml prompt=...` in a
fresh process per run, over the five ToyWorld shapes with held-out colours, before and after the
fast defaults, side by side in one run.

    python benchmarks/quick_start.py [--seeds 0 1] [--prompts "a purple sphere" ...] [--only after] [KEY=VALUE ...]

"before" is the 1000-step defaults the issue started from, restored by overrides: no convergence
stop, decimation to the 30k face budget, a 1024² texture, the initial density blob of 10 (BEFORE
below). Both share what has no switch: the faster surface marching (box clipping, interpolated
depth) and the dense grid lookup (renderers.nerf.encoding.dense_lookup). Per run: wall seconds of the whole process
(imports included), the step training stopped at, silhouette IoU and colour error over held-out
cameras and the volumetric IoU of the exported GLB (`dream3d eval`), whether the GLB passes the
Khronos validator (when node and gltf-validator are installed, see tests/gltf_validator.py), and
the per-phase seconds from metrics.json. Prints one table per variant, medians, and the phases.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = ["a purple sphere", "an orange cube", "a yellow cylinder", "a purple cone", "an orange torus"]
BEFORE = ["train.convergence.enabled=false", "output.export.max_error=0", "output.export.texels_per_cell=0",
          "scene.blob_density=10"]
VARIANTS = {"before": BEFORE, "after": []}
PHASES = ["setup", "train", "convergence", "previews", "checkpoints", "export", "turntable"]


def glb_valid(path: Path) -> str:
    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    try:
        from gltf_validator import khronos_issues

        issues = khronos_issues(path)
    except BaseException as e:  # pytest.skip when the validator is missing
        return f"n/a ({type(e).__name__})"
    return "ok" if issues["numErrors"] == 0 else f"{issues['numErrors']} errors"


def timed_run(config: str, prompt: str, seed: int, overrides: list[str], out: Path) -> tuple[Path, float, dict, dict]:
    """`dream3d run config prompt=... seed=...` in a fresh process writing under `out`, then `dream3d eval`:
    (run folder, wall seconds of the process, eval results, metrics.json)."""
    from dream3d.evaluate import evaluate_run

    cmd = [sys.executable, "-m", "dream3d.cli", "run", config, f"prompt={prompt}", f"seed={seed}",
           f"output.out_dir={out}", "output.progress=false", *overrides]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    run_dir = next(out.iterdir())
    return run_dir, wall, evaluate_run(run_dir), json.loads((run_dir / "metrics.json").read_text())


def one_run(prompt: str, seed: int, overrides: list[str], out: Path) -> dict:
    run_dir, wall, ev, metrics = timed_run("configs/toy/sds-nerf.yaml", prompt, seed, overrides, out)
    export = metrics.get("export", {})
    return {"prompt": prompt, "seed": seed, "wall_s": round(wall, 1), "step": metrics["step"], "stop": metrics.get("stop"),
            "iou": round(ev["silhouette_iou"], 4), "colour_error": round(ev["colour_error"], 4),
            "volumetric_iou": round(ev["volumetric_iou"], 4), "faces": export.get("faces"),
            "texture": export.get("texture_size"), "glb": glb_valid(run_dir / "model.glb"),
            "phases": metrics.get("phases_s", {}),
            "startup_s": round(wall - metrics["wall_time_s"] - metrics.get("phases_s", {}).get("setup", 0.0), 1)}


def run_variants(prompts: list[str], seeds: list[int], variants: list[str], run, json_path: str | None) -> list[dict]:
    """Every prompt x seed x variant, each in a temporary folder: rows of {"variant", **run(variant,
    prompt, seed, folder)}, each printed as a JSON line when done; all of them written to json_path too."""
    rows = []
    for prompt in prompts:
        for seed in seeds:
            for name in variants:
                with tempfile.TemporaryDirectory() as tmp:
                    row = {"variant": name, **run(name, prompt, seed, Path(tmp))}
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "phases"}), flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=1))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", nargs="+", default=PROMPTS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--only", choices=list(VARIANTS), help="run one variant only")
    ap.add_argument("--json", help="also write every row to this file")
    ap.add_argument("overrides", nargs="*", help="config overrides for the 'after' runs (to try other settings)")
    args = ap.parse_args()
    VARIANTS["after"] = VARIANTS["after"] + args.overrides
    names = [n for n in VARIANTS if not args.only or n == args.only]
    rows = run_variants(args.prompts, args.seeds, names, lambda name, p, s, out: one_run(p, s, VARIANTS[name], out),
                        args.json)
    print(f"\n{'variant':<8}{'prompt':<20}{'seed':>5}{'wall s':>8}{'step':>6}{'IoU':>8}{'colour':>8}{'vol IoU':>9}"
          f"{'faces':>7}{'tex':>6}  glb")
    for r in rows:
        print(f"{r['variant']:<8}{r['prompt']:<20}{r['seed']:>5}{r['wall_s']:>8.1f}{r['step']:>6}{r['iou']:>8.4f}"
              f"{r['colour_error']:>8.4f}{r['volumetric_iou']:>9.4f}{r['faces']!s:>7}{r['texture']!s:>6}  {r['glb']}")
    print(f"\n{'variant':<8}{'median wall s':>14}{'mean IoU':>10}{'mean colour':>12}{'mean vol IoU':>13}")
    for name in VARIANTS:
        sel = [r for r in rows if r["variant"] == name]
        if sel:
            print(f"{name:<8}{statistics.median(r['wall_s'] for r in sel):>14.1f}"
                  f"{statistics.mean(r['iou'] for r in sel):>10.4f}{statistics.mean(r['colour_error'] for r in sel):>12.4f}"
                  f"{statistics.mean(r['volumetric_iou'] for r in sel):>13.4f}")
    print("\nmedian seconds per phase (export.* are parts of export; startup = imports and config before the run)")
    keys = ["startup"] + PHASES + sorted({k for r in rows for k in r["phases"] if k.startswith("export.")})
    print(f"{'phase':<16}" + "".join(f"{n:>10}" for n in VARIANTS if any(r['variant'] == n for r in rows)))
    for k in keys:
        vals = []
        for name in VARIANTS:
            sel = [r for r in rows if r["variant"] == name]
            if sel:
                got = [r["startup_s"] if k == "startup" else r["phases"].get(k, 0.0) for r in sel]
                vals.append(f"{statistics.median(got):>10.2f}")
        print(f"{k:<16}" + "".join(vals))


if __name__ == "__main__":
    main()
