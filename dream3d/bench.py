"""`dream3d bench`: guidance x scene against ToyWorld ground truth, in one reproducible table.

Three measurements, all on held-out cameras of the known objects:
- fidelity ("a red cube"): silhouette IoU, colour error, |saturation - truth|, volumetric IoU of
  the exported mesh, wall time, and training seconds to first reach silhouette IoU 0.9;
- Janus ("a blue cube with a yellow front", view conditioning none): the fraction of back views (|azimuth| > 120 deg)
  where the run paints the yellow front marker (>= 5% of its foreground) and the truth does not;
- diversity ("a cube", several seeds): the entropy of the runs' dominant colours (normalised by
  log 6; the truth is uniform over the 6 colours) and the Vendi score of their mean colours, with a
  bootstrap spread over the seeds.
Fidelity and Janus cells run several seeds too (the full suite: 3 and 8): the table gives mean and
standard deviation, and the published claims are decided from the spread (dream3d/bench_claims.py).
Janus and diversity runs each use one scene of the suite (Gaussians, the fast one, unless the suite
says otherwise). Each run is a normal run folder under the bench folder; results.json holds every
run's config and is rewritten after every run, so an interrupted suite resumes (`--resume FOLDER`).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dream3d.bench_claims import advice_markdown, claims_markdown
from dream3d.kernel.atomic_io import atomic_write_text, write_json
from dream3d.kernel.cameras import Cameras, CameraSampler
from dream3d.runs import RunDir
from guidance import GUIDANCES

SCHEMA_VERSION = 3
FIDELITY_PROMPT = "a red cube"
JANUS_PROMPT = "a blue cube with a yellow front"
DIVERSITY_PROMPT = "a cube"
IOU_TARGET = 0.9
# every measured run (bench, tune): its fixed step budget (no convergence stop), no progress bar, no
# turntable, one GLB with vertex colours for the volumetric IoU
MEASURED_RUN = ("train.convergence.enabled=false", "output.progress=false", "output.turntable_frames=0",
                "output.export.formats=[glb]", "output.export.colors=vertex")


@dataclass
class Suite:
    methods: list[str]
    scenes: list[str]
    view_conditionings: list[str]
    steps: dict[str, int]  # per scene
    seeds: int = 3  # diversity runs per method
    fidelity_seeds: int = 1  # runs per method x scene x view conditioning
    janus_seeds: int = 1  # Janus runs per method
    janus_scene: str = "gaussians"  # the scene of the Janus runs (when selected, else the first scene)
    diversity_scene: str = "gaussians"  # the scene of the diversity runs (likewise)
    eval_every: int = 25
    extra: list[str] = field(default_factory=list)  # overrides for every run


# Method variants: a name in --methods -> (preset method, overrides).
MULTIVIEW = ["prior.views=4", "guidance.view_dependent_prompt=false"]  # ToyWorld's joint prior over groups of 4 views
VARIANTS = {"fdiv-fkl": ("fdiv", ["guidance.divergence=forward_kl"]),
            "sds-perpneg": ("sds", ["guidance.perp_neg=true"]),  # Perp-Neg needs prior.view_conditioning=text on ToyWorld
            "sds-mv": ("sds", MULTIVIEW), "asd-mv": ("asd", MULTIVIEW)}
ALL_METHODS = [*GUIDANCES, *VARIANTS]  # every registered objective, then the variants
# Studied in benchmarks/janus_study.py, not in the full suite: Perp-Neg (the suite's conditionings, none and
# camera, make it plain CFG at twice the cost; it needs view_conditioning=text) and the multi-view prior
FULL_METHODS = [m for m in ALL_METHODS if m not in ("sds-perpneg", "sds-mv", "asd-mv")]

SUITES = {
    "quick": Suite(methods=["sds", "vsd", "esd"], scenes=["nerf", "gaussians"], view_conditionings=["none", "camera"],
                   steps={"nerf": 200, "gaussians": 200}, seeds=3),
    "full": Suite(methods=FULL_METHODS, scenes=["nerf", "gaussians"], view_conditionings=["none", "camera"],
                  steps={"nerf": 400, "gaussians": 400}, seeds=6, fidelity_seeds=3, janus_seeds=8, janus_scene="nerf"),
}


def preset(method: str, scene: str, presets: str | Path | None = None) -> tuple[str, list[str]]:
    """(preset path, overrides) of a method or variant on a scene: <presets>/<method>-<scene>.yaml when a
    folder of (tuned) presets is given and has it, else configs/toy/<method>-<scene>.yaml when it
    exists, else the method's NeRF preset with scene.name switched."""
    base, extra = VARIANTS.get(method, (method, []))
    for folder in ([Path(presets)] if presets else []) + [Path("configs/toy")]:
        own = folder / f"{base}-{scene}.yaml"
        if own.exists():
            return str(own), list(extra)
    return str(Path("configs/toy") / f"{base}-nerf.yaml"), list(extra)


# -- measurements -------------------------------------------------------------------------------
@torch.no_grad()
def silhouette_quality(scene, cams: Cameras, gt, mask) -> tuple[float, float]:
    """(silhouette IoU, colour error) of a scene's renders (on any device; scored on the CPU, where
    the truth is) against ground truth [B,3,r,r]."""
    from dream3d.toyworld.metrics import colour_error, silhouette_iou

    out = scene.render(cams, gt.shape[-1], gt.shape[-1], train=False)
    rgb, alpha = out.rgb.cpu(), out.alpha.cpu()
    return silhouette_iou(alpha, mask), colour_error(rgb, gt, alpha, mask)


def held_out(cfg, n: int = 8) -> Cameras:
    return CameraSampler(tuple(cfg.camera.elevation_range), (-180.0, 180.0), cfg.camera.distance,
                         cfg.camera.fovy).held_out(n)


def train_with_curve(cfg, out_dir: Path, name: str, eval_every: int, target: float = IOU_TARGET) -> dict:
    """Train one run (a normal run folder, through dream3d.lifecycle.start_run), measuring
    silhouette IoU every `eval_every` steps (Trainer.fit's evaluation, outside the timed training);
    "to_iou_0.9" holds the training seconds and step at which IoU first reached `target`;
    "sharpness" the renders' gradient magnitude over the truth's at the end; "trainer" the trained
    trainer, still in memory."""
    from dream3d.lifecycle import start_run
    from dream3d.toyworld import parse_prompt, render_gt
    from dream3d.toyworld.metrics import sharpness
    from dream3d.trainer import Evaluation

    item = parse_prompt(cfg.prompt)
    cams = held_out(cfg)
    gt, mask = render_gt(item, cams, 64)
    found: dict = {"reached": None, "curve": []}

    @torch.no_grad()
    def measure(trainer) -> None:
        iou, err = silhouette_quality(trainer.scene, cams, gt, mask)
        train_s = round(trainer.train_seconds, 2)
        found["curve"].append([trainer.step, train_s, round(iou, 4)])
        if found["reached"] is None and iou >= target:
            found["reached"] = {"step": trainer.step, "seconds": train_s}
        found.update(trainer=trainer, iou=iou, colour_error=err)
        if trainer.step == cfg.train.steps or trainer.converged:
            found["sharpness"] = sharpness(trainer.scene.render(cams, gt.shape[-1], gt.shape[-1], train=False).rgb.cpu(), gt)
            found["trained_at"] = time.perf_counter()  # the rest of fit: final checkpoint, export, metrics

    folder = RunDir.create(str(out_dir), cfg.prompt, name, cfg.seed, name)
    result = start_run(cfg, name, progress=False, evaluation=Evaluation(eval_every, measure), folder=folder)
    trainer = found["trainer"]
    finish_s = time.perf_counter() - found.get("trained_at", time.perf_counter())
    return {"run_dir": result["run_dir"], "train_s": round(trainer.train_seconds, 2), "finish_s": round(finish_s, 2),
            "to_iou_0.9": found["reached"], "curve": found["curve"], "iou": found["iou"],
            "colour_error": found["colour_error"], "sharpness": round(found["sharpness"], 4), "trainer": trainer}


def marker_shares(scene, cfg, azimuths: torch.Tensor, elevation: float = 15.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(run, truth) [n]: the share of the foreground painted in the marker colour (nearer to it than to
    the body colour) in 64x64 renders from the given azimuths, for a marked item's prompt."""
    from dream3d.toyworld import parse_prompt, render_gt
    from dream3d.toyworld.catalogue import COLOURS

    item = parse_prompt(cfg.prompt)
    cams = Cameras.make(torch.full((len(azimuths),), elevation), azimuths, cfg.camera.distance, cfg.camera.fovy)
    with torch.no_grad():
        out = scene.render(cams, 64, 64, train=False)
    gt, mask = render_gt(item, cams, 64)
    marker = torch.tensor(COLOURS[item.marker])[None, :, None, None]
    body = torch.tensor(COLOURS[item.colours[0]])[None, :, None, None]

    def share(img, fg):
        is_marker = (img - marker).abs().amax(1, keepdim=True) < (img - body).abs().amax(1, keepdim=True)
        fg = fg > 0.5
        return ((is_marker & fg).flatten(1).sum(1) / fg.flatten(1).sum(1).clamp(min=1)).float()

    return share(out.rgb.cpu(), out.alpha.cpu()), share(gt, mask)


def janus_rate(scene, cfg, n: int = 16, marker_share: float = 0.05) -> float:
    """Fraction of back views (|azimuth| > 120) where the run shows the marker colour on >= 5% of
    its foreground while the truth shows it on < 1%."""
    az = torch.linspace(-180, 180, n + 1)[:-1]
    run_share, gt_share = marker_shares(scene, cfg, az[az.abs() > 120])
    return float(((run_share >= marker_share) & (gt_share < 0.01)).float().mean())


def diversity(colours: list[str], mean_rgbs: list[list[float]], bandwidth: float = 0.2) -> dict:
    """Entropy of the dominant colours (normalised by log 6) and the Vendi score of the runs'
    mean colours with an RBF kernel (Friedman & Dieng 2023): exp(entropy of eig(K/n))."""
    counts = np.array([colours.count(c) for c in sorted(set(colours))], dtype=float)
    p = counts / counts.sum()
    entropy = max(0.0, float(-(p * np.log(p)).sum() / math.log(6)))  # (no -0.0 for a single colour)
    x = np.asarray(mean_rgbs, dtype=float)
    k = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / (2 * bandwidth**2))
    eig = np.clip(np.linalg.eigvalsh(k / len(x)), 0, None)
    eig = eig[eig > 1e-12]
    return {"colour_entropy": round(entropy, 4), "vendi": round(float(np.exp(-(eig * np.log(eig)).sum())), 4),
            "colours": colours}


# -- the suite ----------------------------------------------------------------------------------
def run_suite(suite_name: str = "quick", methods: list[str] | None = None, scenes: list[str] | None = None,
              seeds: int | None = None, out_root: str | Path = "bench", overrides: list[str] = (),
              progress: bool = True, resume: str | Path | None = None, jobs_at_once: int = 1,
              fidelity_seeds: int | None = None, janus_seeds: int | None = None, presets: str | Path | None = None) -> Path:
    """Run the suite; write <out_root>/<date-time>/results.json, results.md and plots (rewritten
    after every run). `seeds`, `fidelity_seeds`, `janus_seeds`: runs per diversity, fidelity and Janus
    cell (default the suite's). `presets`: a folder of tuned presets (dream3d tune) taken before
    configs/toy/. `resume`: a folder of an interrupted suite; its finished runs are kept
    and only the missing ones run. `jobs_at_once` > 1 trains that many runs at a time in separate
    processes with one torch thread each (wall times then share the machine). Returns the folder."""
    from tqdm import tqdm

    suite = SUITES[suite_name]
    methods, scenes = methods or suite.methods, scenes or suite.scenes
    unknown = [m for m in methods if not Path(preset(m, "nerf")[0]).exists()]
    if unknown:
        raise ValueError(f"unknown bench method(s) {', '.join(unknown)}; valid: {', '.join(ALL_METHODS)}")
    seeds = seeds or suite.seeds
    fidelity_seeds, janus_seeds = fidelity_seeds or suite.fidelity_seeds, janus_seeds or suite.janus_seeds
    if resume is not None:
        folder = Path(resume)
        previous = json.loads((folder / "results.json").read_text())
        validate_results(previous)
        if previous["suite"] != suite_name:
            raise ValueError(f"{folder} holds a {previous['suite']!r} suite, not {suite_name!r}")
        wanted = str(Path(presets).resolve()) if presets else None
        if previous.get("presets") != wanted:
            raise ValueError(f"{folder} was benched with presets from {previous.get('presets') or 'configs/toy'}, not "
                             f"{wanted or 'configs/toy'}: resume with the same --presets")
        runs = previous["runs"]
    else:
        folder = Path(out_root) / time.strftime("%Y-%m-%d-%H%M%S")
        folder.mkdir(parents=True, exist_ok=True)
        runs = []
    janus_scene = suite.janus_scene if suite.janus_scene in scenes else scenes[0]
    diversity_scene = suite.diversity_scene if suite.diversity_scene in scenes else scenes[0]
    # seed-major, so a suite stopped early has the same seeds for every method
    jobs = ([("fidelity", m, s, vc, seed) for seed in range(fidelity_seeds) for m in methods for s in scenes
             for vc in suite.view_conditionings]
            + [("janus", m, janus_scene, "none", seed) for seed in range(janus_seeds) for m in methods]
            + [("diversity", m, diversity_scene, "camera", seed) for seed in range(seeds) for m in methods])
    key = lambda r: (r["kind"], r["method"], r["scene"], r["view_conditioning"], r["seed"])  # noqa: E731
    wanted = set(jobs)
    outside = [r for r in runs if key(r) not in wanted]
    if outside:  # e.g. resumed with fewer seeds: the table covers this job list only (the run folders stay)
        print(f"bench: {len(outside)} finished run(s) are outside this job list and left out of the table: "
              + ", ".join(Path(r["run_dir"]).name for r in outside))
        runs = [r for r in runs if key(r) in wanted]
    done = {key(r) for r in runs}
    presets = str(Path(presets).resolve()) if presets else None
    todo = [(*job, folder, suite_name, tuple(overrides), presets) for job in jobs if job not in done]
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="bench", disable=not progress, unit="run")
    if jobs_at_once <= 1:
        rows = (bench_job(*job) for job in todo)
    else:  # one torch thread per process; rows come back as runs finish
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        pool = ProcessPoolExecutor(jobs_at_once, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=torch.set_num_threads, initargs=(1,))
        rows = (f.result() for f in as_completed([pool.submit(bench_job, *job) for job in todo]))
    try:
        for row in rows:
            runs.append(row)
            write_results(folder, suite_name, runs, jobs_at_once, presets, planned=len(jobs))
            bar.update()
    finally:
        bar.close()
        if jobs_at_once > 1:
            pool.shutdown(cancel_futures=True)
    if not todo:  # nothing ran (an empty job list, or a resumed suite already complete): table what there is
        write_results(folder, suite_name, runs, jobs_at_once, presets, planned=len(jobs))
    return folder


def bench_job(kind: str, method: str, scene: str, vc: str, seed: int, folder: Path, suite_name: str,
              overrides: tuple[str, ...], presets: str | None = None) -> dict:
    """Train and measure one run of the suite; returns its results row."""
    from dream3d.config import load_config, to_dict
    from dream3d.evaluate import evaluate_run

    suite = SUITES[suite_name]
    prompts = {"fidelity": FIDELITY_PROMPT, "janus": JANUS_PROMPT, "diversity": DIVERSITY_PROMPT}
    path, variant = preset(method, scene, presets)
    cfg = load_config(path, [
        f"prompt={prompts[kind]}", f"scene.name={scene}", f"prior.view_conditioning={vc}", f"seed={seed}",
        f"train.steps={suite.steps[scene]}", *MEASURED_RUN, *variant, *suite.extra, *overrides])
    name = f"{kind}-{method}-{scene}-{vc}-s{seed}"
    t0 = time.perf_counter()
    trained = train_with_curve(cfg, folder / "runs", name, suite.eval_every)
    metrics = evaluate_run(trained["run_dir"])
    row = {"kind": kind, "method": method, "scene": scene, "view_conditioning": vc, "seed": seed,
           "prompt": cfg.prompt, "preset": path, "wall_s": round(time.perf_counter() - t0, 2), "threads": torch.get_num_threads(),
           "config": to_dict(cfg),
           **{k: trained[k] for k in ("run_dir", "train_s", "to_iou_0.9", "curve", "sharpness")},
           **{k: metrics.get(k) for k in ("silhouette_iou", "colour_error", "saturation", "saturation_gt",
                                          "volumetric_iou", "matched_colour")}}
    row["saturation_error"] = round(abs(row["saturation"] - row["saturation_gt"]), 4)
    trainer = trained["trainer"]  # the trained scene, still in memory
    if kind == "janus":
        row["janus_rate"] = janus_rate(trainer.scene, trainer.cfg)
    elif kind == "diversity":
        with torch.no_grad():
            out = trainer.scene.render(held_out(trainer.cfg), 64, 64, train=False)
        fg = (out.alpha > 0.5).expand_as(out.rgb)
        row["mean_rgb"] = [round(float(out.rgb[:, c][fg[:, c]].mean()), 4) if fg.any() else 1.0 for c in range(3)]
    return row


def write_results(folder: Path, suite_name: str, runs: list[dict], jobs_at_once: int = 1, presets: str | None = None,
                  planned: int | None = None) -> dict:
    """results.json (atomic), results.md and fidelity.png of the runs so far; `planned`: the suite's
    number of runs, so a stopped suite's files say they are partial."""
    threads = 1 if jobs_at_once > 1 else torch.get_num_threads()
    results = {"schema": SCHEMA_VERSION, "suite": suite_name, "presets": presets, "planned_runs": planned,
               "created": time.strftime("%Y-%m-%d %H:%M:%S"),
               "machine": {"threads": threads, "jobs_at_once": jobs_at_once, "torch": torch.__version__},
               "runs": runs, "summary": summarise(runs)}
    write_json(folder / "results.json", results)
    atomic_write_text(folder / "results.md", markdown(results))
    plot(results, folder / "fidelity.png")
    return results


FIDELITY_METRICS = ("silhouette_iou", "colour_error", "saturation_error", "volumetric_iou", "sharpness", "wall_s")


def mean_std(values: list[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample standard deviation or None below two values, count) of the values that exist."""
    v = [float(x) for x in values if x is not None]
    if not v:
        return None, None, 0
    return round(float(np.mean(v)), 4), (round(float(np.std(v, ddof=1)), 4) if len(v) > 1 else None), len(v)


def vendi_spread(colours: list[str], mean_rgbs: list[list[float]], draws: int = 500, seed: int = 0) -> float | None:
    """Bootstrap standard deviation of the Vendi score over the seeds (resampled with replacement; a
    fixed generator, so the table is reproducible); None below three seeds."""
    n = len(mean_rgbs)
    if n < 3:
        return None
    rng = np.random.default_rng(seed)
    scores = [diversity([colours[i] for i in idx], [mean_rgbs[i] for i in idx])["vendi"]
              for idx in (rng.integers(0, n, n) for _ in range(draws))]
    return round(float(np.std(scores, ddof=1)), 4)


def summarise(runs: list[dict]) -> list[dict]:
    """One row per method x scene: fidelity per view conditioning (mean, `<metric>_std` and the
    per-seed values over its seeds; "to_iou_0.9" the median over the seeds that reached it), the
    Janus rate (mean, std, per seed), diversity (with the Vendi score's bootstrap spread)."""
    rows = []
    for method, scene in dict.fromkeys((r["method"], r["scene"]) for r in runs):
        mine = [r for r in runs if r["method"] == method and r["scene"] == scene]
        row = {"method": method, "scene": scene}
        for vc in dict.fromkeys(r["view_conditioning"] for r in mine if r["kind"] == "fidelity"):
            cell = sorted((r for r in mine if r["kind"] == "fidelity" and r["view_conditioning"] == vc),
                          key=lambda r: r["seed"])
            row[vc] = {"seeds": len(cell)}
            for k in FIDELITY_METRICS:
                row[vc][k], row[vc][f"{k}_std"], _ = mean_std([r[k] for r in cell])
                row[vc][f"{k}_values"] = [r[k] for r in cell]
            reached = [r["to_iou_0.9"] for r in cell if r["to_iou_0.9"]]
            row[vc]["to_iou_0.9"] = ({"seconds": float(np.median([x["seconds"] for x in reached])),
                                      "step": int(np.median([x["step"] for x in reached])), "seeds": len(reached)}
                                     if reached else None)
        janus = [r["janus_rate"] for r in sorted(mine, key=lambda r: r["seed"]) if r["kind"] == "janus"]
        row["janus_rate"], row["janus_std"], row["janus_seeds"] = mean_std(janus)
        row["janus_values"] = janus
        div = [r for r in mine if r["kind"] == "diversity"]
        if div:
            colours, rgbs = [r["matched_colour"] for r in div], [r["mean_rgb"] for r in div]
            row["diversity"] = {**diversity(colours, rgbs), "vendi_std": vendi_spread(colours, rgbs), "seeds": len(div)}
        rows.append(row)
    return rows


def _fmt(v, digits=3) -> str:
    return "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def _pm(mean, std, digits=3) -> str:
    """mean ± std (std left out below two seeds)."""
    return _fmt(mean, digits) + ("" if std is None or mean is None else f" ± {std:.{digits}f}")


def markdown(results: dict) -> str:
    lines = [f"# ToyWorld bench ({results['suite']}, {results['created']})", ""]
    planned, done = results.get("planned_runs"), len(results["runs"])
    if planned and done < planned:
        lines += [f"**Partial: {done} of {planned} runs done.** The cells and advice below cover the finished runs "
                  f"only; resume with `dream3d bench --suite {results['suite']} --resume FOLDER"
                  f"{' --presets ' + results['presets'] if results.get('presets') else ''}`.", ""]
    lines += [f"Fidelity: \"{FIDELITY_PROMPT}\"; Janus: \"{JANUS_PROMPT}\" (view conditioning none); diversity: "
              f"\"{DIVERSITY_PROMPT}\" over seeds (truth: uniform over 6 colours, entropy 1).", "",
              "Sharpness: the renders' image-gradient magnitude over the truth's (1 = as sharp as the truth). "
              "To IoU 0.9: median training seconds (step) at which silhouette IoU first reached 0.9, over the seeds "
              "that reached it. Cells with several seeds show mean ± standard deviation (seeds: fidelity runs per "
              "cell / Janus runs / diversity runs; Vendi ± its bootstrap spread).", "",
              "| method | scene | view cond. | seeds | IoU | colour err | sat. err | vol. IoU | sharpness | wall s "
              "| to IoU 0.9 | Janus rate | colour entropy | Vendi |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["summary"]:
        div = row.get("diversity") or {}
        for vc in ("none", "camera"):
            if vc not in row:
                continue
            f = row[vc]
            reached = f["to_iou_0.9"]
            reached = f"{reached['seconds']:.1f} ({reached['step']})" if reached else "-"
            seeds = f"{f['seeds']} / {row.get('janus_seeds') or '-'} / {div.get('seeds', '-')}"
            lines.append(f"| {row['method']} | {row['scene']} | {vc} | {seeds} | "
                         f"{_pm(f['silhouette_iou'], f['silhouette_iou_std'])} | "
                         f"{_pm(f['colour_error'], f['colour_error_std'])} | "
                         f"{_pm(f['saturation_error'], f['saturation_error_std'])} | "
                         f"{_pm(f['volumetric_iou'], f['volumetric_iou_std'])} | {_pm(f['sharpness'], f['sharpness_std'], 2)} | "
                         f"{_fmt(f['wall_s'], 1)} | {reached} | {_pm(row['janus_rate'], row.get('janus_std'), 2)} | "
                         f"{_fmt(div.get('colour_entropy'), 2)} | {_pm(div.get('vendi'), div.get('vendi_std'), 2)} |")
    return ("\n".join(lines) + "\n\n## Which guidance should I use?\n\n" + advice_markdown(results["summary"])
            + "\n## Published claims, checked\n\n" + claims_markdown(results["summary"]))


def plot(results: dict, path: Path) -> Path | None:
    """Bar chart of silhouette IoU per method x scene x view conditioning (matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels, values = [], []
    for row in results["summary"]:
        for vc in ("none", "camera"):
            if vc in row:
                labels.append(f"{row['method']}/{row['scene']}/{vc}")
                values.append(row[vc]["silhouette_iou"] or 0.0)
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(labels)), 4))
    ax.bar(range(len(values)), values)
    ax.set_xticks(range(len(values)), labels, rotation=60, ha="right", fontsize=8)
    ax.axhline(IOU_TARGET, color="grey", ls="--", lw=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("silhouette IoU")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def validate_results(results: dict) -> None:
    """Schema check of results.json (raises ValueError naming the first problem)."""
    def need(obj, key, kind, where):
        if key not in obj or not isinstance(obj[key], kind):
            raise ValueError(f"{where}.{key} missing or not {kind}")

    need(results, "schema", int, "results")
    if results["schema"] != SCHEMA_VERSION:
        raise ValueError(f"schema {results['schema']} != {SCHEMA_VERSION}")
    for key, kind in (("suite", str), ("created", str), ("runs", list), ("summary", list), ("machine", dict)):
        need(results, key, kind, "results")
    for i, r in enumerate(results["runs"]):
        for key, kind in (("kind", str), ("method", str), ("scene", str), ("view_conditioning", str), ("seed", int),
                          ("config", dict), ("wall_s", (int, float)), ("silhouette_iou", (int, float)),
                          ("colour_error", (int, float)), ("saturation_error", (int, float)),
                          ("sharpness", (int, float)), ("curve", list)):
            need(r, key, kind, f"runs[{i}]")
        if r["kind"] == "janus":
            need(r, "janus_rate", float, f"runs[{i}]")
        if r["kind"] == "diversity":
            need(r, "mean_rgb", list, f"runs[{i}]")
    json.dumps(results)  # serialisable
