"""Training logs (dream3d/train_log.py): logs/steps.csv one row per step with the documented
columns, TensorBoard events that hold the same numbers, resumed runs logging every step once,
the logger switch and its errors, and the W&B sink's calls."""
import csv
import sys
import types

import pytest
from conftest import TINY_RUN, tiny_overrides

from dream3d.config import ConfigError, load_config
from dream3d.lifecycle import resume_run, start_run
from dream3d.runs import RunDir
from dream3d.train_log import StepCsv


def read_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def tensorboard_scalars(folder, tag: str) -> dict[int, float]:
    """{step: value} of a TensorBoard tag; fails when a step was logged twice."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    steps = [e.step for e in acc.Scalars(tag)]
    assert len(steps) == len(set(steps)), f"{tag}: steps logged twice: {sorted(steps)}"
    return {e.step: e.value for e in acc.Scalars(tag)}


def test_every_step_is_a_csv_row_and_a_tensorboard_event(tmp_path):
    cfg = load_config("configs/toy/sds-nerf.yaml", TINY_RUN + [f"output.out_dir={tmp_path}", "output.name=r",
                                                               "train.steps=12", "output.logger=tensorboard"])
    start_run(cfg)
    folder = RunDir(tmp_path / "r")
    rows = read_rows(folder.step_log)
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    assert {"loss", "loss_guidance", "grad_norm", "t", "lr_encoding", "lr_network", "alpha", "step_ms",
            "iou"} <= set(rows[0])
    for r in rows:
        assert float(r["grad_norm"]) > 0 and 0 <= float(r["alpha"]) <= 1 and float(r["step_ms"]) > 0
        assert 20 <= float(r["t"]) <= 980  # the preset's t_min/t_max in timesteps
    # IoU against the ToyWorld truth on the steps that render the validation views (every 10 steps
    # for the convergence check, every val_every=3 for previews), blank on the others
    iou_steps = [int(r["step"]) for r in rows if r["iou"]]
    assert iou_steps == [3, 6, 9, 10, 12]
    assert all(0 <= float(r["iou"]) <= 1 for r in rows if r["iou"])
    # TensorBoard holds the same numbers at the same steps
    tb = tensorboard_scalars(folder.logs, "train/grad_norm")
    assert sorted(tb) == list(range(1, 13))
    for r in rows:
        assert tb[int(r["step"])] == pytest.approx(float(r["grad_norm"]), rel=1e-5)
    assert sorted(tensorboard_scalars(folder.logs, "train/iou")) == iou_steps


def test_gaussian_runs_log_their_count(tmp_path):
    cfg = load_config("configs/toy/sds-gaussians.yaml", tiny_overrides("configs/toy/sds-gaussians.yaml") +
                      [f"output.out_dir={tmp_path}", "output.name=g", "output.logger=csv",
                       "output.export.formats=[]", "output.turntable_frames=0"])
    start_run(cfg)
    rows = read_rows(RunDir(tmp_path / "g").step_log)
    counts = [int(r["gaussians"]) for r in rows]
    assert counts[0] == 300 and counts[-1] > 300  # densification every 2 steps grows it
    assert {"lr_means", "lr_opacities"} <= set(rows[0])
    assert not list((tmp_path / "g" / "logs").glob("events.out.tfevents.*"))  # csv only


def test_a_resumed_run_logs_every_step_once_with_the_same_numbers(tmp_path):
    """A crash after step 8 (last checkpoint: step 6) leaves rows 7-8 that the resumed run
    replaces; the log then equals an uninterrupted run's, step for step (step_ms aside)."""
    base = TINY_RUN + [f"output.out_dir={tmp_path}", "train.steps=12", "output.checkpoint_every=6",
                       "output.logger=tensorboard"]
    start_run(load_config("configs/toy/sds-nerf.yaml", base + ["output.name=whole"]))

    def crash(stats):
        if stats["step"] == 8:
            raise RuntimeError("simulated crash")

    # Event file names hold the second they were made and a per-process counter: make the crashed
    # session's counter 9 (99, ...) so that the resumed one's, a digit longer, sorts before it by name
    from torch.utils.tensorboard import SummaryWriter

    SummaryWriter(str(tmp_path / "other")).close()
    count = max(int(p.name.rsplit(".", 1)[1]) for p in (tmp_path / "other").iterdir())
    for _ in range(10 ** len(str(count + 1)) - 2 - count):
        SummaryWriter(str(tmp_path / "other")).close()
    with pytest.raises(RuntimeError, match="simulated crash"):
        start_run(load_config("configs/toy/sds-nerf.yaml", base + ["output.name=crashed"]), on_step=crash)
    crashed = RunDir(tmp_path / "crashed")
    assert [int(r["step"]) for r in read_rows(crashed.step_log)] == list(range(1, 9))
    resume_run(crashed.path)
    rows, whole = read_rows(crashed.step_log), read_rows(RunDir(tmp_path / "whole").step_log)
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    for a, b in zip(rows, whole):
        assert {k: v for k, v in a.items() if k != "step_ms"} == {k: v for k, v in b.items() if k != "step_ms"}
    tb = tensorboard_scalars(crashed.logs, "train/grad_norm")  # events after the checkpoint purged
    assert sorted(tb) == list(range(1, 13))
    assert tb[7] == pytest.approx(float(rows[6]["grad_norm"]), rel=1e-5)


def test_step_csv_widens_its_header_when_a_column_appears(tmp_path):
    log = StepCsv(tmp_path / "steps.csv", keep_until=0)
    log.append({"step": 1, "loss": 0.5})
    log.append({"step": 2, "loss": 0.4, "loss_sparsity": 0.1})  # a scheduled term starting later
    rows = read_rows(tmp_path / "steps.csv")
    assert rows == [{"step": "1", "loss": "0.5", "loss_sparsity": ""}, {"step": "2", "loss": "0.4", "loss_sparsity": "0.1"}]
    StepCsv(tmp_path / "steps.csv", keep_until=1)  # reopened by a run resumed at step 1
    assert read_rows(tmp_path / "steps.csv") == rows[:1]


def test_logger_choices_and_missing_libraries_are_config_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="output.logger = 'mlflow' is not valid; valid: auto, csv, tensorboard, wandb"):
        load_config("configs/toy/sds-nerf.yaml", ["output.logger=mlflow"])
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    cfg = load_config("configs/toy/sds-nerf.yaml", TINY_RUN + [f"output.out_dir={tmp_path}", "output.logger=wandb"])
    with pytest.raises(ConfigError, match=r"pip install 'dream3d\[wandb\]'"):
        start_run(cfg)
    assert not any(tmp_path.iterdir())  # refused before a run folder was made
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ConfigError, match=r"pip install 'dream3d\[tensorboard\]'"):
        start_run(load_config("configs/toy/sds-nerf.yaml", TINY_RUN + [f"output.out_dir={tmp_path}",
                                                                       "output.logger=tensorboard"]))


def test_auto_logger_without_tensorboard_writes_the_csv_only(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    start_run(load_config("configs/toy/sds-nerf.yaml", TINY_RUN + [f"output.out_dir={tmp_path}", "output.name=a"]))
    logs = RunDir(tmp_path / "a").logs
    assert [p.name for p in logs.iterdir()] == ["steps.csv"]


def test_wandb_gets_the_config_every_step_and_the_previews(tmp_path, monkeypatch):
    """The W&B sink through a stand-in module that records the calls (the real library needs an
    account or an offline service process)."""
    calls = {"init": [], "log": [], "finish": 0}

    class Run:
        def log(self, data, step):
            calls["log"].append((step, data))

        def finish(self):
            calls["finish"] += 1

    fake = types.SimpleNamespace(init=lambda **kw: calls["init"].append(kw) or Run(), Image=lambda img: ("image", img.shape))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    start_run(load_config("configs/toy/sds-nerf.yaml", TINY_RUN + [f"output.out_dir={tmp_path}", "output.name=w",
                                                                   "output.logger=wandb", "seed=3"]))
    (init,) = calls["init"]
    assert init["project"] == "dream3d" and init["name"] == "w" and init["config"]["seed"] == 3
    assert init["resume"] == "allow" and init["dir"] == str(RunDir(tmp_path / "w").logs)
    scalar_steps = [s for s, d in calls["log"] if "train/grad_norm" in d]
    assert scalar_steps == list(range(1, 7))
    assert [s for s, d in calls["log"] if "validation" in d] == [3, 6]
    assert calls["finish"] == 1
