"""A triangle-mesh scene: DMTet geometry (renderers/mesh/dmtet.py) with an albedo field on its
surface, rendered by the mesh rasteriser (renderers/mesh/rasterize_torch.py).

The refinement stages of Magic3D (Lin et al. 2023) and Fantasia3D (Chen et al. 2023): geometry
(SDF and vertex offsets on the tetrahedral grid; with shading=diffuse, seen through DreamFusion's
shaded and textureless renders, as for Stable Diffusion) and then texture (`freeze_geometry()`:
only the albedo field learns, on plain albedo renders). The surface is explicit, so the
exported mesh is the rendered one (`surface_mesh`), watertight where the grid's surface is closed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dream3d.kernel.cameras import Cameras
from dream3d.kernel.schedules import Schedule
from dream3d.kernel.schema import ConfigError, SectionConfig, bounded, choice
from renderers.background import BACKGROUNDS, Background
from renderers.base import RenderOutput, Scene, SceneInit
from renderers.mesh.dmtet import grid_edges, marching_tets, sdf_sign_loss, tet_grid
from renderers.mesh.rasterize import RASTERIZERS, antialias, check_rasterizer, interpolate, rasterize
from renderers.mesh.regularizers import (
    enclosed_volume,
    hidden_area,
    hidden_faces,
    hidden_volume,
    laplacian_loss,
    normal_consistency,
    vertex_normals,
)
from renderers.nerf.encoding import GridEncoding
from renderers.nerf.shading import SHADING_MODES, sample_lighting, shade


@dataclass
class MeshConfig(SectionConfig):
    name: str = "mesh"
    bound: float = bounded(0.6, 0.1, 10.0)  # the tetrahedral grid spans [-bound, bound]^3
    grid_resolution: int = bounded(32, 4, 256)  # grid cells per axis (6 tetrahedra each)
    deform: float = bounded(0.25, 0.0, 0.5)  # largest vertex offset, in grid cells (tanh-bounded); 0 = none
    init_radius: float = bounded(0.4, 0.01, 10.0)  # a sphere, when the caller gives no initial SDF
    num_levels: int = bounded(4, 1, 16)  # albedo field: grid encoding and MLP, as the NeRF's
    base_resolution: int = bounded(16, 2, 512)
    max_resolution: int = bounded(64, 2, 4096)
    features_per_level: int = bounded(2, 1, 8)
    log2_hashmap_size: int = bounded(18, 10, 24)
    hidden_dim: int = bounded(32, 4, 512)
    background: str = choice("white", BACKGROUNDS)
    shading: str = choice("albedo", SHADING_MODES)  # training renders: plain albedo | DreamFusion's random shading
    albedo_ratio: float = bounded(0.2, 0.0, 1.0)
    textureless_ratio: float = bounded(0.5, 0.0, 1.0)
    ambient_light: float = bounded(0.1, 0.0, 1.0)
    diffuse_light: float = bounded(0.9, 0.0, 1.0)
    light_jitter: float = bounded(0.3, 0.0, None)
    lr_sdf: float = bounded(1e-3, 0.0, 10.0)  # in world units per step (Adam)
    lr_deform: float = bounded(1e-2, 0.0, 10.0)
    lr_encoding: float = bounded(0.03, 0.0, 10.0)
    lr_network: float = bounded(0.003, 0.0, 10.0)
    lr_background: float = bounded(0.003, 0.0, 10.0)
    normal_consistency_weight: Any = bounded(0.1, 0.0, None, schedule=True)  # 1 - cos between neighbouring faces
    laplacian_weight: Any = bounded(0.0, 0.0, None, schedule=True)  # vertex to its neighbours' mean, in cells^2
    # enclosed volume (world units^3): of the shapes the views allow, the least; it flattens what the cameras
    # barely see (a bulging underside) and, without Laplacian smoothing, caves in flat faces (README: Mesh refinement)
    volume_weight: Any = bounded(0.0, 0.0, None, schedule=True)
    # the same pull on the faces no training camera sees (normal more than hidden_angle degrees from every view
    # direction of the caller's camera elevations, SceneInit.view_elevations): flattens a bulging underside
    # without caving in the faces the views do see
    hidden_volume_weight: Any = bounded(0.0, 0.0, None, schedule=True)
    # the area of those faces (world units^2): a bulge or a dent there costs area, a flat face spanning the rim none
    hidden_area_weight: Any = bounded(0.0, 0.0, None, schedule=True)
    hidden_angle: float = bounded(45.0, 0.0, 180.0)
    sdf_weight: Any = bounded(0.01, 0.0, None, schedule=True)  # DMTet's sign regulariser
    # auto: nvdiffrast for a mesh on a GPU when installed, else the torch rasteriser (renderers/mesh/rasterize.py)
    rasterizer: str = choice("auto", RASTERIZERS)

    def validate(self) -> None:
        check_rasterizer(self.rasterizer, "scene.rasterizer")


class AlbedoField(nn.Module):
    """World points [P,3] in the box -> albedo [P,3] in [0,1]: grid encoding and a small MLP."""

    def __init__(self, cfg: MeshConfig):
        super().__init__()
        self.bound = cfg.bound
        self.encoding = GridEncoding(cfg.num_levels, cfg.base_resolution, cfg.max_resolution, cfg.features_per_level,
                                     cfg.log2_hashmap_size)
        self.mlp = nn.Sequential(nn.Linear(self.encoding.out_dim, cfg.hidden_dim), nn.ReLU(), nn.Linear(cfg.hidden_dim, 3))

    def forward(self, points: Tensor) -> Tensor:
        return torch.sigmoid(self.mlp(self.encoding((points / self.bound + 1).clamp(0, 2) / 2)))


class MeshScene(Scene):
    def __init__(self, cfg: MeshConfig, init: SceneInit | None = None):
        """init.sdf: signed distances [N,N,N] (< 0 inside) sampled at linspace(-bound, bound, N) on x, y, z
        (e.g. from a finished NeRF or Gaussian run: dream3d.refine); without it, a sphere of init_radius."""
        super().__init__()
        self.cfg = cfg
        verts, tets = tet_grid(cfg.grid_resolution)
        self.register_buffer("grid", verts * cfg.bound, persistent=False)
        self.register_buffer("tets", tets, persistent=False)
        self.register_buffer("edges", grid_edges(cfg.grid_resolution), persistent=False)
        init = init or SceneInit()
        if init.sdf is not None:
            sdf = sample_grid(init.sdf, verts)
        else:
            sdf = self.grid.norm(dim=1) - cfg.init_radius
        self.sdf = nn.Parameter(sdf.clone())
        self.offset = nn.Parameter(torch.zeros_like(verts))  # tanh-bounded to `deform` cells
        self.albedo = AlbedoField(cfg)
        self.background = Background(cfg.background)
        self.normal_consistency = Schedule.parse(cfg.normal_consistency_weight, "normal_consistency_weight")
        self.laplacian = Schedule.parse(cfg.laplacian_weight, "laplacian_weight")
        self.volume = Schedule.parse(cfg.volume_weight, "volume_weight")
        self.hidden_volume = Schedule.parse(cfg.hidden_volume_weight, "hidden_volume_weight")
        self.hidden_area = Schedule.parse(cfg.hidden_area_weight, "hidden_area_weight")
        self.view_elevations = init.view_elevations
        for name, weight in (("hidden_volume_weight", self.hidden_volume), ("hidden_area_weight", self.hidden_area)):
            if self.view_elevations is None and max(weight.start, weight.end) > 0:
                raise ConfigError(f"scene.{name} needs the training cameras' elevation range "
                                  "(SceneInit.view_elevations); set it to 0")
        self.sdf_weight = Schedule.parse(cfg.sdf_weight, "sdf_weight")
        self.geometry_frozen = False
        self.step = 0
        self._last_mesh: tuple[Tensor, Tensor] | None = None

    @property
    def bound(self) -> float:
        return self.cfg.bound

    @property
    def cell(self) -> float:
        return 2 * self.cfg.bound / self.cfg.grid_resolution

    def begin_step(self, step: int) -> None:
        self.step = step

    def freeze_geometry(self) -> None:
        """The texture stage: the SDF and offsets stop learning (optimizer_groups leaves them out)."""
        self.geometry_frozen = True
        self.sdf.requires_grad_(False)
        self.offset.requires_grad_(False)

    def mesh(self) -> tuple[Tensor, Tensor]:
        """The current surface: vertices [M,3] (differentiable in sdf and offsets) and triangles [F,3]."""
        verts = self.grid + self.cfg.deform * self.cell * torch.tanh(self.offset)
        return marching_tets(verts, self.sdf, self.tets)

    def render(self, cameras: Cameras, height: int, width: int, generator: torch.Generator | None = None,
               train: bool = True) -> RenderOutput:
        """Rasterised surface: albedo (training renders may be shaded, see MeshConfig.shading),
        antialiased silhouette as alpha, ray distance as depth, interpolated vertex normals."""
        cfg = self.cfg
        cameras = cameras.to(self.device)
        points, faces = self.mesh()
        self._last_mesh = (points, faces) if train else None
        _, dirs = cameras.rays(height, width)
        bg = self.background(dirs)  # [B,H,W,3]
        if faces.shape[0] == 0:  # no surface: background only (gradients reach nothing but the background)
            zeros = bg[..., :1].permute(0, 3, 1, 2) * 0
            return RenderOutput(bg.permute(0, 3, 1, 2), zeros, zeros, normal=zeros.expand(-1, 3, -1, -1))
        rast = rasterize(points, faces, cameras, height, width, cfg.rasterizer)
        mask = rast.mask
        pos = interpolate(points, faces, rast)
        albedo = torch.zeros_like(pos)
        albedo[mask] = self.albedo(pos[mask])
        normal = torch.nn.functional.normalize(interpolate(vertex_normals(points, faces), faces, rast), dim=-1)
        rgb = albedo
        if train and cfg.shading == "diffuse" and not self.geometry_frozen:
            lighting = sample_lighting(cameras.positions, generator, cfg.albedo_ratio, cfg.textureless_ratio,
                                       cfg.light_jitter)
            B = len(cameras)
            flat = lambda v: v.reshape(B, height * width, -1)  # noqa: E731
            rgb = shade(flat(albedo), flat(normal), flat(mask[..., None].to(albedo)), lighting, cfg.ambient_light,
                        cfg.diffuse_light).reshape(albedo.shape)
        image = torch.where(mask[..., None], rgb, bg)
        aa = antialias(torch.cat([image, mask[..., None].to(image)], -1), faces, rast)
        to_img = lambda v: v.permute(0, 3, 1, 2)  # noqa: E731
        return RenderOutput(to_img(aa[..., :3]), to_img(aa[..., 3:]), rast.distance[:, None],
                            normal=to_img(normal * mask[..., None]))

    def optimizer_groups(self) -> list[dict]:
        cfg = self.cfg
        groups = [{"params": list(self.albedo.encoding.parameters()), "lr": cfg.lr_encoding, "name": "encoding"},
                  {"params": list(self.albedo.mlp.parameters()), "lr": cfg.lr_network, "name": "network"}]
        if not self.geometry_frozen:
            groups += [{"params": [self.sdf], "lr": cfg.lr_sdf, "name": "sdf"}]
            if cfg.deform > 0:
                groups += [{"params": [self.offset], "lr": cfg.lr_deform, "name": "deform"}]
        if cfg.background == "learned":
            groups.append({"params": list(self.background.parameters()), "lr": cfg.lr_background, "name": "background"})
        return groups

    def regularizers(self, out: RenderOutput, step: int) -> dict[str, Tensor]:
        """While the geometry learns: normal consistency, Laplacian smoothing (in grid cells), the enclosed
        volume (all of it, or its pull and the area on the faces no camera sees), DMTet's SDF sign regulariser, each with its
        scheduled weight, on the mesh just rendered."""
        if self.geometry_frozen or self._last_mesh is None:
            return {}
        points, faces = self._last_mesh
        losses = {}
        if (w := self.normal_consistency(step)) > 0 and faces.shape[0]:
            losses["normal_consistency"] = w * normal_consistency(points, faces)
        if (w := self.laplacian(step)) > 0 and faces.shape[0]:
            losses["laplacian"] = w * laplacian_loss(points / self.cell, faces)
        if (w := self.volume(step)) > 0 and faces.shape[0]:
            losses["volume"] = w * enclosed_volume(points, faces)
        w_volume, w_area = self.hidden_volume(step), self.hidden_area(step)
        if max(w_volume, w_area) > 0 and faces.shape[0]:
            hidden = hidden_faces(points, faces, self.view_elevations, self.cfg.hidden_angle)
            if w_volume > 0:
                losses["hidden_volume"] = w_volume * hidden_volume(points, faces, hidden)
            if w_area > 0:
                losses["hidden_area"] = w_area * hidden_area(points, faces, hidden)
        if (w := self.sdf_weight(step)) > 0:
            losses["sdf"] = w * sdf_sign_loss(self.sdf / self.cell, self.edges)
        return losses

    def log_stats(self) -> dict[str, float]:
        return {"faces": 0 if self._last_mesh is None else int(self._last_mesh[1].shape[0])}

    # -- checkpoints: the texture stage's frozen geometry ----------------------------------------
    def get_extra_state(self) -> dict:
        return {"geometry_frozen": self.geometry_frozen}

    def set_extra_state(self, state: dict) -> None:
        if state.get("geometry_frozen"):
            self.freeze_geometry()

    # -- export ------------------------------------------------------------------------------
    @torch.no_grad()
    def surface_mesh(self) -> tuple[Tensor, Tensor]:
        points, faces = self.mesh()
        return points.detach(), faces

    @torch.no_grad()
    def density(self, points: Tensor) -> Tensor:
        """A density-like field for tools that march one: 1 inside the surface, 0 outside (the SDF read
        trilinearly from the undeformed grid, so it ignores the offsets)."""
        r = self.cfg.grid_resolution + 1
        s = sample_grid(self.sdf.detach().reshape(r, r, r), points.to(self.device) / self.bound)
        return (s < 0).float().to(points.device)

    @torch.no_grad()
    def color(self, points: Tensor) -> Tensor:
        return self.albedo(points.to(self.device)).to(points.device)


def sample_grid(values: Tensor, points: Tensor) -> Tensor:
    """Trilinear read of a grid [N,N,N] (indexed x, y, z over [-1,1]) at points [P,3] in [-1,1]."""
    if values.dim() != 3 or len(set(values.shape)) != 1:
        raise ConfigError(f"an initial SDF must be a cubic grid [N,N,N], got {tuple(values.shape)}")
    n = values.shape[0]
    x = points.flip(-1).reshape(1, -1, 1, 1, 3).to(values)
    s = torch.nn.functional.grid_sample(values.reshape(1, 1, n, n, n), x, align_corners=True, padding_mode="border")
    return s.reshape(-1).to(points)
