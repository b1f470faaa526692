"""Stop training when the scene has stopped changing, without ground truth (`train.convergence`).

Every `every` steps the trainer renders a few fixed validation views (colour and opacity, without
the run's generator) and hands them to ConvergenceMonitor. Single renders jitter from step to step
(score distillation draws a new timestep and noise each step), so the monitor compares averages:
the mean of the last `window` renders against the mean of `window` renders `lag` checks earlier.
The run has converged when that change (mean absolute difference, images in [0, 1]) stays below
`tolerance` for `patience` checks in a row, after `min_steps`. `train.steps` stays the upper bound.
The thresholds were tuned on ToyWorld training prompts (see the README's "Fast by default").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dream3d.kernel.schema import bounded


@dataclass
class ConvergenceConfig:
    enabled: bool = True  # stop early once converged; false = always train.steps
    every: int = bounded(10, 1, None)  # steps between validation renders
    window: int = bounded(5, 1, 100)  # renders averaged on each side of the comparison
    lag: int = bounded(10, 1, 1000)  # checks between the two averaged windows
    tolerance: float = bounded(0.005, 0.0, 1.0)  # mean |change| of the averaged renders that counts as still
    patience: int = bounded(3, 1, 1000)  # checks in a row below tolerance
    min_steps: int = bounded(300, 0, None)  # never stop before this step (tuned on ToyWorld training prompts)


class ConvergenceMonitor:
    """Keeps the last window + lag validation renders and decides when training has converged."""

    def __init__(self, cfg: ConvergenceConfig):
        self.cfg = cfg
        self.renders: list[Tensor] = []  # [V,4,H,W] each, oldest first
        self.calm = 0  # checks in a row below tolerance
        self.change: float | None = None  # the latest measured change
        self.converged_at: int | None = None

    def due(self, step: int) -> bool:
        return self.cfg.enabled and self.converged_at is None and step % self.cfg.every == 0

    def observe(self, step: int, renders: Tensor) -> bool:
        """Record the validation renders [V,4,H,W] made at `step`; True once converged."""
        c = self.cfg
        self.renders = (self.renders + [renders.detach().float().cpu()])[-(c.window + c.lag):]
        if len(self.renders) == c.window + c.lag:
            recent = torch.stack(self.renders[-c.window:]).mean(0)
            earlier = torch.stack(self.renders[:c.window]).mean(0)
            self.change = float((recent - earlier).abs().mean())
            self.calm = self.calm + 1 if self.change < c.tolerance else 0
            if self.calm >= c.patience and step >= c.min_steps:
                self.converged_at = step
        return self.converged_at is not None

    def summary(self) -> dict:
        """For metrics.json: whether and where the run converged, and the last change measured."""
        return {"enabled": self.cfg.enabled, "converged_at": self.converged_at,
                "change": None if self.change is None else round(self.change, 5), "tolerance": self.cfg.tolerance}

    def state_dict(self) -> dict:
        return {"renders": self.renders, "calm": self.calm, "change": self.change, "converged_at": self.converged_at}

    def load_state_dict(self, state: dict) -> None:
        self.renders, self.calm = list(state["renders"]), state["calm"]
        self.change, self.converged_at = state["change"], state["converged_at"]
