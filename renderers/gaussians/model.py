"""Learnable 3D Gaussians in gsplat's parameter layout, and their initialisations."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

SH_C0 = 0.28209479177387814  # Y_0^0: colour = SH_C0 * sh0 + 0.5


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    return (rgb - 0.5) / SH_C0


def knn_scales(points: Tensor, k: int = 3, chunk: int = 2048) -> Tensor:
    """Mean distance to the k nearest other points [N] (torch, chunked; no CUDA knn)."""
    out = []
    for i in range(0, points.shape[0], chunk):
        d = torch.cdist(points[i:i + chunk], points)
        d[torch.arange(d.shape[0], device=d.device), torch.arange(i, i + d.shape[0], device=d.device)] = math.inf
        out.append(d.topk(min(k, points.shape[0] - 1), largest=False).values.mean(1))
    return torch.cat(out)


def ball_points(n: int, radius: float, generator: torch.Generator | None = None) -> Tensor:
    """n points uniform in a ball [n,3] (DreamGaussian's initialisation)."""
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1)
    return d * radius * torch.rand(n, 1, generator=generator) ** (1 / 3)


def load_points(path: str) -> tuple[Tensor, Tensor | None]:
    """Points [N,3] and colours [N,3] in [0,1] (or None) from a point cloud or mesh file (trimesh)."""
    import numpy as np
    import trimesh

    geom = trimesh.load(path, process=False)
    if isinstance(geom, trimesh.Trimesh):
        pts, _ = trimesh.sample.sample_surface(geom, 4096, seed=0)
        return torch.as_tensor(np.asarray(pts), dtype=torch.float32), None
    pts = torch.as_tensor(np.asarray(geom.vertices), dtype=torch.float32)
    colours = getattr(geom, "colors", None)
    if colours is not None and len(colours) == len(pts):
        return pts, torch.as_tensor(np.asarray(colours)[:, :3], dtype=torch.float32) / 255.0
    return pts, None


class GaussianModel(nn.Module):
    """means [N,3], log-scales [N,3], quaternions [N,4] (wxyz, unnormalised), opacity logits [N],
    SH coefficients sh0 [N,1,3] and shN [N,(d+1)^2-1,3], in one ParameterDict named as gsplat's
    densification strategy expects (it replaces the tensors when Gaussians are added or removed)."""

    def __init__(self, means: Tensor, colours: Tensor, opacity: float, sh_degree: int = 0, scale_mult: float = 1.0):
        super().__init__()
        n = means.shape[0]
        scales = (knn_scales(means) * scale_mult).clamp(min=1e-4)
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1
        self.sh_degree = sh_degree
        self.params = nn.ParameterDict({
            "means": nn.Parameter(means.clone()),
            "scales": nn.Parameter(scales.log()[:, None].repeat(1, 3)),
            "quats": nn.Parameter(quats),
            "opacities": nn.Parameter(torch.logit(torch.full((n,), opacity))),
            "sh0": nn.Parameter(rgb_to_sh0(colours)[:, None, :].clone()),
            "shN": nn.Parameter(torch.zeros(n, (sh_degree + 1) ** 2 - 1, 3)),
        })

    def __len__(self) -> int:
        return self.params["means"].shape[0]

    @property
    def means(self) -> Tensor:
        return self.params["means"]

    @property
    def scales(self) -> Tensor:
        return self.params["scales"].exp()

    @property
    def quats(self) -> Tensor:
        return self.params["quats"]

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.params["opacities"])

    @property
    def sh(self) -> Tensor:
        """All SH coefficients [N,(d+1)^2,3]."""
        return torch.cat([self.params["sh0"], self.params["shN"]], 1)

    @property
    def albedo(self) -> Tensor:
        """View-independent colour [N,3] in [0,1] (the DC term)."""
        return (self.params["sh0"][:, 0] * SH_C0 + 0.5).clamp(0, 1)

    def resize_like(self, state: dict[str, Tensor], prefix: str = "") -> None:
        """Give each parameter the row count of a saved state (densification changes N)."""
        for name, p in self.params.items():
            saved = state.get(f"{prefix}params.{name}")
            if saved is not None and saved.shape != p.shape:
                self.params[name] = nn.Parameter(torch.zeros(saved.shape, dtype=p.dtype, device=p.device))
