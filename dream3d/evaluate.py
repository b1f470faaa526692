"""`dream3d eval`: a run's quality against ToyWorld ground truth on held-out cameras."""
from __future__ import annotations

from pathlib import Path

import torch
import trimesh

from dream3d.export import ExportError, load_mesh
from dream3d.kernel.atomic_io import write_json
from dream3d.kernel.cameras import CameraSampler
from dream3d.runs import RunDir
from dream3d.toyworld import parse_prompt, render_gt
from dream3d.toyworld.metrics import chamfer_distance, colour_error, mean_saturation, silhouette_iou, volumetric_iou

# Rays per pixel side of the true images. With 2x2 (the dataset's), a half-covered edge pixel counts as outside and
# the exact shapes themselves scored silhouette IoU 0.984 (sphere) and 0.966 (torus); with 8x8, 1.000 and 0.998
# (benchmarks/dmtet_ceiling.py). Silhouette IoUs measured before 2026-12-03 used 2x2 (README, after the quick start).
TRUTH_SUPERSAMPLE = 8


def evaluate_run(run_dir: str | Path, device: str = "auto") -> dict:
    """Silhouette IoU, colour error and saturation of renders over held-out cameras, and the
    volumetric IoU and Chamfer distance (to the true surface, world units) of the exported mesh;
    written to eval.json and returned. `device`: where the checkpoint's scene is loaded (auto: any
    run evaluates on this machine, whatever it trained on)."""
    from dream3d.lifecycle import load_run

    trainer, _ = load_run(run_dir, (f"train.device={device}",))
    folder = RunDir(run_dir)
    mesh_path = next((folder.asset(f) for f in ("glb", "obj", "ply") if folder.asset(f).exists()), None)
    results = {"step": trainer.step, **evaluate_scene(trainer.scene, trainer.cfg, mesh_path, run_dir)}
    write_json(folder.eval, results)
    return results


@torch.no_grad()
def evaluate_scene(scene, cfg, mesh_path: Path | None = None, run_dir: str | Path = "RUN_DIR") -> dict:
    """The metrics of evaluate_run for a scene (on any device; its renders are moved to the CPU
    once, where the truth is rendered) and its exported mesh, if any."""
    item = parse_prompt(cfg.prompt)
    cams = CameraSampler(tuple(cfg.camera.elevation_range), (-180.0, 180.0), cfg.camera.distance,
                         cfg.camera.fovy).held_out(cfg.eval.num_cameras)
    res = cfg.eval.resolution
    out = scene.render(cams, res, res, train=False)
    rgb, alpha = out.rgb.cpu(), out.alpha.cpu()
    results = {"prompt": cfg.prompt, "cameras": cfg.eval.num_cameras, "resolution": res}
    best = None
    for colour in item.colours:  # colour-free prompts are scored against the closest catalogue colour
        gt, mask = render_gt(item, cams, res, colour, TRUTH_SUPERSAMPLE)
        err = colour_error(rgb, gt, alpha, mask)
        if best is None or err < best[0]:
            best = (err, colour, gt, mask)
    err, colour, gt, mask = best
    results.update({
        "silhouette_iou": silhouette_iou(alpha, mask),
        "colour_error": err,
        "matched_colour": colour,
        "saturation": mean_saturation(rgb, alpha),
        "saturation_gt": mean_saturation(gt, mask),
    })
    if mesh_path is not None:
        try:
            mesh = load_mesh(mesh_path)
            if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
                raise ValueError(f"no triangles ({type(mesh).__name__})")
        except Exception as e:  # a truncated or foreign file: say which and how to rebuild it
            raise ExportError(f"mesh {mesh_path} cannot be read ({type(e).__name__}: {str(e)[:200]}); rewrite it "
                              f"from the checkpoint with `dream3d export {run_dir}`") from None
        results["mesh"] = str(mesh_path)
        results["volumetric_iou"] = volumetric_iou(mesh.vertices, mesh.faces, item.shape, cfg.eval.volume_resolution,
                                                   scene.bound)
        results["chamfer"] = chamfer_distance(mesh.vertices, mesh.faces, item.shape, bound=scene.bound)
    else:
        results["volumetric_iou"] = results["chamfer"] = None
    return results
