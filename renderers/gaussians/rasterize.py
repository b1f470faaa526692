"""One entry point for Gaussian rasterization: gsplat's CUDA kernels on a GPU, the torch twin
(rasterize_torch.py) elsewhere. Both return the same images and the `meta` keys gsplat's
densification strategy reads (means2d with its gradient, radii, width, height, n_cameras)."""
from __future__ import annotations

import torch
from torch import Tensor

from dream3d.cameras import Cameras
from renderers.gaussians.model import SH_C0, GaussianModel
from renderers.gaussians.rasterize_torch import project, rasterize_torch


def use_cuda(model: GaussianModel) -> bool:
    return torch.cuda.is_available() and model.means.is_cuda


def rasterize(model: GaussianModel, cameras: Cameras, height: int, width: int, tile: int = 8
              ) -> tuple[Tensor, Tensor, Tensor, dict]:
    """(rgb [C,H,W,3] without background, alpha [C,H,W,1], depth [C,H,W,1] = sum(w z) / alpha, meta).
    `tile` is the torch path's tile size; gsplat's kernels use their own (16)."""
    device = model.means.device
    viewmats, Ks = cameras.viewmats().to(device), cameras.intrinsics(height, width).to(device)
    if use_cuda(model):
        from gsplat import rasterization

        out, alpha, meta = rasterization(model.means, model.quats, model.scales, model.opacities, model.sh, viewmats, Ks,
                                         width, height, sh_degree=model.sh_degree, render_mode="RGB+ED", packed=False)
        return out[..., :3], alpha, out[..., 3:4], meta
    p = project(model.means, model.quats, model.scales, viewmats, Ks, width, height)
    colors = view_colours(model, viewmats)
    rgb, alpha, depth_sum = rasterize_torch(p, colors, model.opacities, width, height, tile)
    meta = {"means2d": p.means2d, "radii": p.radii, "width": width, "height": height, "n_cameras": len(cameras),
            "gaussian_ids": None}
    return rgb, alpha, depth_sum / alpha.clamp(min=1e-10), meta


def view_colours(model: GaussianModel, viewmats: Tensor) -> Tensor:
    """Colours [C,N,3] from the SH coefficients seen from each camera (gsplat: SH + 0.5, clamped at 0)."""
    if model.sh_degree == 0:
        return (model.params["sh0"][:, 0] * SH_C0 + 0.5).clamp(min=0)[None].expand(viewmats.shape[0], -1, -1)
    from gsplat.cuda._torch_impl import _spherical_harmonics

    campos = torch.linalg.inv(viewmats)[:, :3, 3]  # [C,3]
    dirs = model.means[None] - campos[:, None]
    sh = model.sh[None].expand(viewmats.shape[0], -1, -1, -1)
    return (_spherical_harmonics(model.sh_degree, dirs, sh) + 0.5).clamp(min=0)
