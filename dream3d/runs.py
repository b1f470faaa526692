"""Run folders: atomic writes, checkpoints, previews, turntable videos, metrics.

Layout of a run folder:
  config.yaml            merged config of the run
  checkpoints/last.pt    scene, optimiser, guidance state, RNG states, step
  previews/step_XXXXXX.png  validation grids
  turntable.mp4|gif      orbit video at the end
  model.glb, model.obj   exported meshes
  metrics.json, eval.json
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FORMAT = 1
_UMASK = os.umask(0)
os.umask(_UMASK)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; nothing has been loaded."""


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(tmp_path) on a temp file in the same folder, then rename over `path`.
    On any error the temp file is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_torch_save(obj, path) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[3,H,W] or [B,3,H,W] float in [0,1] -> uint8 HWC (batches side by side)."""
    if img.ndim == 4:
        img = torch.cat(list(img), dim=-1)
    return (img.detach().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


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


class RunDir:
    """Paths and I/O of one run folder."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @staticmethod
    def create(out_dir: str, prompt: str, config_name: str, seed: int, name: str | None = None) -> "RunDir":
        name = slugify(name) if name else f"{slugify(prompt)}-{slugify(config_name)}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        path = Path(out_dir) / name
        i = 1
        while (path / "config.yaml").exists():
            path = Path(out_dir) / f"{name}-{i}"
            i += 1
        path.mkdir(parents=True, exist_ok=True)
        return RunDir(path)

    config = property(lambda self: self.path / "config.yaml")
    checkpoint = property(lambda self: self.path / "checkpoints" / "last.pt")
    previews = property(lambda self: self.path / "previews")
    metrics = property(lambda self: self.path / "metrics.json")
    eval = property(lambda self: self.path / "eval.json")

    def video(self, fmt: str) -> Path:
        return self.path / f"turntable.{fmt}"

    def asset(self, fmt: str) -> Path:
        return self.path / ("model.splat.ply" if fmt == "splat" else f"model.{fmt}")

    def save_checkpoint(self, state: dict) -> Path:
        return atomic_torch_save({"format": CHECKPOINT_FORMAT, **state}, self.checkpoint)

    def load_checkpoint(self) -> dict:
        """The last checkpoint, checked for format; raises CheckpointError naming the problem."""
        path = self.checkpoint
        if not path.exists():
            raise CheckpointError(f"no checkpoint at {path}; the run saved none (was it started?)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); "
                                  "it may be truncated; delete it to restart the run") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"checkpoint {path} has format {found!r}; this dream3d reads format {CHECKPOINT_FORMAT}")
        return state
