"""Why dream3d does not depend on kornia: its image ops against the torch code dream3d uses, side
by side in one process (issue 24).

For each path kornia could take over (resizing renders to the prior's resolution, the image
gradient of the sharpness metric, PSNR, the saturation of the colour metrics) this prints the
median milliseconds of both and their ratio, and the largest difference of the outputs; then the
seconds `import kornia` adds to a fresh interpreter. kornia is not a dependency: install it to
run this (`pip install kornia`).

    python benchmarks/kornia_vs_torch.py [--repeats 30]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    try:
        import kornia
        from kornia.geometry.transform import resize
    except ImportError:
        sys.exit("kornia is not installed (it is not a dream3d dependency): pip install kornia")
    from dream3d.toyworld.metrics import mean_saturation, psnr

    torch.manual_seed(0)
    torch.set_num_threads(1)
    rows = []

    # Resizing renders to the prior's resolution, forward + backward (the training path):
    # down-scaling antialiased (Stable Diffusion's encode) and up-scaling bilinear.
    for batch, size, target in ((4, 64, 32), (4, 128, 64), (1, 512, 256), (1, 256, 512)):
        x = torch.rand(batch, 3, size, size, requires_grad=True)
        aa = size > target

        def ours():
            F.interpolate(x, size=(target, target), mode="bilinear", align_corners=False, antialias=aa).sum().backward()

        def theirs():
            resize(x, (target, target), interpolation="bilinear", align_corners=False, antialias=aa).sum().backward()

        with torch.no_grad():
            diff = (F.interpolate(x, size=(target, target), mode="bilinear", align_corners=False, antialias=aa)
                    - resize(x, (target, target), interpolation="bilinear", align_corners=False, antialias=aa)).abs().max()
        rows.append((f"resize [{batch},3,{size},{size}] -> {target} (+backward)", median_ms(ours, args.repeats),
                     median_ms(theirs, args.repeats), float(diff)))

    a, b = torch.rand(8, 3, 64, 64), torch.rand(8, 3, 64, 64)
    rows.append(("image gradient (sharpness metric)", median_ms(lambda: (a.diff(dim=-1), a.diff(dim=-2)), args.repeats),
                 median_ms(lambda: kornia.filters.spatial_gradient(a, mode="diff"), args.repeats), float("nan")))
    rows.append(("PSNR", median_ms(lambda: psnr(a, b), args.repeats),
                 median_ms(lambda: float(kornia.metrics.psnr(a, b, 1.0)), args.repeats),
                 abs(psnr(a, b) - float(kornia.metrics.psnr(a, b, 1.0)))))
    mask = torch.ones(8, 1, 64, 64)
    rows.append(("saturation (HSV S of foreground)", median_ms(lambda: mean_saturation(a, mask), args.repeats),
                 median_ms(lambda: float(kornia.color.rgb_to_hsv(a)[:, 1].mean()), args.repeats),
                 abs(mean_saturation(a, mask) - float(kornia.color.rgb_to_hsv(a)[:, 1].mean()))))

    print(f"torch {torch.__version__}, kornia {kornia.__version__}, 1 thread, median of {args.repeats}\n")
    print("| path | torch (ms) | kornia (ms) | kornia / torch | max |difference| |")
    print("|---|---:|---:|---:|---:|")
    for name, ours_ms, theirs_ms, diff in rows:
        print(f"| {name} | {ours_ms:.3f} | {theirs_ms:.3f} | {theirs_ms / ours_ms:.1f}x | {diff:.2g} |")
    with_kornia, torch_only = import_seconds("kornia"), import_seconds("torch")
    print(f"\nimport kornia in a fresh interpreter: {with_kornia:.2f} s, of which torch {torch_only:.2f} s")


if __name__ == "__main__":
    main()
