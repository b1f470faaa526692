"""Every preset under configs/ runs end to end (tiny sizes) and resumes exactly."""
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from dream3d.config import load_config
from dream3d.trainer import load_run, resume, run

PRESETS = sorted(str(p) for p in Path("configs").rglob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_and_resumes_exactly(tmp_path, preset, tiny_sd):
    common = tiny_overrides(preset, tiny_sd) + [f"output.out_dir={tmp_path}", "output.turntable_frames=0",
                                                "output.export.formats=[glb]"]
    full = run(load_config(preset, common + ["output.name=full"]))
    assert full["status"] == "finished"
    half = run(load_config(preset, common + ["output.name=half", "train.steps=3"]))
    resume(half["run_dir"], ("train.steps=6",), progress=False)
    a, _ = load_run(full["run_dir"])
    b, _ = load_run(half["run_dir"])
    for k, v in a.scene.state_dict().items():
        assert torch.equal(v, b.scene.state_dict()[k]), k
    for k, v in a.guidance.state_dict().items():  # e.g. CDS's fixed noise
        assert torch.equal(v, b.guidance.state_dict()[k]), k
