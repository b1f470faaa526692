"""One entry point for mesh rasterisation: nvdiffrast's CUDA kernels when the mesh is on a GPU and nvdiffrast
is installed (rasterize_nvdiffrast.py), the pure-torch twin (rasterize_torch.py) elsewhere. Both return a
Rasterized (face ids, barycentrics, ray distance) that `interpolate` reads the same way; `antialias` uses
the path that rasterised."""
from __future__ import annotations

from torch import Tensor

from dream3d.kernel.cameras import Cameras
from renderers.mesh import rasterize_nvdiffrast as nv
from renderers.mesh import rasterize_torch
from renderers.mesh.rasterize_torch import Rasterized, interpolate

__all__ = ["Rasterized", "antialias", "interpolate", "rasterize"]


def rasterize(verts: Tensor, faces: Tensor, cameras: Cameras, height: int, width: int) -> Rasterized:
    """The mesh (world vertices [V,3], triangles [F,3] long) seen by B cameras at height x width."""
    if nv.use_nvdiffrast(verts):
        return nv.rasterize(verts, faces, cameras, height, width)
    return rasterize_torch.rasterize(verts, faces, cameras, height, width)


def antialias(image: Tensor, faces: Tensor, rast: Rasterized) -> Tensor:
    """[B,H,W,C] blended across silhouette edges, so outlines get gradients (nvdiffrast's or the torch twin's)."""
    if isinstance(rast, nv.NvdiffrastRasterized):
        return nv.antialias(image, faces, rast)
    return rasterize_torch.antialias(image, faces, rast)
