"""Refined runs (cfg.refine, Trainer.next_stage): coarse NeRF -> DMTet geometry -> texture, in one
run folder, checkpointed and resumable within a stage."""
import json
import threading

import pytest
import torch
import trimesh
from conftest import tiny_config as tiny

from dream3d.config import ConfigError, build_config
from dream3d.export import load_mesh
from dream3d.lifecycle import is_finished, load_run, resume_run, start_run
from dream3d.runs import RunDir
from dream3d.trainer import Trainer
from renderers import MeshScene

REFINE = ["refine.geometry_steps=4", "refine.texture_steps=3", "refine.resolution=24", "refine.sdf_resolution=32",
          "refine.mesh.grid_resolution=12", "output.checkpoint_every=1000", "output.turntable_frames=0",
          "output.export.formats=[glb]"]


def test_a_refined_run_ends_as_a_textured_watertight_mesh(tmp_path):
    result = start_run(tiny(tmp_path, "output.name=refined", *REFINE))
    assert result["stage"] == "texture" and result["step"] == 6 + 4 + 3 == result["steps"]
    folder = RunDir(result["run_dir"])
    metrics = json.loads(folder.metrics.read_text())
    assert metrics["stage"] == "texture" and metrics["total_steps"] == 13 and "refine_sdf" in metrics["phases_s"]
    assert [h["stage"] for h in metrics["history"]][-1] == "texture"
    # previews every output.val_every (3) steps and at each stage's end, not at every refinement step
    assert sorted(p.name for p in folder.previews.iterdir()) == [f"step_{s:06d}.png" for s in (3, 6, 9, 10, 12, 13)]
    import imageio.v3 as iio

    def lower_half_is_grey(step: int) -> bool:  # opacity below the colour; the geometry stage shows its normal map
        img = iio.imread(folder.preview(step)).astype(int)
        lower = img[img.shape[0] // 2:, :, :3]
        return bool((lower.max(-1) - lower.min(-1)).max() <= 1)

    assert lower_half_is_grey(6) and not lower_half_is_grey(9) and not lower_half_is_grey(10) and lower_half_is_grey(13)
    assert result["export"]["method"] == "surface"
    mesh = load_mesh(folder.asset("glb"))
    assert isinstance(mesh, trimesh.Trimesh) and mesh.visual.kind == "texture"
    raw = folder.asset("glb").read_bytes()  # the GLB's JSON chunk says what its base colour is
    tree = json.loads(raw[20:20 + int.from_bytes(raw[12:16], "little")])
    assert tree["asset"]["extras"]["dream3d"]["base_color"].startswith("albedo: the surface colour without lighting")
    assert is_finished(folder, tiny(tmp_path, "output.name=refined", *REFINE))
    trainer, _ = load_run(folder.path)
    assert isinstance(trainer.scene, MeshScene) and trainer.scene.geometry_frozen
    assert {g["name"] for g in trainer.optimizer.param_groups} == {"encoding", "network"}


def test_the_refined_glb_imports_into_blender_with_its_texture(tmp_path):
    """Blender's own glTF importer (bpy) reads the refined asset: one mesh with its faces, a UV map, and the baked
    texture as the material's base colour (mean colour equal to the texture trimesh reads from the file)."""
    import numpy as np
    from blender_import import blender_report

    result = start_run(tiny(tmp_path, *REFINE))
    glb = RunDir(result["run_dir"]).asset("glb")
    report = blender_report(glb)
    mesh = load_mesh(glb)
    [imported] = report["meshes"]
    assert imported["faces"] == len(mesh.faces) and imported["uv_layers"]
    [material] = imported["materials"]
    texture = np.asarray(mesh.visual.material.baseColorTexture)[..., :3] / 255.0
    assert material["image"]["size"] == [texture.shape[1], texture.shape[0]] and material["image"]["packed"]
    assert np.allclose(material["image"]["mean_rgb"], texture.mean((0, 1)), atol=2e-3)


def test_kill_and_resume_inside_the_geometry_stage_gives_the_same_asset(tmp_path):
    whole = start_run(tiny(tmp_path, "output.name=whole", *REFINE))
    stop = threading.Event()

    def stop_in_geometry(stats):
        if stats["stage"] == "geometry" and stats["step"] == 8:  # two steps into the geometry stage
            stop.set()

    cut = start_run(tiny(tmp_path, "output.name=cut", *REFINE), stop=stop, on_step=stop_in_geometry)
    assert cut["status"] == "stopped" and cut["stage"] == "geometry" and cut["step"] == 8
    assert not is_finished(RunDir(cut["run_dir"]), tiny(tmp_path, "output.name=cut", *REFINE))
    resumed = resume_run(cut["run_dir"], progress=False)
    assert resumed["status"] == "finished" and resumed["step"] == 13
    a, _ = load_run(whole["run_dir"])
    b, _ = load_run(cut["run_dir"])
    sa, sb = a.scene.state_dict(), b.scene.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if isinstance(sa[k], torch.Tensor):
            assert torch.equal(sa[k], sb[k]), k
    ma, mb = load_mesh(RunDir(whole["run_dir"]).asset("glb")), load_mesh(RunDir(cut["run_dir"]).asset("glb"))
    assert (ma.vertices == mb.vertices).all() and (ma.faces == mb.faces).all()


def test_refine_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="already one"):
        build_config({"scene": {"name": "mesh"}, "refine": {"geometry_steps": 5}})
    with pytest.raises(ConfigError, match="refine.mesh.bound"):
        tiny(tmp_path, "refine.geometry_steps=5", "refine.mesh.bound=0.8")
    with pytest.raises(ConfigError, match="unknown config key 'refine.mesh.grid_res'"):
        tiny(tmp_path, "refine.mesh.grid_res=5")
    with pytest.raises(ConfigError, match=r"needs t_min < t_max: guidance.t_min \(0.5\) must be < guidance.t_max \(0.4\)"):
        tiny(tmp_path, "refine.geometry_steps=5", "refine.t_min=0.5", "refine.t_max=0.4")
    with pytest.raises(ConfigError, match=r"t_min \(0.02\) must be < guidance.t_max \(0.01\)"):  # against the guidance's
        tiny(tmp_path, "refine.geometry_steps=5", "refine.t_max=0.01")
    # a scheduled t_max of the guidance's (VSD's default shape) drops to 0.5: above that, refine.t_min leaves no range
    with pytest.raises(ConfigError, match=r"t_min \(0.6\) must be < guidance.t_max \(0.5\)"):
        tiny(tmp_path, "refine.geometry_steps=5", "refine.t_min=0.6", "guidance.t_max=[2, 0.98, 0.5, 2]")
    tiny(tmp_path, "refine.geometry_steps=5", "refine.t_min=0.4", "guidance.t_max=[2, 0.98, 0.5, 2]")
    with pytest.raises(ConfigError, match="refine.t_max has no effect on guidance.name=cds"):
        tiny(tmp_path, "refine.geometry_steps=5", "refine.t_max=0.5", "guidance.name=cds")
    with pytest.raises(ConfigError, match="refine.t_max sets the mesh stages' timestep range, but there are none"):
        tiny(tmp_path, "refine.t_max=0.5")


def test_the_mesh_stages_draw_timesteps_from_their_own_range_also_after_a_resume(tmp_path):
    """refine.t_min / t_max replace the guidance's range from the geometry stage on (T = 1000 on ToyWorld);
    a run resumed inside a mesh stage keeps them."""
    own = [*REFINE, "refine.t_min=0.3", "refine.t_max=0.35", "output.checkpoint_every=1"]
    seen: dict[str, list[float]] = {"coarse": [], "geometry": [], "texture": []}
    stop = threading.Event()

    def record(stats):
        seen[stats["stage"]].append(stats["t"])
        if stats["step"] == 8:
            stop.set()

    cut = start_run(tiny(tmp_path, "output.name=trange", *own), stop=stop, on_step=record)
    assert cut["stage"] == "geometry" and cut["status"] == "stopped"
    resume_run(cut["run_dir"], progress=False, on_step=record)
    assert len(seen["geometry"]) == 4 and len(seen["texture"]) == 3
    assert all(300 <= t <= 350 for t in seen["geometry"] + seen["texture"]), seen
    assert not all(300 <= t <= 350 for t in seen["coarse"]), seen["coarse"]  # the guidance's 0.02 - 0.98 before


def test_a_run_past_its_coarse_stage_refuses_a_new_train_steps(tmp_path):
    result = start_run(tiny(tmp_path, "output.name=past", *REFINE))
    with pytest.raises(ConfigError, match="past its coarse stage"):
        resume_run(result["run_dir"], ("train.steps=12",))


def test_a_converged_coarse_stage_hands_over_to_full_refinement_stages(tmp_path):
    """The coarse stage stops early (converged); the mesh stages then run all their steps, with previews
    every val_every steps and at their ends only, and checkpoints on schedule."""
    fast = ["train.steps=40", "train.convergence.every=1", "train.convergence.window=1", "train.convergence.lag=1",
            "train.convergence.patience=1", "train.convergence.min_steps=2", "train.convergence.tolerance=1.0"]
    result = start_run(tiny(tmp_path, "output.name=conv", *REFINE, *fast, "output.checkpoint_every=2"))
    metrics = json.loads(RunDir(result["run_dir"]).metrics.read_text())
    assert metrics["stop"] == "converged" and metrics["convergence"]["converged_at"] < 40
    coarse_end = metrics["convergence"]["converged_at"]
    assert result["step"] == coarse_end + 4 + 3 == metrics["total_steps"] and result["stage"] == "texture"
    assert Trainer.stop_note(result) == f"converged at step {coarse_end} of 40, then 7 refinement steps"
    steps = sorted(int(p.stem.split("_")[1]) for p in RunDir(result["run_dir"]).previews.iterdir())
    after = [s for s in steps if s > coarse_end]
    assert after == sorted({s for s in range(coarse_end + 1, coarse_end + 8) if s % 3 == 0} | {coarse_end + 4, coarse_end + 7})
