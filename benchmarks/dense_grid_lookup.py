"""The NeRF's dense grid levels read by `dense_lookup` (stacked slices, 2D sampler) against PyTorch's
3D `grid_sample`, side by side in one process (issue 25).

Two measurements, each alternating the two ways `--repeats` times and printing medians and ratios:
- the four dense levels of the default NeRF encoding, forward + backward at `--points` points;
- whole training steps of configs/toy/sds-nerf.yaml (render, guidance, backward, Adam), with the
  encoding switched between the two lookups in the same trainer.

    python benchmarks/dense_grid_lookup.py [--points 100000] [--repeats 7] [--steps 20]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import contextmanager

import torch

import renderers.nerf.encoding as encoding
from dream3d.config import load_config
from dream3d.runs import RunDir
from dream3d.trainer import Trainer


@contextmanager
def lookup(fn):
    """Route the encoding's dense levels through `fn` while inside."""
    saved = encoding.dense_lookup
    encoding.dense_lookup = fn
    try:
        yield
    finally:
        encoding.dense_lookup = saved


def seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20, help="training steps per repeat")
    args = ap.parse_args()
    ways = {"grid_sample 3D": encoding.grid_sample_lookup, "dense_lookup": encoding.dense_lookup}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    torch.manual_seed(0)
    enc = encoding.GridEncoding(4, 16, 64, 2, 18, init_scale=0.1)
    x = torch.rand(args.points, 3)
    with lookup(encoding.grid_sample_lookup):
        ref = enc(x)
    print(f"largest difference of the features: {(enc(x) - ref).abs().max().item():.2e}")

    def encode_step():
        enc.zero_grad()
        enc(x).sum().backward()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("configs/toy/sds-nerf.yaml", [f"output.out_dir={tmp}", "output.progress=false"])
        trainer = Trainer(cfg, RunDir.create(tmp, cfg.prompt, "bench", cfg.seed), progress=False)
        for _ in range(5):
            trainer.train_step()
        rows = {(kind, name): [] for kind in ("encoding", "step") for name in ways}
        for _ in range(args.repeats):
            for name, fn in ways.items():
                with lookup(fn):
                    rows["encoding", name].append(1000 * seconds(encode_step))
                    rows["step", name].append(1000 * seconds(lambda: [trainer.train_step() for _ in range(args.steps)])
                                              / args.steps)
    print(f"{'measure':<42} {'grid_sample 3D':>15} {'dense_lookup':>13} {'ratio':>6}")
    for kind, label in (("encoding", f"4 dense levels, fwd+bwd, {args.points} points (ms)"),
                        ("step", "training step, sds-nerf (ms)")):
        old, new = (statistics.median(rows[kind, n]) for n in ways)
        print(f"{label:<42} {old:>15.1f} {new:>13.1f} {old / new:>5.2f}x")


if __name__ == "__main__":
    main()
