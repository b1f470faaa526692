"""Image-to-3D on ToyWorld: from one front view of each shape, how well is the whole object recovered?

    python benchmarks/image_to_3d.py [--prompts "a purple sphere" ...] [--seeds 0] [--only image|text] [--json rows.json]
        [KEY=VALUE ...]
    python benchmarks/image_to_3d.py --merge rows-a.json rows-b.json    # one table from runs done in parts

For each prompt the true object's front view (elevation 15, azimuth 0, 256 px, RGBA with the coverage as
alpha) is rendered here by ray casting, written to a PNG, and `dream3d run configs/toy/sds-nerf-image.yaml
image=that.png` runs in a fresh process (the prompt names the run and the truth only: the prior sees the
image). Scored by `dream3d eval` (silhouette IoU and colour error over its 8 held-out cameras, volumetric IoU
of the mesh) and, on the 3 back views alone (azimuth 150, 180, -150 at elevation 15), by the same two
measures. Beside each: the text-to-3D run of the same prompt (`configs/toy/sds-nerf.yaml`, camera-conditioned)
for reference. Prints one table, each prompt's mean and spread over the seeds, and the means.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from quick_start import PROMPTS, run_variants, timed_run  # noqa: E402

VARIANTS = {"image": "configs/toy/sds-nerf-image.yaml", "text": "configs/toy/sds-nerf.yaml"}
MEASURES = ("wall_s", "iou", "colour_error", "back_iou", "back_colour_error", "volumetric_iou")
BACK_AZIMUTHS = (150.0, 180.0, -150.0)


def write_reference(prompt: str, path: Path, resolution: int = 256) -> Path:
    """The true object's front view (elevation 15, azimuth 0) as an RGBA PNG."""
    from dream3d.kernel.cameras import Cameras
    from dream3d.toyworld import parse_prompt, render_gt

    img, mask = render_gt(parse_prompt(prompt), Cameras.make([15.0], [0.0]), resolution)
    rgba = torch.cat([img[0], mask[0]]).permute(1, 2, 0).numpy()
    iio.imwrite(path, (rgba * 255).round().astype(np.uint8))
    return path


def back_quality(run_dir: Path) -> tuple[float, float]:
    """(silhouette IoU, colour error) of the run's renders from the back views against the truth, 64 px."""
    from dream3d.bench import silhouette_quality
    from dream3d.kernel.cameras import Cameras
    from dream3d.lifecycle import load_run
    from dream3d.toyworld import parse_prompt, render_gt

    trainer, _ = load_run(run_dir)
    cams = Cameras.make([15.0] * len(BACK_AZIMUTHS), list(BACK_AZIMUTHS), trainer.cfg.camera.distance, trainer.cfg.camera.fovy)
    gt, mask = render_gt(parse_prompt(trainer.cfg.prompt), cams, 64)
    return silhouette_quality(trainer.scene, cams.to(trainer.device), gt, mask)


def one_run(variant: str, prompt: str, seed: int, overrides: list[str], out: Path) -> dict:
    extra = ["output.turntable_frames=0", "output.export.formats=[glb]", *overrides]
    if variant == "image":
        extra.append(f"image={write_reference(prompt, out.parent / f'{out.name}-reference.png')}")
    run_dir, wall, ev, metrics = timed_run(VARIANTS[variant], prompt, seed, extra, out)
    back_iou, back_err = back_quality(run_dir)
    return {"prompt": prompt, "seed": seed, "wall_s": round(wall, 1), "step": metrics["step"],
            "iou": round(ev["silhouette_iou"], 4), "colour_error": round(ev["colour_error"], 4),
            "back_iou": round(back_iou, 4), "back_colour_error": round(back_err, 4),
            "volumetric_iou": round(ev["volumetric_iou"], 4)}


def summarize(rows: list[dict]) -> None:
    """The table of every run, then per variant and prompt the mean and standard deviation over seeds, then the
    means of each variant."""
    print("\n| variant | prompt | seed | wall s | step | IoU | colour error | back IoU | back colour error | vol. IoU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['prompt']} | {r['seed']} | {r['wall_s']:.1f} | {r['step']} | {r['iou']:.3f} | "
              f"{r['colour_error']:.4f} | {r['back_iou']:.3f} | {r['back_colour_error']:.4f} | {r['volumetric_iou']:.3f} |")
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    print("\n| variant | prompt | seeds | IoU | colour error | back IoU | back colour error | worst IoU | worst colour "
          "error (back included) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in variants:
        for prompt in dict.fromkeys(r["prompt"] for r in rows if r["variant"] == name):
            mine = [r for r in rows if r["variant"] == name and r["prompt"] == prompt]

            def ms(m: str, fmt: str) -> str:
                values = [r[m] for r in mine]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                return f"{statistics.mean(values):{fmt}} ± {spread:{fmt}}"

            worst_iou = min(min(r["iou"], r["back_iou"]) for r in mine)
            worst_err = max(max(r["colour_error"], r["back_colour_error"]) for r in mine)
            print(f"| {name} | {prompt} | {len(mine)} | {ms('iou', '.3f')} | {ms('colour_error', '.4f')} | "
                  f"{ms('back_iou', '.3f')} | {ms('back_colour_error', '.4f')} | {worst_iou:.3f} | {worst_err:.4f} |")
    for name in variants:
        mine = [r for r in rows if r["variant"] == name]
        print(f"mean of {len(mine)} {name} runs: " + ", ".join(f"{m} {statistics.mean(r[m] for r in mine):.4f}"
                                                          for m in MEASURES))


def main() -> None:
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", nargs="+", default=[*PROMPTS, "a blue cube with a yellow front"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--only", choices=list(VARIANTS), help="run one variant only")
    ap.add_argument("--json", help="also write every row to this file")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="print the tables of rows written by earlier --json runs")
    ap.add_argument("overrides", nargs="*", help="config overrides for the image runs")
    args = ap.parse_args()
    if args.merge:
        summarize([r for path in args.merge for r in json.loads(Path(path).read_text())])
        return
    names = [n for n in VARIANTS if not args.only or n == args.only]
    rows = run_variants(args.prompts, args.seeds, names, lambda name, p, s, out: one_run(
        name, p, s, args.overrides if name == "image" else [], out), args.json)
    summarize(rows)


if __name__ == "__main__":
    main()
