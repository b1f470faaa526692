"""From a finished NeRF or Gaussian stage to the mesh scene's starting surface.

The coarse scene's exported surface field (dream3d.export.surface_field: the carving field or the
density at its level, as the run's export settings say) is read on a grid, thresholded, cleared of
small pieces, and turned into a signed distance by Euclidean distance transforms (scipy.ndimage), which
renderers.mesh.MeshScene reads at its tetrahedral grid's vertices (Magic3D's and threestudio's
coarse-to-fine conversion, with a distance instead of the raw density so the SDF's scale does not
depend on the NeRF's).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from dream3d.export import surface_field
from dream3d.export.config import ExportConfig
from dream3d.export.isosurface import EmptySceneError, Grid
from renderers.base import Scene


def occupancy_sdf(inside: np.ndarray, step: float, min_fraction: float = 0.05) -> Tensor:
    """Signed distance [N,N,N] (< 0 inside, world units) of a boolean occupancy grid with cell `step`,
    after dropping connected pieces smaller than `min_fraction` of the largest (floaters). The surface is
    put halfway between inside and outside cells."""
    labels, n = ndimage.label(inside)
    if n == 0:
        raise EmptySceneError("the coarse scene is empty: nothing to refine (train it longer, or check its renders)")
    sizes = ndimage.sum_labels(inside, labels, range(1, n + 1))
    keep = np.isin(labels, 1 + np.nonzero(sizes >= min_fraction * sizes.max())[0])
    outside_dist = ndimage.distance_transform_edt(~keep)  # distance of outside cells to the nearest inside one
    inside_dist = ndimage.distance_transform_edt(keep)
    sdf = np.where(keep, -(inside_dist - 0.5), outside_dist - 0.5) * step
    return torch.from_numpy(sdf.astype(np.float32))


@torch.no_grad()
def coarse_sdf(scene: Scene, export: ExportConfig, elevation_range=(-10.0, 45.0), resolution: int = 96,
               bound: float | None = None) -> Tensor:
    """The coarse scene's surface, as its export would extract it, as a signed distance grid [N,N,N]
    over [-bound, bound]^3 (N = resolution points per axis, indexed x, y, z: renderers.base.SceneInit.sdf).
    `bound` is the mesh scene's, which reads the grid as spanning its own box (default: the coarse
    scene's); a surface outside it is cut off there."""
    grid = Grid.cube(scene.bound if bound is None else bound, resolution)
    field, level = surface_field(scene, export, elevation_range)
    return occupancy_sdf(field(grid) > level, grid.step, export.min_component_fraction)
