"""Every preset under configs/ runs end to end (tiny sizes) and resumes exactly."""
import threading
from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides

from dream3d.config import load_config
from dream3d.lifecycle import load_run, resume_run, start_run

PRESETS = sorted(str(p) for p in Path("configs").rglob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_and_resumes_exactly(tmp_path, preset, tiny_sd):
    common = tiny_overrides(preset, tiny_sd) + [f"output.out_dir={tmp_path}", "output.turntable_frames=0",
                                                "output.export.formats=[glb]"]
    full = start_run(load_config(preset, common + ["output.name=full"]))
    assert full["status"] == "finished"
    if load_config(preset, common).refine.enabled:  # stopped inside the geometry stage (train.steps is the coarse stage's)
        stop = threading.Event()
        half = start_run(load_config(preset, common + ["output.name=half"]), stop=stop,
                         on_step=lambda s: stop.set() if s["stage"] == "geometry" else None)
        assert half["status"] == "stopped" and half["stage"] == "geometry"
        resume_run(half["run_dir"], progress=False)
    else:
        half = start_run(load_config(preset, common + ["output.name=half", "train.steps=3"]))
        resume_run(half["run_dir"], ("train.steps=6",), progress=False)
    a, _ = load_run(full["run_dir"])
    b, _ = load_run(half["run_dir"])
    assert_same_state(a.scene.state_dict(), b.scene.state_dict())
    assert_same_state(a.guidance.state_dict(), b.guidance.state_dict())  # e.g. CDS's fixed noise


def assert_same_state(a, b, key="state"):
    """Tensors equal exactly, through nested dicts (e.g. a densifier's running state)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), key
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), key
        for k in a:
            assert_same_state(a[k], b[k], f"{key}.{k}")
    else:
        assert a == b, key


def test_toyworld_nerf_presets_share_one_scene_start():
    """The bench compares guidances on the configs/toy presets: every NeRF preset must start from the
    same scene (blob, learning rates, sampler), or one method's head start would read as its merit."""
    scenes = {p: load_config(p).scene for p in sorted(str(p) for p in Path("configs/toy").glob("*-nerf.yaml"))}
    assert len(scenes) >= 12
    first = next(iter(scenes.values()))
    assert first.blob_density == 3.0  # the ToyWorld start (README: Fast by default); SD presets keep 10
    assert all(s == first for s in scenes.values()), {p: s for p, s in scenes.items() if s != first}
