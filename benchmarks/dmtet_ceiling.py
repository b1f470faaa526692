"""How well can the DMTet grid hold the true ToyWorld shapes at all? Each shape's exact signed distance, sampled
on a fine grid, initialises `MeshScene` at each grid resolution, with no training; its mesh is rasterised from
random training cameras and compared with the true shape ray-cast at the same pixel centres. Marching tetrahedra
cut sharp edges and tips by up to a cell, so a grid bounds the silhouette IoU mesh refinement can reach, however
well it trains (README: Mesh refinement).

    python benchmarks/dmtet_ceiling.py [--grids 32 48 64] [--cameras 8] [--resolution 64]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dream3d.kernel.cameras import CameraSampler  # noqa: E402
from dream3d.toyworld.catalogue import SHAPES  # noqa: E402
from dream3d.toyworld.geometry import intersect, signed_distance  # noqa: E402
from renderers.base import SceneInit  # noqa: E402
from renderers.mesh.rasterize import rasterize  # noqa: E402
from renderers.mesh.scene import MeshConfig, MeshScene  # noqa: E402


def true_sdf(shape: str, bound: float, n: int = 161) -> torch.Tensor:
    """Signed distance [n,n,n] (< 0 inside) on linspace(-bound, bound, n) per axis (SceneInit.sdf's layout)."""
    x = torch.linspace(-bound, bound, n)
    return signed_distance(shape, torch.stack(torch.meshgrid(x, x, x, indexing="ij"), -1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", nargs="+", type=int, default=[32, 48, 64])
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--resolution", type=int, default=64)
    args = ap.parse_args()
    cams = CameraSampler().sample(args.cameras, torch.Generator().manual_seed(1))
    origins, dirs = cams.rays(args.resolution, args.resolution)
    bound = MeshConfig.bound
    print(f"{'shape':<10}" + "".join(f"{f'grid {g}: IoU':>16}{'area':>8}" for g in args.grids))
    for shape in SHAPES:
        sdf = true_sdf(shape, bound)
        t, _ = intersect(shape, origins, dirs)
        truth = torch.isfinite(t)
        row = f"{shape:<10}"
        for g in args.grids:
            scene = MeshScene(MeshConfig(grid_resolution=g), SceneInit(sdf=sdf))
            with torch.no_grad():
                verts, faces = scene.mesh()
                mask = rasterize(verts, faces, cams, args.resolution, args.resolution).mask
            iou = float((mask & truth).sum() / (mask | truth).sum())
            row += f"{iou:>16.4f}{float(mask.sum() / truth.sum()):>8.4f}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
