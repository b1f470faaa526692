"""Gaussian splat files that 3DGS viewers open, written by `gsplat.export_splats`, and readers
that reopen them (the writer's check and the tests).

Formats (gsplat's names):
  ply             Kerbl et al. 2023's `point_cloud.ply`: x y z, f_dc_0..2, f_rest_* (channel-major),
                  opacity (logit), scale_0..2 (log), rot_0..3 (quaternion w x y z), float32
  splat           antimatter15's web viewer: 32 bytes per splat (position, scale as float32; RGBA and
                  the normalised quaternion as uint8), sorted along a Morton curve
  ply_compressed  PlayCanvas / SuperSplat's compressed PLY: chunks of 256 splats with float bounds,
                  positions, scales, rotations and colours quantised into four uint32 per splat,
                  higher SH bands as uint8; splats with opacity <= 1/255 are left out

Orientation. dream3d's world is +Y up (OpenGL). The viewers expect the INRIA / COLMAP frame,
-Y up: antimatter15/splat's camera is OpenCV's (y down; its "up" keys move along -Y), and
SuperSplat turns every PLY and .splat 180 degrees about Z when it loads one (playcanvas/supersplat
src/asset-loader.ts, `new Vec3(0, 0, 180)`; its save undoes it; supersplat issue #451: "PLY files
generally have content stored with -Y going up"). So `up="-y"` (the default) writes the scene
turned 180 degrees about Z, (x, y, z) -> (-x, -y, z): both viewers show it upright, and SuperSplat's
own turn brings it back to exactly dream3d's frame. `up="+y"` writes dream3d's frame unchanged.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dream3d.kernel.atomic_io import atomic_write
from renderers.gaussians.model import SH_C0

# format: (file ending, what it is for); .compressed.ply is the name SuperSplat gives the format
SPLAT_FILES = {"ply": (".splat.ply", "3D Gaussian Splatting PLY"),
               "splat": (".splat", ".splat for antimatter15's web viewer"),
               "ply_compressed": (".compressed.ply", "compressed PLY for SuperSplat / PlayCanvas")}
SPLAT_FORMATS = tuple(SPLAT_FILES)
SPLAT_UP = ("-y", "+y")  # -y: the 3DGS viewers' frame (INRIA / COLMAP); +y: dream3d's world frame
MIN_OPACITY = 1 / 255  # ply_compressed leaves out fainter splats (gsplat's opacity_threshold)


def splat_suffix(fmt: str) -> str:
    """The file ending of a splat format: .splat.ply, .splat, .compressed.ply."""
    return SPLAT_FILES[fmt][0]


def rotate_z180(params: dict[str, Tensor]) -> dict[str, Tensor]:
    """The splats turned 180 degrees about Z: positions (x, y, z) -> (-x, -y, z); quaternions
    (w, x, y, z) -> q_z ⊗ q = (-z, -y, x, w) with q_z = (0, 0, 0, 1); SH coefficients of odd order
    m change sign (the real SH of order m pick up cos(m pi) under a turn by pi about Z), i.e. within
    band l the entries j = m + l with j - l odd. Scales and opacities are unchanged."""
    out = dict(params)
    out["means"] = params["means"] * params["means"].new_tensor([-1.0, -1.0, 1.0])
    w, x, y, z = params["quats"].unbind(-1)
    out["quats"] = torch.stack([-z, -y, x, w], -1)
    rest = params["shN"]  # [N, (d+1)^2 - 1, 3], bands l = 1..d in order
    signs = [(-1.0) ** (j - l) for l in range(1, math.isqrt(rest.shape[1] + 1)) for j in range(2 * l + 1)]
    out["shN"] = rest * rest.new_tensor(signs)[None, :, None]
    return out


@torch.no_grad()
def splat_bytes(params: dict[str, Tensor], fmt: str = "ply", up: str = "-y") -> bytes:
    """The file contents of `fmt` for gsplat-layout splats (means [N,3], log scales [N,3], quats
    [N,4] wxyz, opacity logits [N], sh0 [N,1,3], shN [N,K,3]) in the `up` frame."""
    from gsplat import export_splats

    if fmt not in SPLAT_FORMATS or up not in SPLAT_UP:
        raise ValueError(f"splat format {fmt!r} / up {up!r}; valid: {', '.join(SPLAT_FORMATS)} / {', '.join(SPLAT_UP)}")
    p = {k: v.detach().cpu().float() for k, v in params.items()}
    if up == "-y":
        p = rotate_z180(p)
    return export_splats(p["means"], p["scales"], p["quats"], p["opacities"], p["sh0"], p["shN"], format=fmt)


def write_splat_file(params: dict[str, Tensor], path: str | Path, fmt: str = "ply", up: str = "-y") -> Path:
    """Write one splat file atomically and reopen it: raises RuntimeError (and removes the file)
    unless it reads back as the splats written (gsplat leaves out non-finite splats, and
    ply_compressed faint ones; finite values); ValueError when there is none to write."""
    opacities = params["opacities"].detach().cpu()
    finite = torch.stack([torch.isfinite(v.detach().cpu()).reshape(len(opacities), -1).all(1) for v in params.values()]).all(0)
    expected = int((finite & (torch.sigmoid(opacities) > MIN_OPACITY)).sum() if fmt == "ply_compressed" else finite.sum())
    if expected == 0:  # gsplat's writers fail on an empty set; say why instead
        raise ValueError(f"no splats to write to {path}: the scene has no finite"
                         f"{' visible (opacity > 1/255)' if fmt == 'ply_compressed' else ''} Gaussians")
    data = splat_bytes(params, fmt, up)
    out = atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    try:
        back = read_splat_file(out, fmt, sh_bands=params["shN"].shape[1])
        problem = None if len(back["means"]) == expected else f"{len(back['means'])} splats"
        problem = problem or (None if all(np.isfinite(v).all() for v in back.values()) else "non-finite values")
    except Exception as e:  # noqa: BLE001 - any reader error means the file is not what was written
        problem = f"{type(e).__name__}: {str(e)[:200]}"
    if problem is not None:
        out.unlink()
        raise RuntimeError(f"{out} did not reopen as the {expected} splats written ({problem}); removed it")
    return out


# -- readers ---------------------------------------------------------------------------------
def read_splat_file(path: str | Path, fmt: str, sh_bands: int = 0) -> dict[str, np.ndarray]:
    """A splat file back as arrays in the file's frame: means [N,3], scales [N,3] (log), quats
    [N,4] (wxyz, unit length for splat / ply_compressed), opacities [N] (logit), sh0 [N,1,3],
    shN [N,K,3]. `sh_bands` (K, the higher-order coefficients per channel) is needed for
    ply_compressed only."""
    reader = {"ply": read_ply, "splat": read_dotsplat, "ply_compressed": read_compressed_ply}[fmt]
    return reader(path, sh_bands) if fmt == "ply_compressed" else reader(path)


def read_ply(path: str | Path) -> dict[str, np.ndarray]:
    """An INRIA 3DGS PLY (any property order, with or without normals)."""
    from plyfile import PlyData

    v = PlyData.read(str(path))["vertex"].data
    names = v.dtype.names
    col = lambda *keys: np.stack([np.asarray(v[k], np.float32) for k in keys], -1)  # noqa: E731
    rest = sorted((k for k in names if k.startswith("f_rest_")), key=lambda k: int(k[7:]))
    n = len(v)
    return {"means": col("x", "y", "z"), "scales": col("scale_0", "scale_1", "scale_2"),
            "quats": col("rot_0", "rot_1", "rot_2", "rot_3"), "opacities": np.asarray(v["opacity"], np.float32),
            "sh0": col("f_dc_0", "f_dc_1", "f_dc_2")[:, None],
            "shN": (col(*rest).reshape(n, 3, -1).transpose(0, 2, 1) if rest else np.zeros((n, 0, 3), np.float32))}


def read_dotsplat(path: str | Path) -> dict[str, np.ndarray]:
    """antimatter15's .splat: float32 position and scale, uint8 RGBA and quaternion (q * 128 + 128)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 32:
        raise ValueError(f"{path}: {raw.size} bytes is not a whole number of 32-byte splats")
    rec = raw.reshape(-1, 32)
    floats = rec[:, :24].copy().view("<f4")  # [N,6]
    rgba = rec[:, 24:28].astype(np.float32) / 255
    quats = (rec[:, 28:32].astype(np.float32) - 128) / 128
    alpha = rgba[:, 3].clip(1e-6, 1 - 1e-6)
    return {"means": floats[:, :3], "scales": np.log(floats[:, 3:6]),
            "quats": quats / np.linalg.norm(quats, axis=1, keepdims=True).clip(1e-12),
            "opacities": np.log(alpha / (1 - alpha)), "sh0": ((rgba[:, :3] - 0.5) / SH_C0)[:, None],
            "shN": np.zeros((len(rec), 0, 3), np.float32)}


def _unpack_111011(p: np.ndarray) -> np.ndarray:
    return np.stack([((p >> 21) & 2047) / 2047, ((p >> 11) & 1023) / 1023, (p & 2047) / 2047], -1).astype(np.float32)


def read_compressed_ply(path: str | Path, sh_bands: int = 0) -> dict[str, np.ndarray]:
    """PlayCanvas's compressed PLY, decoded as its engine does (per chunk of 256: lerp between the
    chunk's bounds; rotations: the largest component's index in the top 2 bits, the other three
    in 10 bits each, in [-1/sqrt2, 1/sqrt2])."""
    from plyfile import PlyData

    ply = PlyData.read(str(path))
    chunk, vert = ply["chunk"].data, ply["vertex"].data
    n = len(vert)
    owner = np.arange(n) // 256
    bounds = lambda *keys: np.stack([np.asarray(chunk[k], np.float32) for k in keys], -1)[owner]  # noqa: E731
    lerp = lambda lo, hi, t: lo + (hi - lo) * t  # noqa: E731
    means = lerp(bounds("min_x", "min_y", "min_z"), bounds("max_x", "max_y", "max_z"),
                 _unpack_111011(vert["packed_position"].astype(np.int64)))
    scales = lerp(bounds("min_scale_x", "min_scale_y", "min_scale_z"), bounds("max_scale_x", "max_scale_y", "max_scale_z"),
                  _unpack_111011(vert["packed_scale"].astype(np.int64)))
    c = vert["packed_color"].astype(np.int64)
    rgba = np.stack([(c >> 24) & 255, (c >> 16) & 255, (c >> 8) & 255, c & 255], -1).astype(np.float32) / 255
    rgb = lerp(bounds("min_r", "min_g", "min_b"), bounds("max_r", "max_g", "max_b"), rgba[:, :3])
    r = vert["packed_rotation"].astype(np.int64)
    largest = r >> 30
    others = np.stack([(r >> 20) & 1023, (r >> 10) & 1023, r & 1023], -1).astype(np.float32) / 1023
    others = (others - 0.5) * math.sqrt(2)
    quats = np.zeros((n, 4), np.float32)
    rows = np.arange(n)
    keep = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[largest]
    quats[rows[:, None], keep] = others
    quats[rows, largest] = np.sqrt(np.clip(1 - (others ** 2).sum(1), 0, None))
    alpha = rgba[:, 3].clip(1e-6, 1 - 1e-6)
    shn = np.zeros((n, sh_bands, 3), np.float32)
    if sh_bands and "sh" in ply:
        sh = ply["sh"].data
        q = np.stack([np.asarray(sh[f"f_rest_{i}"], np.float32) for i in range(3 * sh_bands)], -1)
        shn = ((q + 0.5) / 256 * 8 - 4).reshape(n, 3, sh_bands).transpose(0, 2, 1)
    return {"means": means, "scales": scales, "quats": quats, "opacities": np.log(alpha / (1 - alpha)),
            "sh0": ((rgb - 0.5) / SH_C0)[:, None], "shN": shn}
