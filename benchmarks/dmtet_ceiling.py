"""The true ToyWorld shapes on the DMTet grid, untrained: each shape's exact signed distance at the grid's vertices
initialises `MeshScene` (vertex offsets 0) at each grid resolution, and its render and mesh are scored as
`dream3d eval` scores a run (silhouette IoU over the held-out cameras, volumetric IoU and Chamfer distance of the
mesh), so the rows
sit beside refined runs. Marching tetrahedra cut sharp edges and tips by up to a cell. Training may win part of
that back (it sets its own SDF values and moves vertices by up to `deform` cells), so this is not a bound, only
what the grid holds of the exact surface (README: Mesh refinement). `--supersample` sets the rays per pixel side
of the true silhouette: 8 as eval since 2026-12-03 (dream3d.evaluate.TRUTH_SUPERSAMPLE); 2 as before, when
half-covered edge pixels counted as outside.

    python benchmarks/dmtet_ceiling.py [--grids 32 48 64] [--supersample 8]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dream3d.config import EvalConfig  # noqa: E402
from dream3d.evaluate import TRUTH_SUPERSAMPLE  # noqa: E402
from dream3d.kernel.cameras import CameraSampler  # noqa: E402
from dream3d.toyworld.catalogue import SHAPES  # noqa: E402
from dream3d.toyworld.dataset import render_layers  # noqa: E402
from dream3d.toyworld.geometry import signed_distance  # noqa: E402
from dream3d.toyworld.metrics import chamfer_distance, silhouette_iou, volumetric_iou  # noqa: E402
from renderers.base import SceneInit  # noqa: E402
from renderers.mesh.scene import MeshConfig, MeshScene  # noqa: E402


def untrained(shape: str, grid: int) -> MeshScene:
    """MeshScene on `grid` cells whose SDF is the shape's exact one at every grid vertex (no interpolation)."""
    cfg = MeshConfig(grid_resolution=grid)
    x = torch.linspace(-cfg.bound, cfg.bound, grid + 1)  # the grid's vertices (renderers/mesh/dmtet.tet_grid)
    return MeshScene(cfg, SceneInit(sdf=signed_distance(shape, torch.stack(torch.meshgrid(x, x, x, indexing="ij"), -1))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", nargs="+", type=int, default=[32, 48, 64])
    ap.add_argument("--supersample", type=int, default=TRUTH_SUPERSAMPLE,
                    help="rays per pixel side of the true silhouette (default: eval's)")
    args = ap.parse_args()
    ev = EvalConfig()
    cams = CameraSampler().held_out(ev.num_cameras)
    print(f"silhouette IoU / volumetric IoU / Chamfer distance (m), as dream3d eval measures them (true silhouette: "
          f"{args.supersample}x{args.supersample} samples per pixel)")
    print(f"{'shape':<10}" + "".join(f"{f'grid {g}':>27}" for g in args.grids))
    for shape in SHAPES:
        mask = render_layers(shape, cams, ev.resolution, args.supersample)[:, :1]  # render_gt's mask
        row = f"{shape:<10}"
        for g in args.grids:
            scene = untrained(shape, g)
            with torch.no_grad():
                alpha = scene.render(cams, ev.resolution, ev.resolution, train=False).alpha
                verts, faces = scene.mesh()
            vol = volumetric_iou(verts.numpy(), faces.numpy(), shape, ev.volume_resolution)
            chamfer = chamfer_distance(verts.numpy(), faces.numpy(), shape, bound=scene.cfg.bound)
            row += f"{silhouette_iou(alpha, mask):>11.4f} / {vol:.4f} / {chamfer:.4f}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
