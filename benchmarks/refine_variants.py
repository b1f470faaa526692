"""Mesh-refinement settings compared from one coarse stage: `configs/toy/sds-nerf-refine.yaml` runs once for the
prompt and stops after the first geometry step (its checkpoint is the base); each variant is a copy of that
folder whose config (config.yaml and the checkpoint's own) gets the variant's refine.* values, resumed to the
end and measured by `dream3d eval`. Learning rates are set in the checkpoint's optimiser state too.
`prior.*` settings may differ as well: the prior is built again on resume, so they take effect in the mesh
stages only (Magic3D refines against a higher-resolution prior than its coarse stage's; a narrower camera window,
`prior.window_azimuth`, sharpens what the prior's posterior averages over).

    python benchmarks/refine_variants.py --prompt "a purple cone" [--preset YAML] [--out DIR] "" \\
        "refine.mesh.volume_weight=1.0,refine.mesh.lr_sdf=0.001" ...

Each variant is one comma-separated list of KEY=VALUE ("" = the preset as is). A variant differs from a full
run of the same settings only in that first geometry step, made with the preset's. Prints one row each:
silhouette IoU, colour error, volumetric IoU, Chamfer distance, and two offsets: the mean signed distance to the
true surface (+ = outside) of the mesh's downward-facing part (normal y < -0.8), the part the training cameras
(elevation -10 to 45 degrees) see least, and of its sides (|normal y| <= 0.8). `--measure-only` measures the
variants an earlier run left in --out again. The first row, "(geometry start)", is the base's mesh as the
geometry stage starts from it (the coarse stage's surface on the DMTet grid, after one step).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch
import trimesh
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dream3d.config import load_config, to_dict  # noqa: E402
from dream3d.evaluate import evaluate_run  # noqa: E402
from dream3d.export import load_mesh  # noqa: E402
from dream3d.lifecycle import resume_run, start_run  # noqa: E402
from dream3d.runs import RunDir  # noqa: E402
from dream3d.toyworld import parse_prompt  # noqa: E402
from dream3d.toyworld.geometry import signed_distance  # noqa: E402

PRESET = ROOT / "configs/toy/sds-nerf-refine.yaml"


def base_run(prompt: str, out: Path, preset: Path = PRESET) -> Path:
    """The preset's run for `prompt`, stopped after its first geometry step (reused when already there)."""
    folder = out / "base"
    cfg = load_config(preset, [f"prompt={prompt}", f"output.out_dir={out}", "output.name=base",
                               "output.turntable_frames=0", "output.progress=false"])
    if RunDir(folder).checkpoint.exists():
        made_with = RunDir(folder).load_checkpoint()["config"]
        if made_with["prompt"] != prompt:
            raise SystemExit(f"{folder} is the base run of {made_with['prompt']!r}, not {prompt!r}: use another --out")
        if made_with != to_dict(cfg):  # a preset edited since: its "" variant would measure the old one
            raise SystemExit(f"{folder} was made with other settings than {preset} has now: use another --out")
        return folder
    stop = threading.Event()
    start_run(cfg, stop=stop, on_step=lambda stats: stats["stage"] == "geometry" and stop.set())
    return folder


def set_key(tree: dict, key: str, value) -> None:
    *path, last = key.split(".")
    for part in path:
        tree = tree[part]
    tree[last] = value


def run_variant(base: Path, out: Path, index: int, items: list[tuple[str, object]]) -> Path:
    folder = RunDir(out / f"variant-{index}")
    if folder.path.exists():
        shutil.rmtree(folder.path)
    shutil.copytree(base, folder.path)
    state = folder.load_checkpoint()
    raw = yaml.safe_load(folder.config.read_text())
    for key, value in items:
        if not key.startswith(("refine.", "prior.")) or key == "prior.name":
            raise SystemExit(f"{key}: only refine.* and prior.* settings (not prior.name) can differ from the base "
                             "run's coarse stage")
        set_key(state["config"], key, value)
        set_key(raw, key, value)
        if key.startswith("refine.mesh.lr_"):  # the optimiser state holds the rates in force
            for group in state["optimizer"]["param_groups"]:
                if group.get("name") == key.removeprefix("refine.mesh.lr_"):
                    group["lr"] = value
    folder.save_checkpoint(state)
    folder.config.write_text(yaml.safe_dump(raw, sort_keys=False))
    resume_run(folder.path, progress=False)
    return folder.path


def geometry_start(base: Path, out: Path) -> Path:
    """A copy of the base with its mesh exported as it is (after the first geometry step)."""
    from dream3d.export import export_scene
    from dream3d.lifecycle import load_run

    folder = out / "start"
    if not folder.exists():
        shutil.copytree(base, folder)
        trainer, _ = load_run(folder, ())
        export_scene(trainer.scene, trainer.run_dir.model, trainer.cfg.output.export, tuple(trainer.cfg.camera.elevation_range))
    return folder


def offsets(glb: Path, shape: str, n: int = 20000) -> tuple[float, float]:
    """Mean signed distance (world units, + outside) to the true surface of the mesh's downward-facing part
    (normal y < -0.8) and of its sides (|normal y| <= 0.8)."""
    m = load_mesh(glb)
    mesh = trimesh.Trimesh(m.vertices, m.faces, process=False)
    points, faces = trimesh.sample.sample_surface(mesh, n, seed=0)
    signed = signed_distance(shape, torch.from_numpy(points)).numpy()  # exact (before 2026-12-04: to a marching-cubes truth)
    ny = mesh.face_normals[faces][:, 1]
    return float(signed[ny < -0.8].mean()), float(signed[np.abs(ny) <= 0.8].mean())


def parse_variant(text: str) -> list[tuple[str, object]]:
    return [(k.strip(), yaml.safe_load(v)) for k, v in (item.split("=", 1) for item in text.split(",") if item.strip())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", default="an orange cube")
    ap.add_argument("--preset", type=Path, default=PRESET, help="a refine preset (default: %(default)s)")
    ap.add_argument("--out", help="folder for the base run and the variants (default: a temporary one)")
    ap.add_argument("--measure-only", action="store_true", help="measure the variants already in --out, run nothing")
    ap.add_argument("variants", nargs="+", help='comma-separated KEY=VALUE lists, "" = the preset as is')
    args = ap.parse_args()
    if args.measure_only and not args.out:
        raise SystemExit("--measure-only measures the variants of an earlier run: give its --out")
    out = Path(args.out or tempfile.mkdtemp(prefix="refine-variants-"))
    base = None if args.measure_only else base_run(args.prompt, out, args.preset)
    shape = parse_prompt(args.prompt).shape
    print(f"{'variant':<72}{'IoU':>8}{'colour':>8}{'vol IoU':>9}{'chamfer':>9}{'underside':>11}{'sides':>9}")
    def rows():  # each variant runs just before its row is printed
        if base is not None or (out / "start").exists():  # an --out from before this row existed has none
            yield "(geometry start)", out / "start" if base is None else geometry_start(base, out)
        for i, text in enumerate(args.variants):
            yield text or "(preset)", out / f"variant-{i}" if base is None else run_variant(base, out, i, parse_variant(text))

    for text, folder in rows():
        ev = evaluate_run(folder)
        under, sides = offsets(folder / "model.glb", shape)
        print(f"{text:<72}{ev['silhouette_iou']:>8.4f}{ev['colour_error']:>8.4f}{ev['volumetric_iou']:>9.4f}"
              f"{ev['chamfer']:>9.4f}{under:>+11.4f}{sides:>+9.4f}", flush=True)


if __name__ == "__main__":
    main()
