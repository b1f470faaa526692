"""Differentiable 3D Gaussian splatting in pure PyTorch (Kerbl et al. 2023, "3D Gaussian Splatting").

Projection reuses gsplat's torch reference (through the adapter gsplat_torch.py: EWA splatting with
a 0.3 px low-pass, 3.33-sigma radii). Compositing follows gsplat's CUDA kernel rule for rule: per
pixel, front to back by camera depth, alpha = min(0.999, o exp(-power)) (gsplat 1.5's clamp),
Gaussians with alpha < 1/255 skipped (gsplat also skips power > 0, which here comes only from
rounding and is clamped to 0), and a pixel stops before the Gaussian that would bring its
transmittance to <= 1e-4. Pixels are processed in square tiles (`tile`; scenes use
scene.tile_size, 8x8 by default): each tile composites only the Gaussians whose screen-space box
touches it, in chunks along depth, and tiles whose pixels have all terminated drop out of later
chunks (early termination).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4


@dataclass
class Projected:
    """Per camera and Gaussian: pixel centres means2d [C,N,2], conics (a, b, c) of the inverse 2D
    covariance [C,N,3], camera depths [C,N], integer radii [C,N,2] (0 = culled)."""

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor


def project(means: Tensor, quats: Tensor, scales: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int,
            near_plane: float = 0.01) -> Projected:
    """Project Gaussians (means [N,3], unnormalised quats [N,4] wxyz, scales [N,3]) into C cameras
    (world-to-camera viewmats [C,4,4] in OpenCV axes, intrinsics Ks [C,3,3])."""
    from renderers.gaussians.gsplat_torch import fully_fused_projection, quat_scale_to_covar_preci

    covars, _ = quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False)
    radii, means2d, depths, conics, _ = fully_fused_projection(means, covars, viewmats, Ks, width, height,
                                                               near_plane=near_plane)
    return Projected(means2d, conics, depths, radii)


def quadratic_coefficients(means2d: Tensor, conics: Tensor) -> Tensor:
    """sigma(x, y) = 0.5 a dx^2 + b dx dy + 0.5 c dy^2 as coefficients [...,6] of (x^2, xy, y^2, x, y, 1),
    so that sigma over a tile's pixels is one matrix product. Use tile-local coordinates to keep
    the float32 cancellation small."""
    mx, my = means2d.unbind(-1)
    a, b, c = conics.unbind(-1)
    return torch.stack([0.5 * a, b, 0.5 * c, -(a * mx + b * my), -(c * my + b * mx),
                        0.5 * a * mx * mx + b * mx * my + 0.5 * c * my * my], -1)


def _tile_lists(p: Projected, c: int, width: int, height: int, tile: int) -> tuple[Tensor, Tensor, Tensor]:
    """Depth-sorted Gaussian ids per tile [T,K] (-1 padded), their counts [T], tile origins [T,2]."""
    visible = (p.radii[c] > 0).all(-1) & (p.depths[c] > 0)
    ids = torch.nonzero(visible).squeeze(1)
    ids = ids[torch.argsort(p.depths[c, ids], stable=True)]
    m, r = p.means2d[c, ids].detach(), p.radii[c, ids].float()
    tw, th = (width + tile - 1) // tile, (height + tile - 1) // tile
    dev = m.device
    ty, tx = torch.meshgrid(torch.arange(th, device=dev), torch.arange(tw, device=dev), indexing="ij")
    origin = torch.stack([tx.reshape(-1), ty.reshape(-1)], -1).float() * tile  # [T,2] (x, y)
    lo, hi = m - r, m + r  # the Gaussian's screen box, as gsplat's tile intersection
    touches = ((hi[None, :, 0] > origin[:, None, 0]) & (lo[None, :, 0] < origin[:, None, 0] + tile)
               & (hi[None, :, 1] > origin[:, None, 1]) & (lo[None, :, 1] < origin[:, None, 1] + tile))  # [T,M]
    counts = touches.sum(1)
    k = int(counts.max()) if counts.numel() else 0
    lists = torch.full((touches.shape[0], max(k, 1)), -1, dtype=torch.long, device=dev)
    slot = torch.cumsum(touches.long(), 1) - 1
    t_idx, m_idx = torch.nonzero(touches, as_tuple=True)
    lists[t_idx, slot[t_idx, m_idx]] = ids[m_idx]
    return lists, counts, origin


def rasterize_torch(p: Projected, colors: Tensor, opacities: Tensor, width: int, height: int, tile: int = 16,
                    chunk: int = 128, surface_opacity: float | None = None) -> tuple[Tensor, ...]:
    """Composite projected Gaussians into C images.

    colors [C,N,D] (or [N,D]), opacities [N] -> (colour [C,H,W,D], alpha [C,H,W,1], expected depth
    sum(w z) [C,H,W,1], not normalised by alpha), without a background. With `surface_opacity` q,
    also the depth of the Gaussian at which each pixel's opacity first reaches q [C,H,W,1] (0 if never).
    """
    C, N = p.depths.shape
    if colors.dim() == 2:
        colors = colors[None].expand(C, -1, -1)
    D = colors.shape[-1]
    dev = colors.device
    iy, ix = torch.meshgrid(torch.arange(tile, device=dev), torch.arange(tile, device=dev), indexing="ij")
    x, y = ix.reshape(-1).to(colors.dtype) + 0.5, iy.reshape(-1).to(colors.dtype) + 0.5  # pixel centres in a tile
    monomials = torch.stack([x * x, x * y, y * y, x, y, torch.ones_like(x)], -1)  # [P,6]
    per_camera = [_tile_lists(p, c, width, height, tile) for c in range(C)]
    k_max = max(lists.shape[1] for lists, _, _ in per_camera)
    # every camera's tiles in one batch: ids index the flattened [C*N] per-camera arrays
    lists = torch.cat([torch.nn.functional.pad(torch.where(lists >= 0, lists + c * N, -1), (0, k_max - lists.shape[1]),
                                               value=-1) for c, (lists, _, _) in enumerate(per_camera)])
    counts = torch.cat([counts for _, counts, _ in per_camera])
    origin = torch.cat([origin for _, _, origin in per_camera]).to(colors.dtype)
    means2d, conics, depths = p.means2d.reshape(C * N, 2), p.conics.reshape(C * N, 3), p.depths.reshape(C * N)
    opac = opacities.repeat(C)
    feats = torch.cat([colors.reshape(C * N, D), depths[:, None]], -1)  # colour and depth composite together
    n_tiles, P = lists.shape[0], monomials.shape[0]
    extra = 0 if surface_opacity is None else 1
    acc = torch.zeros(n_tiles, P, D + 2 + extra, dtype=colors.dtype, device=dev)  # colour, depth, alpha[, surface depth]
    trans = torch.ones(n_tiles, P, dtype=colors.dtype, device=dev)
    for k0 in range(0, k_max, chunk):
        active = torch.nonzero((counts > k0) & (trans > T_MIN).any(1)).squeeze(1)
        if active.numel() == 0:
            break
        g = lists[active, k0:k0 + chunk]  # [A,K]
        pad = g < 0
        g = g.clamp(min=0)
        coef = quadratic_coefficients(means2d[g] - origin[active][:, None], conics[g])
        # sigma >= 0 for the positive-definite conics projection gives; expanded, it can round to just below 0
        # near a Gaussian's centre, which gsplat's direct form (its `sigma < 0` skip) never sees: clamp, not skip
        sigma = torch.einsum("pm,akm->apk", monomials, coef).clamp(min=0)  # [A,P,K]
        alpha = (opac[g][:, None] * torch.exp(-sigma)).clamp(max=ALPHA_MAX)
        alpha = torch.where((alpha < ALPHA_MIN) | pad[:, None], torch.zeros_like(alpha), alpha)
        t_after = trans[active][:, :, None] * torch.cumprod(1 - alpha, 2)
        t_before = torch.cat([trans[active][:, :, None], t_after[:, :, :-1]], 2)
        w = alpha * t_before * (t_after > T_MIN)
        parts = [torch.einsum("apk,akd->apd", w, feats[g]), w.sum(2, keepdim=True)]
        if surface_opacity is not None:
            q = 1 - surface_opacity
            crossing = ((t_after < q) & (t_before >= q) & (w > 0)).to(w.dtype)
            parts.append(torch.einsum("apk,ak->ap", crossing, depths[g])[..., None])
        acc = acc.index_add(0, active, torch.cat(parts, -1))
        trans = trans.index_copy(0, active, t_after[:, :, -1])
    out = torch.stack([_untile(a, width, height, tile) for a in acc.chunk(C)])
    maps = (out[..., :D], out[..., D + 1:D + 2], out[..., D:D + 1])
    return maps if surface_opacity is None else (*maps, out[..., D + 2:])


def _untile(acc: Tensor, width: int, height: int, tile: int) -> Tensor:
    """[T,P,F] tiles (row-major) -> [H,W,F] image, cropping the padding of partial tiles."""
    tw, th = (width + tile - 1) // tile, (height + tile - 1) // tile
    img = acc.reshape(th, tw, tile, tile, -1).permute(0, 2, 1, 3, 4).reshape(th * tile, tw * tile, -1)
    return img[:height, :width]
