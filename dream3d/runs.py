"""Run folders: checkpoints, previews, turntable videos, metrics.

Layout of a run folder:
  config.yaml            merged config of the run
  checkpoints/last.pt    scene, optimiser, guidance state, RNG states, step
  previews/step_XXXXXX.png  validation grids
  turntable.mp4|gif      orbit video at the end
  model.glb, model.obj (+ .mtl, .png), model.ply       exported meshes
  model.splat.ply, model.splat, model.compressed.ply  splat files (Gaussian scenes)
  metrics.json, eval.json
  logs/steps.csv         per-step scalars; logs/events.out.tfevents.* (TensorBoard), logs/wandb (W&B)
  run.zip                the folder as one download (web UI)
RunDir is the one place these names are spelled.
"""
from __future__ import annotations

import os
import pickle
import re
import time
from pathlib import Path

import numpy as np
import torch

from dream3d.export.config import asset_path
from dream3d.kernel.atomic_io import atomic_torch_save, atomic_write, is_partial

CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; nothing has been loaded."""


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[3,H,W] or [B,3,H,W] float in [0,1] -> uint8 HWC (batches side by side)."""
    if img.ndim == 4:
        img = torch.cat(list(img), dim=-1)
    return (img.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def write_image(path, img: torch.Tensor) -> Path:
    import imageio.v3 as iio

    return atomic_write(path, lambda tmp: iio.imwrite(tmp, to_uint8(img), extension=".png"))


def write_video(path, frames: list[np.ndarray], fps: int = 12) -> Path:
    """mp4 (ffmpeg from imageio-ffmpeg) or gif, chosen by the suffix."""
    import imageio

    path = Path(path)

    def write(tmp):
        if path.suffix == ".gif":
            imageio.mimsave(tmp, frames, format="GIF", duration=1000 / fps, loop=0)
        else:
            imageio.mimsave(tmp, frames, format="FFMPEG", fps=fps, codec="libx264", macro_block_size=8)

    return atomic_write(path, write)


def slugify(text: str, max_len: int = 40) -> str:
    """A safe folder-name fragment: lowercase ASCII letters, digits and dashes only."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_len].strip("-") or "run"


def claim_folder(parent: Path, name: str, max_tries: int = 10_000) -> Path:
    """Create and return parent/name, or parent/name-1, name-2, ... : the first that did not exist.
    mkdir without exist_ok is atomic, so two processes (or UI threads) never share a folder."""
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(max_tries):
        path = parent / (name if i == 0 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent} already holds {max_tries} folders named {name!r}[-N]; choose another output.name")


def zip_folder(folder: Path, dest: Path) -> Path:
    """dest (a .zip) with every regular file under folder, written atomically. Symbolic links
    are skipped, so nothing outside the folder can end up in the archive; dest itself and
    temp files are left out."""
    import zipfile

    folder, dest = Path(folder), Path(dest)

    def write(tmp):
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for root, dirs, names in os.walk(folder, followlinks=False):  # symlinked folders are not entered
                dirs.sort()
                for n in sorted(names):
                    p = Path(root) / n
                    if p.is_symlink() or not p.is_file() or p == dest or is_partial(n):
                        continue
                    zf.write(p, p.relative_to(folder).as_posix())

    return atomic_write(dest, write)


class RunDir:
    """Paths and I/O of one run folder."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @staticmethod
    def create(out_dir: str, prompt: str, config_name: str, seed: int, name: str | None = None) -> "RunDir":
        name = (slugify(name, 120) if name
                else f"{slugify(prompt)}-{slugify(config_name)}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}")
        return RunDir(claim_folder(Path(out_dir), name))

    config = property(lambda self: self.path / "config.yaml")
    checkpoint = property(lambda self: self.path / "checkpoints" / "last.pt")
    previews = property(lambda self: self.path / "previews")
    metrics = property(lambda self: self.path / "metrics.json")
    eval = property(lambda self: self.path / "eval.json")
    logs = property(lambda self: self.path / "logs")  # TensorBoard events, W&B files (dream3d/train_log.py)
    step_log = property(lambda self: self.logs / "steps.csv")
    archive = property(lambda self: self.path / "run.zip")

    def preview(self, step: int) -> Path:
        return self.previews / f"step_{step:06d}.png"

    def video(self, fmt: str) -> Path:
        return self.path / f"turntable.{fmt}"

    @property
    def model(self) -> Path:
        """The base name exports are written to: model.glb, model.obj (+ .mtl, .png), model.ply, model.splat.ply,
        model.splat, model.compressed.ply."""
        return self.path / "model"

    def asset(self, fmt: str) -> Path:
        return asset_path(self.model, fmt)

    def assets(self) -> list[Path]:
        """The exported files that exist (every model.* file; an OBJ's .mtl and .png included)."""
        return sorted(p for p in self.path.glob("model.*") if p.is_file() and not is_partial(p.name))

    def turntable(self) -> Path | None:
        """The turntable video, if the run wrote one."""
        return next(iter(sorted(self.path.glob("turntable.*"))), None)

    def save_checkpoint(self, state: dict) -> Path:
        return atomic_torch_save({"format": CHECKPOINT_FORMAT, **state}, self.checkpoint)

    def load_checkpoint(self) -> dict:
        """The last checkpoint, checked for format; raises CheckpointError naming the problem."""
        path = self.checkpoint
        if not path.exists():
            raise CheckpointError(f"no checkpoint at {path}; the run saved none (was it started?)")
        try:  # weights_only: tensors and plain data only, so a crafted checkpoint cannot run code
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(f"checkpoint {path} holds objects other than tensors and plain data; it was not "
                                  f"written by dream3d and is not loaded ({str(e).splitlines()[0][:200]})") from None
        except Exception as e:
            raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); "
                                  "it may be truncated; delete it to restart the run") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"checkpoint {path} has format {found!r}; this dream3d reads format {CHECKPOINT_FORMAT}")
        return state
