"""The Scene interface: a differentiable 3D representation that renders cameras.

Optional capabilities are declared here with safe defaults, so callers (trainer, exporters)
ask the scene instead of probing for attributes: `supports_splats()` / `write_splats()`
(Gaussian scenes), `surface_maps()` (scenes that render their own opacity and surface depth) and
`isosurface_method()` (the mesh export method "auto" picks for the scene).
Renderer-specific render results are typed fields of `RenderOutput` (`orientation`, `densify`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from dream3d.kernel.cameras import Cameras


@dataclass
class DensifyInfo:
    """What screen-space densification (renderers/gaussians/densify.py) reads from the render whose
    gradients it uses, for C cameras and N Gaussians (unpacked layout):

    means2d [C,N,2] projected centres in pixels; after backward its `.grad` is the densification
    signal (the scene calls `retain_grad()` on it for training renders), radii [C,N,2] integer
    pixel radii (0 = culled in that camera), width and height of the images in pixels, n_cameras = C."""

    means2d: Tensor
    radii: Tensor
    width: int
    height: int
    n_cameras: int


@dataclass
class RenderOutput:
    """A batch of B rendered images.

    rgb [B,3,H,W] composited on the background, alpha [B,1,H,W], depth [B,1,H,W];
    normal [B,3,H,W] or None (NeRF training renders with normals);
    orientation [B,H,W] or None: per-pixel orientation penalty (normals facing away from the camera,
    NeRF training renders with normals; its mean is the `orientation` regulariser);
    densify: DensifyInfo or None (Gaussian renders: what densification reads after backward)."""

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    normal: Tensor | None = None
    orientation: Tensor | None = None
    densify: DensifyInfo | None = None


@dataclass
class SceneInit:
    """What a scene starts from, given by its caller: a generator for random initial values (None:
    torch's global generator), for point-based scenes initial points [N,3] (e.g. sampled inside
    a ToyWorld shape by the app; renderers know nothing of ToyWorld), and for surface scenes an
    initial signed distance grid [N,N,N] (< 0 inside, indexed x, y, z over the scene's box; e.g.
    from a finished NeRF or Gaussian stage, dream3d.refine), and the training cameras' elevation range for
    regularisers that act on what no camera sees."""

    generator: torch.Generator | None = None
    points: Tensor | None = None
    sdf: Tensor | None = None
    view_elevations: tuple[float, float] | None = None  # the training cameras' elevation range (degrees)


class Scene(nn.Module):
    """What the trainer and exporters may ask of any scene. A scene lives on one device (`to`,
    `device`): its renders come back there whatever device the cameras were made on, and its CUDA
    fast paths (gsplat, nerfacc) are chosen when that device is CUDA."""

    @property
    def device(self) -> torch.device:
        """Where the scene's parameters live (the device its renders are made on)."""
        return next(self.parameters()).device

    def render(self, cameras: Cameras, height: int, width: int, generator: torch.Generator | None = None,
               train: bool = True) -> RenderOutput:
        raise NotImplementedError

    def optimizer_groups(self) -> list[dict]:
        """Parameter groups with their learning rates."""
        raise NotImplementedError

    def regularizers(self, out: RenderOutput, step: int) -> dict[str, Tensor]:
        """Extra weighted losses for this step (e.g. opacity sparsity)."""
        return {}

    def begin_step(self, step: int) -> None:
        """Called before each training step's render, and after a checkpoint is loaded, with the
        step about to run (schedules inside the scene: progressive grid levels, shading warm-up)."""

    def post_backward(self, step: int, out: RenderOutput, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Hook after backward, before the optimiser step (densify, occupancy updates); densification
        edits the optimiser's parameter groups in place."""

    def density(self, points: Tensor) -> Tensor:
        """Volume density [N] at world points [N,3], returned on the points' device (the exporter's
        grids live on the CPU; the scene computes on its own device)."""
        raise NotImplementedError

    def color(self, points: Tensor) -> Tensor:
        """Albedo [N,3] in [0,1] at world points [N,3], on the points' device."""
        raise NotImplementedError

    @property
    def bound(self) -> float:
        """Half-side of the axis-aligned box [-bound, bound]^3 that holds the scene."""
        raise NotImplementedError

    # -- optional capabilities -------------------------------------------------------------------
    def supports_splats(self) -> bool:
        """Whether `write_splats` works (Gaussian scenes: renderers.gaussians.scene.GaussianScene)."""
        return False

    def write_splats(self, path: str | Path, fmt: str = "ply", up: str = "-y") -> Path:
        """Write the scene as a splat file at `path` (fmt: ply | splat | ply_compressed; up: -y, the
        3DGS viewers' frame, or +y, dream3d's; see renderers/gaussians/splat_files.py), checked by
        reopening it; returns the path written. Only scenes whose `supports_splats()` is true
        implement it."""
        raise NotImplementedError(f"{type(self).__name__} has no splats to write; only Gaussian scenes "
                                  "(GaussianScene, scene.name=gaussians) do")

    def log_stats(self) -> dict[str, float]:
        """Numbers about the scene itself for the training logs (e.g. the Gaussian count); none by default."""
        return {}

    def occupied(self, points: Tensor) -> Tensor | None:
        """Whether each point [P,3] may have density, from the scene's own empty-space skipping (the
        NeRF's occupancy grid, which its renders skip too), [P] bool; None (the default): no such
        knowledge, every point may. Lets the exporter skip density queries the renders skip."""
        return None

    def surface_mesh(self) -> tuple[Tensor, Tensor] | None:
        """The scene's own surface, for export: vertices [V,3] and triangles [F,3] wound
        counter-clockwise from outside (mesh scenes). None (the default): the exporter extracts an
        isosurface of `density` instead."""
        return None

    def isosurface_method(self) -> str:
        """The mesh export method that an export set to "auto" uses for this scene: "visibility" (carving
        by the renders' outlines and depths, the default), "hull" (the outlines only) or "density"."""
        return "visibility"

    def surface_maps(self, cameras: Cameras, resolution: int, surface_opacity: float = 0.05
                     ) -> tuple[Tensor, Tensor] | None:
        """For mesh export by carving, from the scene's own renderer: opaque [C,1,r,r] (1 where the
        rendered opacity > 1/2) and the distance along each pixel's ray to where its opacity first
        reaches `surface_opacity` [C,1,r,r], r = resolution, for C cameras. None (the default): the
        scene has no such renderer and the exporter marches `density` instead
        (dream3d.export.isosurface.marched_surface_maps)."""
        return None
