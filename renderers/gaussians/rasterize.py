"""One entry point for Gaussian rasterization: gsplat's CUDA kernels on a GPU, the torch twin
(rasterize_torch.py) elsewhere. Both return the same images and the same typed DensifyInfo
(renderers.base): the screen-space means with their gradient, radii and image size that gsplat's
densification strategy reads."""
from __future__ import annotations

import torch
from torch import Tensor

from dream3d.kernel.cameras import Cameras
from renderers.base import DensifyInfo
from renderers.gaussians.model import SH_C0, GaussianModel
from renderers.gaussians.rasterize_torch import project, rasterize_torch


def use_cuda(model: GaussianModel) -> bool:
    return torch.cuda.is_available() and model.means.is_cuda


def rasterize(model: GaussianModel, cameras: Cameras, height: int, width: int, tile: int = 8
              ) -> tuple[Tensor, Tensor, Tensor, DensifyInfo]:
    """(rgb [C,H,W,3] without background, alpha [C,H,W,1], depth [C,H,W,1] = sum(w z) / alpha,
    DensifyInfo for the C cameras). `tile` is the torch path's tile size; gsplat's kernels use their own (16)."""
    device = model.means.device
    viewmats, Ks = cameras.viewmats().to(device), cameras.intrinsics(height, width).to(device)
    if use_cuda(model):
        from gsplat import rasterization

        out, alpha, meta = rasterization(model.means, model.quats, model.scales, model.opacities, model.sh, viewmats, Ks,
                                         width, height, sh_degree=model.sh_degree, render_mode="RGB+ED", packed=False)
        info = DensifyInfo(meta["means2d"], meta["radii"], meta["width"], meta["height"], meta["n_cameras"])
        return out[..., :3], alpha, out[..., 3:4], info
    p = project(model.means, model.quats, model.scales, viewmats, Ks, width, height)
    colors = view_colours(model, viewmats)
    rgb, alpha, depth_sum = rasterize_torch(p, colors, model.opacities, width, height, tile)
    info = DensifyInfo(p.means2d, p.radii, width, height, len(cameras))
    return rgb, alpha, depth_sum / alpha.clamp(min=1e-10), info


def view_colours(model: GaussianModel, viewmats: Tensor) -> Tensor:
    """Colours [C,N,3] from the SH coefficients seen from each camera (gsplat: SH + 0.5, clamped at 0)."""
    if model.sh_degree == 0:
        return (model.params["sh0"][:, 0] * SH_C0 + 0.5).clamp(min=0)[None].expand(viewmats.shape[0], -1, -1)
    from renderers.gaussians.gsplat_torch import spherical_harmonics

    campos = torch.linalg.inv(viewmats)[:, :3, 3]  # [C,3]
    dirs = model.means[None] - campos[:, None]
    sh = model.sh[None].expand(viewmats.shape[0], -1, -1, -1)
    return (spherical_harmonics(model.sh_degree, dirs, sh) + 0.5).clamp(min=0)
