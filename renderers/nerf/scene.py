"""NeRF scene: a radiance field in the box [-bound, bound]^3 rendered by volume rendering."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dream3d.kernel.cameras import Cameras
from dream3d.kernel.schedules import Schedule
from dream3d.kernel.schema import SectionConfig, bounded, choice
from renderers.background import BACKGROUNDS, Background
from renderers.base import RenderOutput, Scene, SceneInit
from renderers.nerf.field import MLP_PRECISIONS, RadianceField
from renderers.nerf.normals import NORMAL_METHODS, with_normals
from renderers.nerf.occupancy import OccupancyGrid
from renderers.nerf.sampling_cuda import NerfaccMarcher, use_cuda
from renderers.nerf.shading import SHADING_MODES, sample_lighting, shade
from renderers.nerf.volume_rendering import render_rays

SAMPLERS = ("occupancy", "dense")


@dataclass
class NeRFConfig(SectionConfig):
    name: str = "nerf"
    bound: float = bounded(0.6, 0.1, 10.0)
    num_levels: int = bounded(4, 1, 16)
    base_resolution: int = bounded(16, 2, 512)
    max_resolution: int = bounded(64, 2, 4096)
    features_per_level: int = bounded(2, 1, 8)
    log2_hashmap_size: int = bounded(18, 10, 24)  # levels with res^3 <= 2^this are dense, finer ones hashed
    hidden_dim: int = bounded(32, 4, 512)
    # bf16: the MLP under bfloat16 autocast (GPUs from Ampere on); off by default until measured on a GPU
    mlp_precision: str = choice("fp32", MLP_PRECISIONS)
    blob_density: float = bounded(3.0, 0.0, 30.0)  # measured on ToyWorld (holes open sooner); SD presets keep Magic3D's 10
    blob_radius: float = bounded(0.5, 0.01, 10.0)
    samples_per_ray: int = bounded(64, 4, 1024)
    eval_samples_per_ray: int = bounded(128, 4, 2048)
    background: str = choice("white", BACKGROUNDS)
    lr_encoding: float = bounded(0.03, 0.0, 10.0)
    lr_network: float = bounded(0.003, 0.0, 10.0)
    lr_background: float = bounded(0.003, 0.0, 10.0)
    sparsity_weight: Any = bounded(0.0, 0.0, None, schedule=True)  # weight of mean rendered opacity
    opacity_entropy_weight: Any = bounded(0.0, 0.0, None, schedule=True)  # binary entropy of opacity: 0 or 1
    orientation_weight: Any = bounded(0.0, 0.0, None, schedule=True)  # normals facing away from the camera
    normal_method: str = choice("analytic", NORMAL_METHODS)  # density gradient by autograd | central differences
    shading: str = choice("albedo", SHADING_MODES)  # training renders: plain albedo | DreamFusion's random shading
    ambient_only_steps: int = bounded(200, 0, None)  # diffuse shading: albedo only before this step (warm-up)
    albedo_ratio: float = bounded(0.2, 0.0, 1.0)  # diffuse shading: share of plain-albedo images
    textureless_ratio: float = bounded(0.5, 0.0, 1.0)  # diffuse shading: share of lit white images among the rest
    ambient_light: float = bounded(0.1, 0.0, 1.0)
    diffuse_light: float = bounded(0.9, 0.0, 1.0)
    light_jitter: float = bounded(0.3, 0.0, None)  # std of the light direction around the camera's
    levels_start: int = bounded(0, 0, 16)  # progressive grid: levels active at step 0 (0 = all from the start)
    levels_every: int = bounded(100, 1, None)  # progressive grid: steps between enabling the next finer level
    chunk_rays: int = bounded(8192, 64, None)  # rays per chunk when rendering without gradients
    sampler: str = choice("occupancy", SAMPLERS)  # skip empty space and hidden samples | evaluate every sample
    occupancy_resolution: int = bounded(32, 4, 256)  # cells per axis of the occupancy grid
    occupancy_threshold: float = bounded(0.5, 0.0, None)  # density below which a cell is empty
    occupancy_every: int = bounded(16, 1, None)  # steps between occupancy-grid updates
    min_transmittance: float = bounded(1e-3, 0.0, 1.0)  # occupancy sampler: rays stop below this


class NeRFScene(Scene):
    def __init__(self, cfg: NeRFConfig, init: SceneInit | None = None):
        """Weights start from torch's global generator (the trainer seeds it); `init` is unused."""
        super().__init__()
        self.cfg = cfg
        self.field = RadianceField(cfg.bound, cfg.num_levels, cfg.base_resolution, cfg.max_resolution,
                                   cfg.features_per_level, cfg.log2_hashmap_size, cfg.hidden_dim,
                                   cfg.blob_density, cfg.blob_radius, cfg.mlp_precision)
        self.background = Background(cfg.background)
        self.sparsity = Schedule.parse(cfg.sparsity_weight, "sparsity_weight")
        self.opacity_entropy = Schedule.parse(cfg.opacity_entropy_weight, "opacity_entropy_weight")
        self.orientation = Schedule.parse(cfg.orientation_weight, "orientation_weight")
        self.occupancy = (OccupancyGrid(cfg.bound, cfg.occupancy_resolution, cfg.occupancy_threshold)
                          if cfg.sampler == "occupancy" else None)
        self._marcher: NerfaccMarcher | None = None  # made on the first CUDA render (needs nerfacc's kernels)
        self.step = 0
        self.begin_step(0)

    @property
    def bound(self) -> float:
        return self.cfg.bound

    def begin_step(self, step: int) -> None:
        """Progressive grid levels (coarse to fine) and the shading warm-up follow the step."""
        self.step = step
        levels = self.cfg.num_levels if self.cfg.levels_start == 0 else self.cfg.levels_start + step // self.cfg.levels_every
        self.field.encoding.active_levels = min(levels, self.cfg.num_levels)

    def _apply(self, fn, recurse: bool = True):
        """Module.to / cuda / cpu: nerfacc's estimator is made again on the new device at the next render."""
        self._marcher = None
        return super()._apply(fn, recurse)

    def render(self, cameras: Cameras, height: int, width: int, generator: torch.Generator | None = None,
               train: bool = True) -> RenderOutput:
        """Training renders (train=True) may be shaded and carry normals [B,3,H,W] and the
        orientation penalty [B,H,W] (RenderOutput.normal, .orientation) when shading or the
        orientation loss needs them; evaluation renders are albedo, in chunks of `chunk_rays` rays
        without gradients."""
        cfg = self.cfg
        origins, dirs = cameras.to(self.device).rays(height, width)
        o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
        samples = cfg.samples_per_ray if train else cfg.eval_samples_per_ray
        lighting = None
        if train and cfg.shading == "diffuse" and self.step >= cfg.ambient_only_steps:
            lighting = sample_lighting(cameras.positions, generator, cfg.albedo_ratio, cfg.textureless_ratio,
                                       cfg.light_jitter)
        normals = train and (lighting is not None or self.orientation(self.step) > 0)
        field = with_normals(self.field, cfg.normal_method) if normals else self.field
        chunk = o.shape[0] if torch.is_grad_enabled() else cfg.chunk_rays
        if use_cuda(self.field) and self.occupancy is not None:
            if self._marcher is None:
                self._marcher = NerfaccMarcher(self.occupancy)
            parts = [self._marcher.render(field, o[i:i + chunk], d[i:i + chunk], samples, train, cfg.min_transmittance,
                                          generator) for i in range(0, o.shape[0], chunk)]
        else:
            parts = [render_rays(field, o[i:i + chunk], d[i:i + chunk], cfg.bound, samples, train, generator,
                                 self.occupancy, min_transmittance=cfg.min_transmittance)
                     for i in range(0, o.shape[0], chunk)]
        ray = type(parts[0])(*(torch.cat(p) if p[0] is not None else None for p in zip(*parts)))
        b = len(cameras)
        rgb = ray.rgb
        if lighting is not None:
            per_image = lambda v: v.reshape(b, height * width, -1)  # noqa: E731
            rgb = shade(per_image(rgb), per_image(ray.normal), per_image(ray.opacity), lighting, cfg.ambient_light,
                        cfg.diffuse_light).reshape(-1, 3)
        rgb = rgb + (1 - ray.opacity) * self.background(d)
        to_img = lambda v: v.reshape(b, height, width, -1).permute(0, 3, 1, 2)  # noqa: E731
        return RenderOutput(to_img(rgb), to_img(ray.opacity), to_img(ray.depth),
                            normal=to_img(ray.normal) if normals else None,
                            orientation=ray.orientation.reshape(b, height, width) if normals else None)

    def optimizer_groups(self) -> list[dict]:
        groups = [{"params": list(self.field.encoding.parameters()), "lr": self.cfg.lr_encoding, "name": "encoding"},
                  {"params": list(self.field.mlp.parameters()), "lr": self.cfg.lr_network, "name": "network"}]
        if self.cfg.background == "learned":
            groups.append({"params": list(self.background.parameters()), "lr": self.cfg.lr_background,
                           "name": "background"})
        return groups

    def regularizers(self, out: RenderOutput, step: int) -> dict[str, Tensor]:
        """Scheduled: sparsity (mean opacity), opacity entropy (pushes each pixel's opacity to 0 or
        1), orientation (DreamFusion's penalty on normals facing away from the camera)."""
        losses = {}
        if (w := self.sparsity(step)) > 0:
            losses["sparsity"] = w * out.alpha.mean()
        if (w := self.opacity_entropy(step)) > 0:
            a = out.alpha.clamp(1e-5, 1 - 1e-5)
            losses["opacity_entropy"] = w * -(a * a.log() + (1 - a) * (1 - a).log()).mean()
        if (w := self.orientation(step)) > 0 and out.orientation is not None:
            losses["orientation"] = w * out.orientation.mean()
        return losses

    def post_backward(self, step: int, out: RenderOutput, optimizer=None) -> None:
        """Refresh the occupancy grid every `occupancy_every` steps (jitter seeded by the step, so
        a resumed run refreshes it identically)."""
        if self.occupancy is not None and step % self.cfg.occupancy_every == 0:
            self.occupancy.update(self.density, torch.Generator().manual_seed(step))

    def density(self, points: Tensor) -> Tensor:
        """[N] on the points' device (computed on the scene's: export queries from CPU grids)."""
        return self.field(points.to(self.device))[0].to(points.device)

    def occupied(self, points: Tensor) -> Tensor | None:
        """The occupancy grid's verdict (scene.sampler=occupancy), as renders use it; None when dense."""
        return None if self.occupancy is None else self.occupancy(points.to(self.device)).to(points.device)

    def color(self, points: Tensor) -> Tensor:
        return self.field(points.to(self.device))[1].to(points.device)
