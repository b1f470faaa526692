"""Gaussian rasterizer speed: ms per frame, forward and backward, by number of Gaussians and
image size (torch path; gsplat's CUDA kernels too when a GPU is present).

    python benchmarks/rasterizer.py [--counts 1000 4000 16000] [--sizes 64 128] [--repeats 3]

Scenes are Gaussians filling a ToyWorld cube (opacity 0.5, scales from nearest neighbours), seen
by 4 cameras per call; numbers are the median over repeats, all measured in this one run.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from dream3d.kernel.cameras import CameraSampler
from dream3d.scenes import build_run_scene
from renderers.gaussians.rasterize import rasterize
from renderers.gaussians.scene import GaussianConfig, GaussianScene


def time_once(scene: GaussianScene, cams, size: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    rgb, alpha, _, _ = rasterize(scene.gaussians, cams, size, size, scene.cfg.tile_size)
    if rgb.is_cuda:
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    (rgb.sum() + alpha.sum()).backward()
    if rgb.is_cuda:
        torch.cuda.synchronize()
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[1000, 4000, 16000])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cams = CameraSampler().sample(4, torch.Generator().manual_seed(0))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"{'device':<7}{'gaussians':>10}{'size':>6}{'forward ms':>12}{'backward ms':>13}   (per frame, 4 frames a call)")
    for device in devices:
        for n in args.counts:
            scene = build_run_scene(GaussianConfig(init="shape", init_shape="cube", num_points=n, init_opacity=0.5), 0).to(device)
            for size in args.sizes:
                time_once(scene, cams, size)  # warm-up
                runs = [time_once(scene, cams, size) for _ in range(args.repeats)]
                fwd = statistics.median(r[0] for r in runs) * 1000 / len(cams)
                bwd = statistics.median(r[1] for r in runs) * 1000 / len(cams)
                print(f"{device:<7}{n:>10}{size:>6}{fwd:>12.1f}{bwd:>13.1f}")


if __name__ == "__main__":
    main()
