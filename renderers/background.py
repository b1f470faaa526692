"""Backgrounds: a fixed colour, or a small MLP on the ray direction (learned)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

BACKGROUNDS = ("white", "black", "learned")


class Background(nn.Module):
    def __init__(self, kind: str = "white"):
        super().__init__()
        if kind not in BACKGROUNDS:
            raise ValueError(f"unknown background {kind!r}; valid: {', '.join(BACKGROUNDS)}")
        self.kind = kind
        if kind == "learned":
            self.mlp = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, dirs: Tensor) -> Tensor:
        """Colour [...,3] for unit ray directions [...,3]."""
        if self.kind == "learned":
            return torch.sigmoid(self.mlp(dirs))
        value = 1.0 if self.kind == "white" else 0.0
        return torch.full_like(dirs, value)
