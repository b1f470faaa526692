"""Faults and bad input: each has a defined behaviour (issue: reliability)."""
import errno
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import PRESET, TINY_RUN
from conftest import tiny_config as tiny
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dream3d.cli import main
from dream3d.config import ConfigError, load_config
from dream3d.kernel.atomic_io import atomic_write
from dream3d.lifecycle import load_run, resume_run, start_run
from dream3d.runs import RunDir
from dream3d.trainer import OutputWriteError, Trainer

pytestmark = pytest.mark.reliability


def test_atomic_write_leaves_old_file_and_no_temp_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def failing(tmp):
        open(tmp, "w").write("half")
        raise OSError(errno.ENOSPC, "No space left on device", tmp)

    with pytest.raises(OSError):
        atomic_write(target, failing)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]


def test_disk_full_during_checkpoint_stops_with_message_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, "output.name=full", "train.steps=9")
    trainer = Trainer(cfg, RunDir.create(str(tmp_path), "x", "c", 0, "full"), progress=False)
    real_save = torch.save

    def save(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("step", 0) >= 6:
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OutputWriteError, match="free disk space"):
        trainer.fit()
    monkeypatch.setattr(torch, "save", real_save)
    assert trainer.run_dir.load_checkpoint()["step"] == 3  # the previous checkpoint is intact
    assert not list(trainer.run_dir.path.rglob("*.tmp*"))


def test_unwritable_output_dir_is_a_clear_error(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root): a read-only folder cannot be simulated")
        assert main(["run", PRESET, f"output.out_dir={ro / 'runs'}"] + TINY_RUN) == 1
        assert "could not write output" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_unwritable_output_dir_via_failing_mkdir(tmp_path, monkeypatch, capsys):
    """The same as above, simulated, so it also runs as root."""
    from pathlib import Path

    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):
        if "blocked" in str(self):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert main(["run", PRESET, f"output.out_dir={tmp_path / 'blocked'}"] + TINY_RUN) == 1
    err = capsys.readouterr().err
    assert "could not write output" in err and "Permission denied" in err


def test_sigkill_mid_run_then_resume_matches_uninterrupted_run(tmp_path):
    overrides = TINY_RUN + ["train.steps=80", "output.checkpoint_every=5", "output.val_every=100",
                            "output.turntable_frames=0"]
    reference = start_run(load_config(PRESET, overrides + [f"output.out_dir={tmp_path}", "output.name=ref"]))
    cmd = [sys.executable, "-m", "dream3d.cli", "run", PRESET, f"output.out_dir={tmp_path}", "output.name=killed",
           *overrides]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = RunDir(tmp_path / "killed").checkpoint
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["step"] >= 10:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed; raise train.steps"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 10 <= torch.load(ckpt, weights_only=True)["step"] < 80
    resume_run(tmp_path / "killed", progress=False)
    a, _ = load_run(reference["run_dir"])
    b, _ = load_run(tmp_path / "killed")
    assert a.step == b.step == 80
    for k, v in a.scene.state_dict().items():
        assert torch.equal(v, b.scene.state_dict()[k]), k
    assert (tmp_path / "ref" / "model.glb").read_bytes() == (tmp_path / "killed" / "model.glb").read_bytes()


def test_same_seed_gives_identical_files(tmp_path):
    a = start_run(tiny(tmp_path, "output.name=a", "output.turntable_frames=0"))
    b = start_run(tiny(tmp_path, "output.name=b", "output.turntable_frames=0"))
    for name in ("model.glb", "model.obj"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert a["export"]["faces"] == b["export"]["faces"]


# -- property-based: any override is accepted or rejected with a ConfigError naming the key --
KEYS = ["seed", "prompt", "train.steps", "train.batch_size", "train.resolution", "guidance.guidance_scale",
        "guidance.t_min", "guidance.t_max", "guidance.weighting", "scene.lr_encoding", "scene.samples_per_ray",
        "prior.view_conditioning", "prior.resolution", "camera.fovy", "output.export.level", "nonsense.key",
        "guidance.nonsense", "scene.background"]
VALUES = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                   st.lists(st.floats(-2, 2), max_size=5), st.booleans())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_any_override_is_accepted_or_named_in_a_config_error(key, value):
    text = str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, str) else str(value)
    try:
        cfg = load_config(PRESET, [f"{key}={text}"])
    except ConfigError as e:
        assert key.split(".")[-1] in str(e) or "prompt" in str(e) or "override" in str(e), (key, text, str(e))
    else:
        from dream3d.kernel.schedules import Schedule

        scale = Schedule.parse(cfg.guidance.guidance_scale, "guidance_scale")  # a number or a schedule [s0, v0, v1, s1]
        assert cfg.train.steps >= 1 and 0 <= scale.start and 0 <= scale.end  # accepted values are in range


@settings(max_examples=200, deadline=None)
@given(prompt=st.text(max_size=500), config=st.text(max_size=80))
def test_any_prompt_gives_a_safe_run_folder(tmp_path_factory, prompt, config):
    """Prompts crafted as paths ('../../etc/passwd', 'a/b', very long, non-ASCII) name a folder
    directly inside out_dir, made of [a-z0-9-] only."""
    import re

    from dream3d.runs import RunDir

    out = tmp_path_factory.mktemp("runs")
    folder = RunDir.create(str(out), prompt, config, 0).path
    assert folder.parent == out and re.fullmatch(r"[a-z0-9-]+", folder.name) and len(folder.name) < 120


def test_path_like_prompts_stay_inside_out_dir(tmp_path):
    from dream3d.runs import RunDir

    for prompt in ("../../etc/passwd", "a/b", "/abs/path", "x" * 1000, "日本語のプロンプト"):
        folder = RunDir.create(str(tmp_path), prompt, "toy/sds-nerf", 0).path
        assert folder.parent == tmp_path and folder.resolve().is_relative_to(tmp_path.resolve())
