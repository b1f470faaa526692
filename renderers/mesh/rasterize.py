"""One entry point for mesh rasterisation: nvdiffrast's CUDA kernels when the mesh is on a GPU and nvdiffrast
is installed (rasterize_nvdiffrast.py), the pure-torch twin (rasterize_torch.py) elsewhere; a scene's
`rasterizer` setting (auto | torch | nvdiffrast) can force either. Both return a Rasterized (face ids,
barycentrics, ray distance) that `interpolate` reads the same way; `antialias` uses the path that rasterised."""
from __future__ import annotations

from torch import Tensor

from dream3d.kernel.cameras import Cameras
from dream3d.kernel.schema import ConfigError
from renderers.mesh import rasterize_nvdiffrast as nv
from renderers.mesh import rasterize_torch
from renderers.mesh.rasterize_torch import Rasterized, interpolate

__all__ = ["RASTERIZERS", "Rasterized", "antialias", "check_rasterizer", "interpolate", "rasterize"]
RASTERIZERS = ("auto", "torch", "nvdiffrast")


def check_rasterizer(name: str, key: str) -> None:
    """Refuse `nvdiffrast` where it is not installed (a config error, before any work)."""
    if name == "nvdiffrast" and not nv.available():
        raise ConfigError(f"{key}=nvdiffrast needs nvdiffrast, which is not installed (it is not on PyPI: pip install "
                          f"git+https://github.com/NVlabs/nvdiffrast); or set {key}=auto")


def rasterize(verts: Tensor, faces: Tensor, cameras: Cameras, height: int, width: int,
              rasterizer: str = "auto") -> Rasterized:
    """The mesh (world vertices [V,3], triangles [F,3] long) seen by B cameras at height x width; `rasterizer`:
    auto (nvdiffrast for a mesh on a GPU when installed, else torch), torch or nvdiffrast (a GPU mesh only)."""
    if rasterizer == "nvdiffrast" or (rasterizer == "auto" and nv.use_nvdiffrast(verts)):
        return nv.rasterize(verts, faces, cameras, height, width)
    return rasterize_torch.rasterize(verts, faces, cameras, height, width)


def antialias(image: Tensor, faces: Tensor, rast: Rasterized) -> Tensor:
    """[B,H,W,C] blended across silhouette edges, so outlines get gradients (nvdiffrast's or the torch twin's)."""
    if isinstance(rast, nv.NvdiffrastRasterized):
        return nv.antialias(image, faces, rast)
    return rasterize_torch.antialias(image, faces, rast)
