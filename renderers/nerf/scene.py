"""NeRF scene: a radiance field in the box [-bound, bound]^3 rendered by volume rendering."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dream3d.cameras import Cameras
from dream3d.schedules import Schedule
from dream3d.schema import bounded, choice
from renderers.background import BACKGROUNDS, Background
from renderers.base import RenderOutput, Scene
from renderers.nerf.field import RadianceField
from renderers.nerf.occupancy import OccupancyGrid
from renderers.nerf.volume_rendering import render_rays


SAMPLERS = ("occupancy", "dense")


@dataclass
class NeRFConfig:
    name: str = "nerf"
    bound: float = bounded(0.6, 0.1, 10.0)
    num_levels: int = bounded(4, 1, 16)
    base_resolution: int = bounded(16, 2, 512)
    max_resolution: int = bounded(64, 2, 4096)
    features_per_level: int = bounded(2, 1, 8)
    log2_hashmap_size: int = bounded(18, 10, 24)  # levels with res^3 <= 2^this are dense, finer ones hashed
    hidden_dim: int = bounded(32, 4, 512)
    blob_density: float = bounded(10.0, 0.0, 30.0)
    blob_radius: float = bounded(0.5, 0.01, 10.0)
    samples_per_ray: int = bounded(64, 4, 1024)
    eval_samples_per_ray: int = bounded(128, 4, 2048)
    background: str = choice("white", BACKGROUNDS)
    lr_encoding: float = bounded(0.03, 0.0, 10.0)
    lr_network: float = bounded(0.003, 0.0, 10.0)
    lr_background: float = bounded(0.003, 0.0, 10.0)
    sparsity_weight: Any = bounded(0.0, 0.0, None, schedule=True)  # weight of mean rendered opacity
    chunk_rays: int = bounded(8192, 64, None)  # rays per chunk when rendering without gradients
    sampler: str = choice("occupancy", SAMPLERS)  # skip empty space and hidden samples | evaluate every sample
    occupancy_resolution: int = bounded(32, 4, 256)  # cells per axis of the occupancy grid
    occupancy_threshold: float = bounded(0.5, 0.0, None)  # density below which a cell is empty
    occupancy_every: int = bounded(16, 1, None)  # steps between occupancy-grid updates
    min_transmittance: float = bounded(1e-3, 0.0, 1.0)  # occupancy sampler: rays stop below this


class NeRFScene(Scene):
    def __init__(self, cfg: NeRFConfig):
        super().__init__()
        self.cfg = cfg
        self.field = RadianceField(cfg.bound, cfg.num_levels, cfg.base_resolution, cfg.max_resolution,
                                   cfg.features_per_level, cfg.log2_hashmap_size, cfg.hidden_dim,
                                   cfg.blob_density, cfg.blob_radius)
        self.background = Background(cfg.background)
        self.sparsity = Schedule.parse(cfg.sparsity_weight, "sparsity_weight")
        self.occupancy = (OccupancyGrid(cfg.bound, cfg.occupancy_resolution, cfg.occupancy_threshold)
                          if cfg.sampler == "occupancy" else None)

    @property
    def bound(self) -> float:
        return self.cfg.bound

    def render(self, cameras: Cameras, height: int, width: int, generator: torch.Generator | None = None,
               train: bool = True) -> RenderOutput:
        origins, dirs = cameras.rays(height, width)
        o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
        samples = self.cfg.samples_per_ray if train else self.cfg.eval_samples_per_ray
        chunk = o.shape[0] if torch.is_grad_enabled() else self.cfg.chunk_rays
        parts = [render_rays(self.field, o[i:i + chunk], d[i:i + chunk], self.cfg.bound, samples, train, generator,
                             self.occupancy, min_transmittance=self.cfg.min_transmittance)
                 for i in range(0, o.shape[0], chunk)]
        rgb, opacity, depth = (torch.cat(p) for p in zip(*parts))
        rgb = rgb + (1 - opacity) * self.background(d)
        shape = (len(cameras), height, width, -1)
        to_img = lambda v: v.reshape(shape).permute(0, 3, 1, 2)  # noqa: E731
        return RenderOutput(to_img(rgb), to_img(opacity), to_img(depth))

    def optimizer_groups(self) -> list[dict]:
        groups = [{"params": list(self.field.encoding.parameters()), "lr": self.cfg.lr_encoding, "name": "encoding"},
                  {"params": list(self.field.mlp.parameters()), "lr": self.cfg.lr_network, "name": "network"}]
        if self.cfg.background == "learned":
            groups.append({"params": list(self.background.parameters()), "lr": self.cfg.lr_background,
                           "name": "background"})
        return groups

    def regularizers(self, out: RenderOutput, step: int) -> dict[str, Tensor]:
        w = self.sparsity(step)
        return {"sparsity": w * out.alpha.mean()} if w > 0 else {}

    def post_backward(self, step: int, out: RenderOutput, optimizer=None) -> None:
        """Refresh the occupancy grid every `occupancy_every` steps (jitter seeded by the step, so
        a resumed run refreshes it identically)."""
        if self.occupancy is not None and step % self.cfg.occupancy_every == 0:
            self.occupancy.update(self.density, torch.Generator().manual_seed(step))

    def density(self, points: Tensor) -> Tensor:
        return self.field(points)[0]

    def color(self, points: Tensor) -> Tensor:
        return self.field(points)[1]
