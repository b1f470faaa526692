"""The convergence stop (train.convergence): the monitor's rule, and runs that stop by it."""
import json

import torch
from conftest import tiny_config

from dream3d.convergence import ConvergenceConfig, ConvergenceMonitor


def feed(monitor: ConvergenceMonitor, images: list[torch.Tensor], every: int) -> int | None:
    for i, image in enumerate(images, start=1):
        if monitor.observe(i * every, image):
            return i * every
    return None


def test_monitor_stops_on_noise_around_a_fixed_image_but_not_on_drift():
    """Renders jittering around one image converge once window means agree (after min_steps,
    `patience` calm checks in a row); renders drifting by 0.002 per check never do (the change over
    `lag` checks is 0.02 > tolerance)."""
    cfg = ConvergenceConfig(every=10, window=4, lag=6, tolerance=0.01, patience=3, min_steps=150)
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(2, 4, 8, 8, generator=gen)
    noisy = [base + 0.01 * torch.randn(base.shape, generator=gen) for _ in range(40)]
    # the first comparison needs window + lag = 10 renders (step 100); calm from then on, but min_steps is 150
    assert feed(ConvergenceMonitor(cfg), noisy, 10) == 150
    drift = [base + 0.002 * i for i in range(40)]
    monitor = ConvergenceMonitor(cfg)
    assert feed(monitor, drift, 10) is None
    assert abs(monitor.change - 0.002 * cfg.lag) < 1e-5  # mean of the last window minus the first's


def test_monitor_patience_and_state_round_trip():
    cfg = ConvergenceConfig(every=1, window=1, lag=1, tolerance=0.1, patience=2, min_steps=0)
    frames = [torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2), torch.ones(1, 4, 2, 2), torch.ones(1, 4, 2, 2)]
    monitor = ConvergenceMonitor(cfg)
    assert [monitor.observe(s, f) for s, f in enumerate(frames[:2], 1)] == [False, False]  # change 1: not calm
    copy = ConvergenceMonitor(cfg)
    copy.load_state_dict(monitor.state_dict())
    assert [copy.observe(s, f) for s, f in enumerate(frames[2:], 3)] == [False, True]  # two calm checks in a row
    assert copy.summary()["converged_at"] == 4


def test_a_run_stops_when_converged_and_records_why(tmp_path):
    """A tolerance every change meets stops the run at min_steps; metrics.json says where and why,
    with wall seconds per phase; the result equals a run of exactly that many steps without the
    check (the check's renders use no random draws); resuming with the check off trains on."""
    from dream3d.lifecycle import is_finished, resume_run, start_run
    from dream3d.runs import RunDir

    stop = ["train.steps=12", "train.convergence.every=2", "train.convergence.window=1", "train.convergence.lag=1",
            "train.convergence.patience=1", "train.convergence.tolerance=1.0", "train.convergence.min_steps=4"]
    cfg = tiny_config(tmp_path / "a", *stop)
    result = start_run(cfg)
    metrics = json.loads(RunDir(result["run_dir"]).metrics.read_text())
    assert metrics["status"] == "finished" and metrics["stop"] == "converged" and metrics["step"] == 4
    assert metrics["convergence"]["converged_at"] == 4 and metrics["convergence"]["change"] < 1.0
    phases = metrics["phases_s"]
    for phase in ("setup", "train", "convergence", "previews", "checkpoints", "export", "export.field", "export.uv",
                  "export.bake", "export.write", "turntable"):
        assert phases[phase] >= 0, phase
    assert phases["export"] >= phases["export.field"] + phases["export.write"]
    assert is_finished(RunDir(result["run_dir"]), cfg)

    fixed = start_run(tiny_config(tmp_path / "b", "train.steps=4", "train.convergence.enabled=false"))
    a = RunDir(result["run_dir"]).load_checkpoint()["scene"]
    b = RunDir(fixed["run_dir"]).load_checkpoint()["scene"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    resume_run(result["run_dir"], ("train.convergence.enabled=false",))
    metrics = json.loads(RunDir(result["run_dir"]).metrics.read_text())
    assert metrics["step"] == 12 and metrics["stop"] == "steps"


def test_unknown_convergence_key_names_the_valid_ones(tmp_path):
    import pytest

    from dream3d.config import ConfigError

    with pytest.raises(ConfigError, match="tolerance"):
        tiny_config(tmp_path, "train.convergence.tolerence=0.1")
