"""Radiance field for text-to-3D: grid encoding -> small MLP -> (density, albedo).

Density starts as a blob (Magic3D/threestudio): sigma = exp(raw + blob_density * (1 - r / blob_radius)),
so optimisation begins from an opaque ball instead of empty space or fog.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from renderers.nerf.encoding import GridEncoding

MAX_LOG_DENSITY = 15.0
MLP_PRECISIONS = ("fp32", "bf16")


class RadianceField(nn.Module):
    def __init__(self, bound: float, num_levels: int, base_resolution: int, max_resolution: int, features: int,
                 log2_hashmap_size: int, hidden_dim: int, blob_density: float, blob_radius: float,
                 mlp_precision: str = "fp32"):
        """mlp_precision bf16: the MLP runs under bfloat16 autocast (no loss scaling needed, unlike
        fp16; the grid features, density activation and everything after stay fp32)."""
        super().__init__()
        if mlp_precision not in MLP_PRECISIONS:
            raise ValueError(f"mlp_precision {mlp_precision!r}; valid: {', '.join(MLP_PRECISIONS)}")
        self.bound, self.blob_density, self.blob_radius = bound, blob_density, blob_radius
        self.mlp_precision = mlp_precision
        self.encoding = GridEncoding(num_levels, base_resolution, max_resolution, features, log2_hashmap_size)
        self.mlp = nn.Sequential(nn.Linear(self.encoding.out_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 4))

    def forward(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """World points [P,3] -> density [P] >= 0 and albedo [P,3] in [0,1]."""
        feats = self.encoding((points / self.bound + 1) / 2)
        if self.mlp_precision == "fp32":
            h = self.mlp(feats)
        else:
            with torch.autocast(points.device.type, dtype=torch.bfloat16):
                h = self.mlp(feats).float()
        r = points.norm(dim=-1)
        log_sigma = h[:, 0] + self.blob_density * (1 - r / self.blob_radius)
        return torch.exp(log_sigma.clamp(max=MAX_LOG_DENSITY)), torch.sigmoid(h[:, 1:])
