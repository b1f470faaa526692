"""End-to-end quality on ToyWorld with the default preset (minutes each: marked slow)."""
import pytest
import trimesh
from gltf_validator import assert_valid_gltf

from dream3d.config import load_config
from dream3d.evaluate import evaluate_run
from dream3d.export import load_mesh
from dream3d.lifecycle import start_run


@pytest.mark.slow
@pytest.mark.parametrize("prompt", ["a red cube", "a blue sphere", "a yellow cone"])
def test_default_preset_reaches_target_quality(tmp_path, prompt):
    cfg = load_config("configs/toy/sds-nerf.yaml", [f"prompt={prompt}", f"output.out_dir={tmp_path}", "output.name=acc",
                                                    "output.progress=false", "output.turntable_frames=8"])
    result = start_run(cfg)
    metrics = evaluate_run(result["run_dir"])
    assert metrics["silhouette_iou"] >= 0.90, metrics
    assert metrics["colour_error"] <= 0.05, metrics
    mesh = load_mesh(tmp_path / "acc" / "model.glb")
    welded = trimesh.Trimesh(mesh.vertices, mesh.faces)  # UV seams split vertices; connectivity is by position
    assert mesh.visual.kind == "texture" and len(welded.split(only_watertight=False)) == 1 and len(mesh.faces) <= 30000
    assert_valid_gltf(tmp_path / "acc" / "model.glb")
    lo, hi = mesh.bounds
    assert (abs(lo) < 0.6).all() and (abs(hi) < 0.6).all() and (hi - lo).min() > 0.5  # in the world frame, object-sized


@pytest.mark.slow
def test_gaussian_preset_reaches_target_quality(tmp_path):
    """`dream3d run configs/toy/sds-gaussians.yaml prompt="a red cube"`: IoU >= 0.9, colour <= 0.05,
    a GLB mesh and a 3DGS PLY that reload."""
    from renderers.gaussians.splat_files import read_splat_file

    cfg = load_config("configs/toy/sds-gaussians.yaml", [f"output.out_dir={tmp_path}", "output.name=acc",
                                                         "output.progress=false", "output.turntable_frames=8",
                                                         "output.export.formats=[glb,splat]"])
    result = start_run(cfg)
    metrics = evaluate_run(result["run_dir"])
    assert metrics["silhouette_iou"] >= 0.90, metrics
    assert metrics["colour_error"] <= 0.05, metrics
    mesh = load_mesh(tmp_path / "acc" / "model.glb")
    assert mesh.visual.kind == "texture" and len(mesh.faces) > 100
    assert_valid_gltf(tmp_path / "acc" / "model.glb")
    lo, hi = mesh.bounds
    assert (abs(lo) < 0.6).all() and (abs(hi) < 0.6).all() and (hi - lo).min() > 0.5
    ply = read_splat_file(tmp_path / "acc" / "model.splat.ply", "ply")
    assert len(ply["means"]) > 1000 and ply["sh0"].shape == (len(ply["means"]), 1, 3)
