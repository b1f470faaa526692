"""The 3D Gaussian Splatting PLY layout (Kerbl et al. 2023's `point_cloud.ply`) that splat viewers
read: x y z, nx ny nz (zeros), f_dc_0..2, f_rest_* (channel-major), opacity (logit), scale_0..2
(log), rot_0..3 (quaternion w x y z), as binary little-endian float32. Coordinates are dream3d's
world frame (+Y up, metres)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dream3d.kernel.atomic_io import atomic_write
from renderers.gaussians.model import GaussianModel


def attribute_names(sh_rest: int) -> list[str]:
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(3 * sh_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


@torch.no_grad()
def write_gaussian_ply(model: GaussianModel, path: str | Path) -> Path:
    from plyfile import PlyData, PlyElement

    p = {k: v.detach().cpu().float() for k, v in model.params.items()}
    n = p["means"].shape[0]
    rest = p["shN"].transpose(1, 2).reshape(n, -1)  # [N, 3*(K-1)], channel-major as the reference code
    cols = torch.cat([p["means"], torch.zeros(n, 3), p["sh0"][:, 0], rest, p["opacities"][:, None], p["scales"],
                      p["quats"]], 1).numpy()
    names = attribute_names(p["shN"].shape[1])
    data = np.empty(n, dtype=[(name, "<f4") for name in names])
    for i, name in enumerate(names):
        data[name] = cols[:, i]
    return atomic_write(path, lambda tmp: PlyData([PlyElement.describe(data, "vertex")]).write(tmp))


def read_gaussian_ply(path: str | Path) -> dict[str, np.ndarray]:
    """The raw attributes by name (for validation and tests)."""
    from plyfile import PlyData

    v = PlyData.read(str(path))["vertex"].data
    return {name: np.asarray(v[name]) for name in v.dtype.names}
