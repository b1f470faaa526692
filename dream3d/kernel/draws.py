"""Random draws for a training step: made on the CPU with the run's generator, then moved to the
device the tensors they meet live on.

Why on the CPU: one `torch.Generator` (CPU) serves every device, so a checkpoint holds one
generator state, a run moved between devices resumes with the same stream, and the numbers drawn
do not depend on the device (a stream diverges only where the code draws different amounts, as
the NeRF's nerfacc marcher draws one jitter per ray and the torch marcher one per sample). The copy
costs little next to a step (the largest draw, NeRF ray jitter at 64x64 rays x 64 samples, is 1 MB).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def rand(shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str | None = None) -> Tensor:
    """Uniform [0,1) of `shape` (float32) on `device`."""
    return torch.rand(tuple(shape), generator=generator).to(device)


def randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str | None = None) -> Tensor:
    """Standard normal of `shape` (float32) on `device`."""
    return torch.randn(tuple(shape), generator=generator).to(device)


def randint(low: int, high: int, shape: Sequence[int], generator: torch.Generator | None,
            device: torch.device | str | None = None) -> Tensor:
    """Integers in [low, high) of `shape` (int64) on `device`."""
    return torch.randint(low, high, tuple(shape), generator=generator).to(device)
