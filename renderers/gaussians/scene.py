"""A scene of 3D Gaussians: rendering through gsplat or the torch twin, densification through
gsplat's strategy, and density / colour fields for mesh export."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dream3d.kernel.cameras import Cameras
from dream3d.kernel.schedules import Schedule
from dream3d.kernel.schema import ConfigError, SectionConfig, bounded, choice, server_only
from renderers.background import BACKGROUNDS, Background
from renderers.base import RenderOutput, Scene, SceneInit
from renderers.gaussians.densify import Densifier, DensifyConfig
from renderers.gaussians.model import GaussianModel, ball_points, load_points
from renderers.gaussians.rasterize import rasterize, view_colours
from renderers.gaussians.rasterize_torch import project, rasterize_torch
from renderers.gaussians.splat_files import write_splat_file

INITS = ("ball", "shape", "points")


@dataclass
class GaussianConfig(SectionConfig):
    name: str = "gaussians"
    bound: float = bounded(0.6, 0.1, 10.0)  # half-side of the export box
    init: str = choice("ball", INITS)  # ball = random in a ball (DreamGaussian); shape = a ToyWorld shape; points = a file
    init_shape: str = "sphere"  # init=shape: sphere, cube, cylinder, cone or torus
    init_points: str | None = server_only(None)  # init=points: a point cloud or mesh file trimesh opens (PLY, OBJ, ...)
    num_points: int = bounded(2000, 1, 1_000_000)
    init_radius: float = bounded(0.45, 0.01, 10.0)
    init_opacity: float = bounded(0.3, 0.001, 0.999)
    init_colour: float = bounded(0.5, 0.0, 1.0)  # grey, unless the point file has colours
    scale_mult: float = bounded(1.0, 0.01, 100.0)  # initial scale = this x mean distance to 3 nearest points
    sh_degree: int = bounded(0, 0, 3)
    background: str = choice("white", BACKGROUNDS)
    tile_size: int = bounded(8, 4, 64)  # torch path: 8x8 tiles cull ~3x more work than 16 on a CPU
    lr_means: float = bounded(1e-3, 0.0, 1.0)
    lr_scales: float = bounded(5e-3, 0.0, 1.0)
    lr_quats: float = bounded(5e-3, 0.0, 1.0)
    lr_opacities: float = bounded(5e-2, 0.0, 1.0)
    lr_colours: float = bounded(1e-2, 0.0, 1.0)
    lr_background: float = bounded(3e-3, 0.0, 1.0)
    densify: bool = True
    densify_from: int = bounded(100, 0, None)
    densify_until: int = bounded(700, 0, None)
    densify_every: int = bounded(100, 1, None)
    densify_grad_threshold: float = bounded(0.01, 0.0, None)  # screen-space gradient (SDS-sized; gsplat's default 2e-4)
    grow_scale3d: float = bounded(0.01, 0.0, None)  # below this x bound: clone, above: split
    prune_scale3d: float = bounded(0.5, 0.0, None)  # larger than this x bound: pruned (gsplat: only after opacity resets)
    prune_opacity: float = bounded(0.01, 0.0, 1.0)
    opacity_reset_every: int = bounded(0, 0, None)  # 0 = never; short SDS runs do better without
    max_gaussians: int = bounded(20000, 1, 10_000_000)
    opacity_weight: Any = bounded(0.0, 0.0, None, schedule=True)  # weight of the mean rendered opacity

    def validate(self) -> None:
        if self.init == "points" and not self.init_points:
            raise ConfigError("scene.init=points needs scene.init_points=/path/to/points.ply")

    def densify_config(self) -> DensifyConfig:
        """The Densifier's settings from this section; densify=false stops refining from step 0."""
        return DensifyConfig(grow_grad2d=self.densify_grad_threshold, start=self.densify_from,
                             stop=self.densify_until if self.densify else 0, every=self.densify_every,
                             prune_opacity=self.prune_opacity, grow_scale3d=self.grow_scale3d,
                             prune_scale3d=self.prune_scale3d, reset_every=self.opacity_reset_every,
                             max_gaussians=self.max_gaussians, scene_scale=self.bound)


class GaussianScene(Scene):
    def __init__(self, cfg: GaussianConfig, init: SceneInit | None = None):
        """init=ball draws the means from `init.generator`; init=shape takes `init.points` [N,3]
        (the app samples the shape: dream3d.scenes.build_run_scene); init=points reads the file."""
        super().__init__()
        self.cfg = cfg
        init = init or SceneInit()
        colours = None
        if cfg.init == "ball":
            means = ball_points(cfg.num_points, cfg.init_radius, init.generator)
        elif cfg.init == "shape":
            if init.points is None:
                raise ConfigError("scene.init=shape needs the shape's points (dream3d.scenes.build_run_scene samples them)")
            means = init.points
        else:
            try:
                means, colours = load_points(cfg.init_points)
            except (OSError, ValueError) as e:
                raise ConfigError(f"scene.init_points = {cfg.init_points!r} cannot be read as a point cloud: {e}") from None
        if colours is None:
            colours = torch.full((means.shape[0], 3), cfg.init_colour)
        self.gaussians = GaussianModel(means, colours, cfg.init_opacity, cfg.sh_degree, cfg.scale_mult)
        self.background = Background(cfg.background)
        self.opacity_weight = Schedule.parse(cfg.opacity_weight, "opacity_weight")
        self.densifier = Densifier(cfg.densify_config())

    @property
    def bound(self) -> float:
        return self.cfg.bound

    def render(self, cameras: Cameras, height: int, width: int, generator: torch.Generator | None = None,
               train: bool = True) -> RenderOutput:
        """Images (see RenderOutput) and the DensifyInfo that post_backward hands to densification."""
        cameras = cameras.to(self.device)
        rgb, alpha, depth, info = rasterize(self.gaussians, cameras, height, width, self.cfg.tile_size)
        if train and torch.is_grad_enabled():
            self.densifier.pre_backward(self.gaussians.params, 0, info)
        _, dirs = cameras.rays(height, width)
        rgb = rgb + (1 - alpha) * self.background(dirs)
        to_img = lambda v: v.permute(0, 3, 1, 2)  # noqa: E731
        return RenderOutput(to_img(rgb), to_img(alpha), to_img(depth), densify=info)

    def optimizer_groups(self) -> list[dict]:
        cfg = self.cfg
        lrs = {"means": cfg.lr_means, "scales": cfg.lr_scales, "quats": cfg.lr_quats, "opacities": cfg.lr_opacities,
               "sh0": cfg.lr_colours, "shN": cfg.lr_colours}
        groups = [{"params": [p], "lr": lrs[name], "name": name} for name, p in self.gaussians.params.items()]
        if self.cfg.background == "learned":
            groups.append({"params": list(self.background.parameters()), "lr": self.cfg.lr_background,
                           "name": "background"})
        return groups

    def regularizers(self, out: RenderOutput, step: int) -> dict[str, Tensor]:
        w = self.opacity_weight(step)
        return {"opacity": w * out.alpha.mean()} if w > 0 else {}

    def post_backward(self, step: int, out: RenderOutput, optimizer: torch.optim.Optimizer | None = None) -> None:
        if optimizer is not None and out.densify is not None and self.cfg.densify:
            self.densifier.post_backward(self.gaussians.params, optimizer, step, out.densify)

    # -- checkpoints: N changes with densification -------------------------------------------
    def get_extra_state(self) -> dict:
        return {"densifier": self.densifier.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        self.densifier.load_state_dict(state["densifier"])
        self.densifier.to(self.device)  # a checkpoint loads on the CPU

    def _apply(self, fn, recurse: bool = True):
        """Module.to / cuda / cpu: the densifier's running state goes along with the Gaussians."""
        super()._apply(fn, recurse)
        self.densifier.to(self.device)
        return self

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self.gaussians.resize_like(state_dict, prefix="gaussians.")
        return super().load_state_dict(state_dict, strict, assign)

    def supports_splats(self) -> bool:
        return True

    def log_stats(self) -> dict[str, float]:
        return {"gaussians": len(self.gaussians)}

    def write_splats(self, path: str | Path, fmt: str = "ply", up: str = "-y") -> Path:
        """The Gaussians as a splat file (renderers/gaussians/splat_files.py), checked by reopening it."""
        return write_splat_file(dict(self.gaussians.params), path, fmt, up)

    def isosurface_method(self) -> str:
        """"hull": splats composite at one depth each, so depth carving of an SDS-trained cloud cuts into
        the shape by about a splat's size even from the splats' fronts (surface_maps), while the outlines
        hold (README, Gaussian splats: volumetric IoU on five ToyWorld shapes)."""
        return "hull"

    @torch.no_grad()
    def surface_maps(self, cameras: Cameras, resolution: int, surface_opacity: float = 0.05, chunk: int = 8
                     ) -> tuple[Tensor, Tensor]:
        """For mesh export by carving: opaque [C,1,r,r] (rendered alpha > 1/2) and the distance along
        each pixel's ray to the front (below) of the splat at which its opacity first reaches
        `surface_opacity` [C,1,r,r], rendered by the torch rasterizer `chunk` cameras at a time (on the CPU).

        A splat composites at its centre's depth, but its footprint reaches out to where its own alpha
        falls to 1/2, rho = sqrt(2 ln 2o) standard deviations for opacity o (0 if o <= 1/2). So that depth
        and outline agree, each Gaussian's depth here is where the viewing ray through its centre enters
        that ellipsoid: rho standard deviations of the Gaussian along the ray, 1/sqrt(d^T Sigma^-1 d),
        in front of the centre. With centre depths, carving shrank an SDS-trained cube by about one
        Gaussian radius (volumetric IoU 0.68 against 0.90 for its silhouettes alone)."""
        from renderers.gaussians.gsplat_torch import quat_scale_to_covar_preci

        g = self.gaussians
        _, preci = quat_scale_to_covar_preci(g.quats, g.scales, compute_covar=False)  # [N,3,3]
        rho = torch.sqrt(2 * torch.log((2 * g.opacities).clamp(min=1.0)))  # [N]
        opaque, dist = [], []
        for i in range(0, len(cameras), chunk):
            cams = cameras[i:i + chunk].to(g.means.device)
            viewmats, Ks = cams.viewmats(), cams.intrinsics(resolution, resolution)
            p = project(g.means, g.quats, g.scales, viewmats, Ks, resolution, resolution)
            c2w = cams.c2w()
            to_centre = torch.nn.functional.normalize(g.means[None] - c2w[:, None, :3, 3], dim=-1)  # [c,N,3]
            along = torch.einsum("cni,nij,cnj->cn", to_centre, preci, to_centre).clamp(min=1e-12).rsqrt()
            forward = (to_centre * -c2w[:, None, :3, 2]).sum(-1)  # z-depth per unit of distance along the ray
            front = torch.where(p.depths > 0, (p.depths - rho * along * forward).clamp(min=1e-4), p.depths)
            p = dataclasses.replace(p, depths=front)
            _, alpha, _, z = rasterize_torch(p, view_colours(g, viewmats), g.opacities, resolution, resolution,
                                             self.cfg.tile_size, surface_opacity=surface_opacity)
            _, dirs = cams.rays(resolution, resolution)
            cos = (dirs * -c2w[:, None, None, :3, 2]).sum(-1)[..., None]  # z-depth -> distance along the ray
            opaque.append((alpha > 0.5).float().permute(0, 3, 1, 2).cpu())
            dist.append((z / cos.clamp(min=1e-6)).permute(0, 3, 1, 2).cpu())
        return torch.cat(opaque), torch.cat(dist)

    # -- fields for export ---------------------------------------------------------------------
    @torch.no_grad()
    def _weights(self, points: Tensor, chunk: int = 4096):
        """For chunks of points [M,3]: (slice, ids of Gaussians near the chunk [G], o_g exp(-q/2) [M,G])."""
        from renderers.gaussians.gsplat_torch import quat_scale_to_covar_preci

        g = self.gaussians
        means, opac = g.means.detach(), g.opacities.detach()
        _, preci = quat_scale_to_covar_preci(g.quats.detach(), g.scales.detach(), compute_covar=False)
        reach = 3.0 * g.scales.detach().amax(1)  # beyond 3 sigma a Gaussian contributes < 1.2%
        P6 = torch.stack([preci[:, 0, 0], preci[:, 1, 1], preci[:, 2, 2], 2 * preci[:, 0, 1], 2 * preci[:, 0, 2],
                          2 * preci[:, 1, 2]], 1)
        Pm = torch.einsum("gij,gj->gi", preci, means)
        mPm = (means * Pm).sum(1)
        for i in range(0, points.shape[0], chunk):
            x = points[i:i + chunk]
            lo, hi = x.amin(0), x.amax(0)
            near = ((means + reach[:, None] > lo) & (means - reach[:, None] < hi)).all(1)
            ids = torch.nonzero(near).squeeze(1)
            x6 = torch.stack([x[:, 0] ** 2, x[:, 1] ** 2, x[:, 2] ** 2, x[:, 0] * x[:, 1], x[:, 0] * x[:, 2],
                              x[:, 1] * x[:, 2]], 1)
            q = x6 @ P6[ids].T - 2 * x @ Pm[ids].T + mPm[ids][None]
            yield slice(i, i + x.shape[0]), ids, opac[ids][None] * torch.exp(-0.5 * q.clamp(min=0))

    @torch.no_grad()
    def density(self, points: Tensor) -> Tensor:
        """Summed Gaussian opacity sum_g o_g exp(-q_g(x)/2) [N] (a density-like field for isosurfaces),
        computed on the scene's device and returned on the points' device."""
        x = points.to(self.device)
        out = torch.zeros(x.shape[0], device=x.device)
        for sl, _, w in self._weights(x):
            out[sl] = w.sum(1)
        return out.to(points.device)

    @torch.no_grad()
    def color(self, points: Tensor) -> Tensor:
        """Albedo [N,3]: the Gaussians' DC colours weighted by their contribution at each point
        (the nearest Gaussian's where none reaches)."""
        albedo, means = self.gaussians.albedo.detach(), self.gaussians.means.detach()
        x = points.to(self.device)
        out = torch.empty(x.shape[0], 3, device=x.device)
        for sl, ids, w in self._weights(x):
            total = w.sum(1, keepdim=True)
            out[sl] = (w @ albedo[ids]) / total.clamp(min=1e-12)
            far = total[:, 0] < 1e-6
            if far.any():
                out[sl][far] = albedo[torch.cdist(x[sl][far], means).argmin(1)]
        return out.to(points.device)
