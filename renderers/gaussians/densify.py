"""Densification and pruning through gsplat's `DefaultStrategy` (clone small / split large
Gaussians with large screen-space gradients, prune transparent or huge ones), on the trainer's
single optimiser, plus two things the strategy lacks: a cap on the number of Gaussians and an
opacity reset that actually fires (gsplat 1.5.3 tests `step % reset_every == 0 & step > 0`,
which Python reads as a chained comparison that is always false)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from renderers.base import DensifyInfo


@dataclass(frozen=True)
class DensifyConfig:
    """The Densifier's settings (gsplat DefaultStrategy's names in brackets).

    grow_grad2d: mean screen-space gradient above which a Gaussian is cloned or split [grow_grad2d];
    start, stop, every: refine at steps start < step < stop with step % every == 0
    [refine_start_iter, refine_stop_iter, refine_every]; prune_opacity: opacity below which a
    Gaussian is pruned [prune_opa]; grow_scale3d, prune_scale3d: fractions of scene_scale
    (clone below / split above; prune above, which gsplat 1.5.3 does only at steps > reset_every,
    so never when reset_every = 0) [grow_scale3d, prune_scale3d]; reset_every: steps between
    opacity resets, 0 = never; max_gaussians: cap applied after every post_backward (the most
    opaque stay); scene_scale: the scene's size (its bound)."""

    grow_grad2d: float
    start: int
    stop: int
    every: int
    prune_opacity: float
    grow_scale3d: float
    prune_scale3d: float
    reset_every: int
    max_gaussians: int
    scene_scale: float


class _GroupView:
    """One parameter group of a multi-group optimiser, seen as the one-group optimiser gsplat's
    strategy ops expect (they swap `param_groups[0]["params"]` and re-key `state`)."""

    def __init__(self, optimizer: torch.optim.Optimizer, group: dict):
        self.param_groups = [group]
        self.state = optimizer.state


def optimizer_views(optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, _GroupView]:
    """name -> view, for groups named after the Gaussian parameters (one parameter per group)."""
    return {g["name"]: _GroupView(optimizer, g) for g in optimizer.param_groups if g.get("name") in names}


def strategy_info(info: DensifyInfo) -> dict[str, Any]:
    """The `info` dict gsplat's strategy reads (unpacked layout: no gaussian_ids)."""
    return {"means2d": info.means2d, "radii": info.radii, "width": info.width, "height": info.height,
            "n_cameras": info.n_cameras, "gaussian_ids": None}


class Densifier:
    """Runs the strategy after each backward; its running state goes into checkpoints."""

    def __init__(self, config: DensifyConfig):
        from gsplat.strategy import DefaultStrategy

        c = config
        self.config = c
        self.strategy = DefaultStrategy(prune_opa=c.prune_opacity, grow_grad2d=c.grow_grad2d, grow_scale3d=c.grow_scale3d,
                                        prune_scale3d=c.prune_scale3d, refine_start_iter=c.start, refine_stop_iter=c.stop,
                                        refine_every=c.every, reset_every=c.reset_every if c.reset_every > 0 else 10**9)
        self.state: dict[str, Any] = self.strategy.initialize_state(scene_scale=c.scene_scale)

    def pre_backward(self, params: nn.ParameterDict, step: int, info: DensifyInfo) -> None:
        """Before backward: keep the gradient of `info.means2d` (a non-leaf tensor)."""
        self.strategy.step_pre_backward(params, {}, self.state, step, strategy_info(info))

    @torch.no_grad()
    def post_backward(self, params: nn.ParameterDict, optimizer: torch.optim.Optimizer, step: int,
                      info: DensifyInfo) -> None:
        """After backward: accumulate gradients, refine (clone / split / prune), cap the count,
        reset opacities; edits `params` and the optimiser's groups and state in place."""
        from gsplat.strategy.ops import remove, reset_opa

        c = self.config
        views = optimizer_views(optimizer, list(params.keys()))
        self.strategy.step_post_backward(params, views, self.state, step, strategy_info(info), packed=False)
        n = params["means"].shape[0]
        if n > c.max_gaussians:  # keep the most opaque
            order = torch.argsort(params["opacities"].flatten(), descending=True)
            drop = torch.ones(n, dtype=torch.bool, device=order.device)
            drop[order[:c.max_gaussians]] = False
            remove(params, views, self.state, drop)
        if c.reset_every > 0 and 0 < step < c.stop and step % c.reset_every == 0:
            # idempotent, so a future gsplat whose own reset fires does no harm
            reset_opa(params, views, self.state, value=self.strategy.prune_opa * 2.0)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = dict(state)

    def to(self, device: torch.device) -> None:
        """Move the running state (gsplat's grad2d, count, radii) to the Gaussians' device."""
        self.state = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.state.items()}
