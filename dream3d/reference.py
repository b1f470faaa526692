"""Image-to-3D's reference view: the user's image as an object on white with its mask, and the loss that makes
the scene reproduce it from the reference camera (DreamGaussian and Magic123 supervise the reference view so).

Input images: any size and aspect (padded to a square with the background, then resized), 8 or 16 bit, grey,
RGB or RGBA. The object is cut out by the alpha channel when there is one (and it is not opaque everywhere, as a photo
converted to RGBA is), else from a plain background (every
border pixel within 0.05 of their median colour; the object is what differs from it by more than 0.1); an image
with neither is refused with a message, as are unreadable files and images with no object.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dream3d.kernel.schema import ConfigError

BORDER_TOLERANCE = 0.05  # a plain background: every border pixel this close to the border's median (0-1 units)
OBJECT_THRESHOLD = 0.1  # a pixel this far from a plain background's colour belongs to the object
OPAQUE = 0.99  # an alpha channel at least this everywhere cuts nothing out: the plain background is used instead


class ReferenceImageError(ConfigError):
    """An image that cannot be a reference view; the message says why and what to do."""


def unreadable(path: str | Path, e: Exception) -> ReferenceImageError:
    """The one refusal of a file that cannot be opened as an image."""
    return ReferenceImageError(f"cannot read the reference image {str(path)!r} ({type(e).__name__}: {str(e)[:200]}); "
                               "give a PNG or JPEG file")


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(Path(path).expanduser()) as im:
            return im.size
    except Exception as e:  # noqa: BLE001 - a missing, truncated or unknown file: one message
        raise unreadable(path, e) from None


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Pixels [H,W,C] as float in [0,1] (C = 1..4); an image over `max_pixels` is refused before it is decoded."""
    import imageio.v3 as iio

    if max_pixels is not None:
        w, h = image_size(path)
        if w * h > max_pixels:
            raise ReferenceImageError(f"the reference image is {w} x {h} pixels; the limit here is {max_pixels:,} pixels "
                                      f"(e.g. {int(max_pixels ** 0.5)} x {int(max_pixels ** 0.5)}): send a smaller one")
    try:
        img = np.asarray(iio.imread(Path(path).expanduser(), plugin="pillow"))
    except Exception as e:  # noqa: BLE001 - a missing, truncated or unknown file: one message
        raise unreadable(path, e) from None
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 2, 3, 4) or min(img.shape[:2]) < 1:
        raise ReferenceImageError(f"{path}: an image of shape {img.shape} is not a single RGB(A) or grey picture")
    scale = float(np.iinfo(img.dtype).max) if np.issubdtype(img.dtype, np.integer) else 1.0
    return np.clip(img.astype(np.float32) / scale, 0.0, 1.0)


def cut_out(img: np.ndarray, path: str | Path = "image") -> tuple[np.ndarray, np.ndarray]:
    """(rgb [H,W,3] on white, mask [H,W]) from pixels [H,W,C] in [0,1]: by alpha, else by a plain background."""
    channels = img.shape[-1]
    rgb = np.repeat(img[..., :1], 3, -1) if channels in (1, 2) else img[..., :3]
    if channels in (2, 4) and img[..., -1].min() < OPAQUE:
        mask = img[..., -1]
    else:
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        bg = np.median(border, 0)
        if np.abs(border - bg).max() > BORDER_TOLERANCE:
            raise ReferenceImageError(
                f"{path} has no alpha channel and no plain background (its border pixels differ by up to "
                f"{np.abs(border - bg).max():.2f}), so the object cannot be cut out: remove the background first and "
                "save an RGBA PNG with a transparent background")
        mask = (np.abs(rgb - bg).max(-1) > OBJECT_THRESHOLD).astype(np.float32)
    if mask.max() <= 0.5:
        raise ReferenceImageError(f"{path}: no object found (the mask is empty); the object must be opaque in the alpha "
                                  "channel, or differ from a plain background")
    return rgb * mask[..., None] + (1 - mask[..., None]), mask


def load_reference(path: str | Path, resolution: int, max_pixels: int | None = None) -> tuple[Tensor, Tensor]:
    """(rgb [3,r,r] on white, mask [1,r,r]) in [0,1]: cut out, padded to a square with white around the centre,
    area-resized to `resolution`."""
    rgb, mask = cut_out(read_image(path, max_pixels), path)
    h, w = mask.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    square = np.ones((side, side, 4), np.float32)
    square[..., 3] = 0.0
    square[top:top + h, left:left + w, :3], square[top:top + h, left:left + w, 3] = rgb, mask
    t = torch.from_numpy(square).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(resolution, resolution), mode="area" if side > resolution else "bilinear")[0]
    return t[:3].clamp(0, 1), t[3:].clamp(0, 1)


def keep_copy(path: str | Path, run_folder: Path) -> Path:
    """The reference image copied into the run folder (written beside, then renamed), so that a resumed run
    finds it even when the original has moved."""
    src = Path(path).expanduser()
    dst = run_folder / f"reference{src.suffix.lower() or '.png'}"
    if not dst.exists():
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
    return dst


def reference_loss(rgb: Tensor, alpha: Tensor, ref_rgb: Tensor, ref_mask: Tensor, rgb_weight: float,
                   mask_weight: float) -> Tensor:
    """rgb_weight * MSE(rgb, ref) + mask_weight * MSE(alpha, mask), as DreamGaussian: renders rgb [1,3,r,r] (on
    white) and alpha [1,1,r,r] of the reference camera; reference rgb [3,r,r] on white, mask [1,r,r]."""
    return rgb_weight * ((rgb[0] - ref_rgb) ** 2).mean() + mask_weight * ((alpha[0] - ref_mask) ** 2).mean()
