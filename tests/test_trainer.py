import json

import pytest
import torch
import trimesh
from conftest import tiny_config as tiny

from dream3d.export import load_mesh
from dream3d.lifecycle import load_run, resume_run, start_run
from dream3d.runs import CheckpointError, RunDir
from dream3d.trainer import NonFiniteError, Trainer


def params(scene):
    return {k: v.clone() for k, v in scene.state_dict().items()}


def test_tiny_run_writes_a_complete_run_folder(tmp_path):
    result = start_run(tiny(tmp_path, "output.name=r1"))
    folder = RunDir(result["run_dir"])
    for f in ("config.yaml", "checkpoints/last.pt", "metrics.json", "model.glb", "model.obj", "model.mtl", "model.png",
              "turntable.mp4"):
        assert (folder.path / f).exists(), f
    assert sorted(p.name for p in folder.previews.iterdir()) == ["step_000003.png", "step_000006.png"]
    metrics = json.loads(folder.metrics.read_text())
    assert metrics["status"] == "finished" and metrics["step"] == 6
    assert set(metrics["ms_per_step"]) == {"render", "guidance", "backward_step"}
    mesh = load_mesh(folder.asset("glb"))
    assert isinstance(mesh, trimesh.Trimesh) and mesh.visual.kind == "texture"
    assert not list(folder.path.rglob("*.tmp*"))  # atomic writes leave no temp files


def test_same_seed_same_result_and_resume_is_exact(tmp_path):
    full = Trainer(tiny(tmp_path, "output.name=full"), RunDir.create(str(tmp_path), "x", "c", 0, "full"), progress=False)
    while full.step < 6:
        full.train_step()
    again = Trainer(tiny(tmp_path, "output.name=again"), RunDir.create(str(tmp_path), "x", "c", 0, "again"), progress=False)
    while again.step < 6:
        again.train_step()
    # interrupted at step 3 (checkpoint), resumed from disk to 6
    half = Trainer(tiny(tmp_path, "output.name=half", "train.steps=3"), RunDir.create(str(tmp_path), "x", "c", 0, "half"),
                   progress=False)
    half.fit()
    resume_run(half.run_dir.path, ("train.steps=6",), progress=False)
    resumed, _ = load_run(half.run_dir.path)
    assert resumed.step == 6
    a, b, c = params(full.scene), params(again.scene), params(resumed.scene)
    for k in a:
        assert torch.equal(a[k], b[k]), k
        assert torch.equal(a[k], c[k]), k
    other = Trainer(tiny(tmp_path, "seed=1"), RunDir.create(str(tmp_path), "x", "c", 1, "other"), progress=False)
    other.train_step()
    other.train_step()
    assert any(not torch.equal(params(other.scene)[k], a[k]) for k in a)


def test_resume_refuses_a_different_run(tmp_path):
    result = start_run(tiny(tmp_path, "output.name=r2", "train.steps=2", "output.export.formats=[]", "output.turntable_frames=0"))
    with pytest.raises(Exception, match="only train.steps"):
        resume_run(result["run_dir"], ("guidance.guidance_scale=3",))


def test_ctrl_c_saves_checkpoint_and_exports(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, "output.name=int", "train.steps=50")
    trainer = Trainer(cfg, RunDir.create(str(tmp_path), "x", "c", 0, "int"), progress=False)
    orig = trainer.train_step

    def step():
        if trainer.step == 4:
            raise KeyboardInterrupt
        return orig()

    monkeypatch.setattr(trainer, "train_step", step)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    state = trainer.run_dir.load_checkpoint()
    assert state["step"] == 4
    assert json.loads(trainer.run_dir.metrics.read_text())["status"] == "interrupted"
    assert trainer.run_dir.asset("glb").exists()


def test_nan_gradients_are_skipped_then_stop_with_finite_state(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, "output.name=nan", "train.max_bad_steps=3", "train.steps=20")
    trainer = Trainer(cfg, RunDir.create(str(tmp_path), "x", "c", 0, "nan"), progress=False)
    trainer.train_step()
    before = params(trainer.scene)
    orig = trainer.guidance.forward

    def poisoned(img, *a, **k):
        out = orig(img, *a, **k)
        out.loss = out.loss + (img * float("nan")).sum()
        return out

    monkeypatch.setattr(trainer.guidance, "forward", poisoned)
    with pytest.raises(NonFiniteError, match="3 consecutive steps"):
        trainer.fit()
    after = params(trainer.scene)
    assert all(torch.equal(before[k], after[k]) for k in before)
    state = trainer.run_dir.load_checkpoint()
    assert state["skipped_steps"] == 3
    assert all(torch.isfinite(v).all() for v in state["scene"].values())


@pytest.mark.parametrize("damage,match", [
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "unreadable"),
    (lambda p: torch.save({"format": 99}, p), "format 99"),
    (lambda p: p.unlink(), "no checkpoint"),
])
def test_damaged_checkpoints_are_clear_errors(tmp_path, damage, match):
    result = start_run(tiny(tmp_path, "output.name=ck", "train.steps=2", "output.export.formats=[]", "output.turntable_frames=0"))
    damage(RunDir(result["run_dir"]).checkpoint)
    with pytest.raises(CheckpointError, match=match):
        load_run(result["run_dir"])


def test_foreign_checkpoint_is_refused_before_loading(tmp_path):
    result = start_run(tiny(tmp_path, "output.name=fc", "train.steps=2", "output.export.formats=[]", "output.turntable_frames=0"))
    folder = RunDir(result["run_dir"])
    state = torch.load(folder.checkpoint, weights_only=True)
    state["scene"] = {"field.mlp.0.weight": torch.zeros(3, 3)}
    torch.save(state, folder.checkpoint)
    with pytest.raises(CheckpointError, match="does not match"):
        load_run(folder.path)


def test_a_failed_export_check_keeps_the_run(tmp_path, monkeypatch):
    """An export whose file fails its check is reported in the result and metrics; the trained
    checkpoint stays, so `dream3d export RUN_DIR` can retry."""
    import dream3d.trainer as trainer_module
    from dream3d.export import ExportError

    def broken(*a, **kw):
        raise ExportError("model.glb failed its check after writing (UVs missing or outside [0,1])")

    monkeypatch.setattr(trainer_module, "export_scene", broken)
    result = start_run(tiny(tmp_path, "output.name=ex", "train.steps=2", "output.turntable_frames=0"))
    assert result["status"] == "finished" and "failed its check" in result["export"]["error"]
    folder = RunDir(result["run_dir"])
    assert folder.checkpoint.exists() and "failed its check" in json.loads(folder.metrics.read_text())["export"]["error"]


def test_a_resumed_run_keeps_its_schedules_shares_of_the_length_it_started_with(tmp_path):
    """VSD's t_max drops after 20% of the run: of the 10 steps it started with (step 2), not of the 20 it was
    resumed to (step 4), so the resumed run continues the schedule it had."""
    from conftest import tiny_overrides

    from dream3d.config import load_config

    cfg = load_config("configs/toy/vsd-nerf.yaml", tiny_overrides("configs/toy/vsd-nerf.yaml")
                      + ["train.steps=3", f"output.out_dir={tmp_path}", "output.name=vsd"])
    first = Trainer(cfg, RunDir.create(str(tmp_path), "x", "c", 0, "vsd"), progress=False)
    assert first.guidance.timesteps.range(1) == (20, 980) and first.guidance.timesteps.range(2) == (20, 500)  # 20% of 3
    first.fit()
    resumed, _ = load_run(first.run_dir.path, ("train.steps=20",))
    assert resumed.cfg.train.steps == 20 and resumed.schedule_steps == 3
    assert resumed.guidance.timesteps.range(2) == (20, 500)  # a fresh 20-step run drops after step 4
