"""Per-step training logs a user can open while a run trains: `logs/steps.csv` always, and
TensorBoard event files or Weights & Biases as `output.logger` says.

  output.logger   auto (default): the CSV, plus TensorBoard when it is installed
                  csv | tensorboard | wandb: the CSV plus that one (an error if it is not installed)

Scalars per step (CSV columns, TensorBoard tags train/<name>): loss (their sum) and loss_<term>
for each loss term, grad_norm (|G| of the guidance), t (mean timestep), lr_<group> for each
optimiser group, alpha (mean render opacity), gaussians (count, Gaussian scenes), step_ms, and
iou (silhouette IoU of the validation views against the ToyWorld truth at train.resolution, on
the steps that render them; blank on the others). Validation renders go to TensorBoard / W&B as
images.

`tensorboard --logdir runs` shows every run under runs/. A resumed run first drops the rows (and
TensorBoard events) written after its checkpoint, so every step appears once (W&B cannot drop
logged steps: there the pre-crash values of those steps stay).
"""
from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

import numpy as np

from dream3d.kernel.atomic_io import atomic_write_text
from dream3d.kernel.schema import ConfigError
from dream3d.runs import RunDir

LOGGERS = ("auto", "csv", "tensorboard", "wandb")
log = logging.getLogger("dream3d")


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def check_logger(name: str) -> None:
    """ConfigError (before a run starts) when output.logger names a library that is not installed."""
    if name == "tensorboard" and not tensorboard_available():
        raise ConfigError("output.logger=tensorboard needs TensorBoard: pip install 'dream3d[tensorboard]' "
                          "(or output.logger=csv)")
    if name == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError("output.logger=wandb needs Weights & Biases: pip install 'dream3d[wandb]' "
                              "(or output.logger=csv)") from None


class StepCsv:
    """logs/steps.csv: one row per step, the columns seen so far (the header widens, rewriting the
    file, when a later step brings a new column, e.g. a loss term whose schedule starts later)."""

    def __init__(self, path: Path, keep_until: int):
        self.path = path
        self.columns: list[str] = ["step"]
        rows: list[dict] = []
        if path.exists():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                self.columns = list(reader.fieldnames or ["step"])
                # a row cut short by a crash mid-write has missing fields (None); it is after the checkpoint anyway
                rows = [r for r in reader if None not in r.values() and (r.get("step") or "").isdigit()
                        and int(r["step"]) <= keep_until]
        self._rewrite(rows)

    def _rewrite(self, rows: list[dict]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())

    def append(self, row: dict) -> None:
        new = [k for k in row if k not in self.columns]
        if new:
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            self.columns += new
            self._rewrite(rows)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns, extrasaction="ignore").writerow(row)


class TrainLog:
    """The step logs of a run folder (see the module docstring); W&B gets `config` (a plain dict).
    What an earlier session logged up to `step` (the checkpoint's) is kept, anything later dropped."""

    def __init__(self, run_dir: RunDir, logger: str, step: int, config: dict):
        check_logger(logger)
        folder = run_dir.logs
        folder.mkdir(parents=True, exist_ok=True)
        self.csv = StepCsv(run_dir.step_log, keep_until=step)
        self.tb = self.wandb = None
        if logger == "tensorboard" or (logger == "auto" and tensorboard_available()):
            from torch.utils.tensorboard import SummaryWriter

            _after_earlier_event_files(folder)
            self.tb = SummaryWriter(str(folder), purge_step=step + 1, flush_secs=10)
        if logger == "wandb":
            import wandb

            self.wandb = wandb.init(project="dream3d", name=run_dir.path.name, id=_wandb_id(folder), resume="allow",
                                    dir=str(folder), config=config)

    def scalars(self, step: int, values: dict[str, float | int | None]) -> None:
        row = {"step": step, **{k: _round(v) for k, v in values.items() if v is not None}}
        self.csv.append(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(f"train/{k}", v, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in row.items() if k != "step"}, step=step)

    def image(self, step: int, name: str, img: np.ndarray) -> None:
        """img [H,W,3] uint8 (a validation grid)."""
        if self.tb is not None:
            self.tb.add_image(name, img, step, dataformats="HWC")
        if self.wandb is not None:
            import wandb

            self.wandb.log({name: wandb.Image(img)}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def _after_earlier_event_files(folder: Path) -> None:
    """Wait (at most a second) until this session's event file will sort after the earlier ones:
    TensorBoard reads a folder's files in name order, names start with the second they were made,
    and a later session's purge of the steps after its checkpoint works only when read last."""
    stamps = [int(p.name.split(".")[3]) for p in folder.glob("events.out.tfevents.*") if p.name.split(".")[3].isdigit()]
    while stamps and time.time() < max(stamps) + 1:
        time.sleep(0.05)


def _round(v: float | int) -> float | int:
    return v if isinstance(v, int) else float(f"{float(v):.6g}")


def _wandb_id(folder: Path) -> str:
    """A W&B run id stable for the run folder, so a resumed run continues the same W&B run."""
    import hashlib

    return hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]
