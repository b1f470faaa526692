"""`dream3d tune`: each guidance's few key knobs searched on ToyWorld training prompts, so that the
bench compares methods at their best rather than at hand-set presets.

Ray Tune (the engine `dream3d batch` already uses) runs a seeded random search over each method's
space (`search_space`: the scene's learning rates, then `SEARCH_SPACES`: guidance scale, timestep
range, the method's own knobs)
with ASHA early stopping: a trial trains its config on the first tuning prompt, reports, and goes
on to the next prompt only if it ranks in the top half of the trials at that point. The score is
silhouette IoU minus colour error on held-out cameras (both in [0, 1]), averaged over the prompts
done. Tuning prompts (`TUNING_PROMPTS`: a sphere and a cylinder) share no shape with the bench's
evaluation prompts (cubes: bench.FIDELITY_PROMPT, JANUS_PROMPT, DIVERSITY_PROMPT), so tuning never
sees the test set.

Before its search each method's hand-set preset is scored the same way ("hand_set"), so the
results say what tuning changed, and it competes with the trials: when no trial beats it, the
"best" is the hand-set values (`config` {}), and the written preset keeps them. `--trials 0`
scores only the hand-set presets.

Writes OUT/<date-time>/: tune_results.json and tune_results.md (search space, the hand-set score,
every trial's config and scores, the best config per method), presets/<method>-<scene>.yaml (the
method's preset with the run's overrides and its best values; `dream3d bench --presets
OUT/<date-time>/presets` benches them), and each trial's run folders under runs/.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from dream3d.kernel.atomic_io import atomic_write_text, write_json
from dream3d.kernel.schema import ConfigError

TUNING_PROMPTS = ("a green sphere", "an orange cylinder")
SCORE = "silhouette IoU - colour error on held-out cameras, mean over the tuning prompts done"


@dataclass(frozen=True)
class Knob:
    """One searched knob: `kind` loguniform | uniform (between lo and hi) or choice (of `values`)."""

    kind: str
    lo: float = 0.0
    hi: float = 0.0
    values: tuple = ()

    def to_ray(self):
        from ray import tune

        if self.kind == "loguniform":
            return tune.loguniform(self.lo, self.hi)
        if self.kind == "uniform":
            return tune.uniform(self.lo, self.hi)
        return tune.choice(list(self.values))


def log(lo, hi):
    return Knob("loguniform", lo, hi)


def lin(lo, hi):
    return Knob("uniform", lo, hi)


def one_of(*values):
    return Knob("choice", values=values)


# the scene's learning rates, per scene (a guidance's gradient scale and the scene's step size trade off)
SCENE_LR = {"nerf": {"scene.lr_encoding": log(0.01, 0.1), "scene.lr_network": log(1e-3, 1e-2)},
            "gaussians": {"scene.lr_colours": log(3e-3, 3e-2), "scene.lr_means": log(3e-4, 3e-3)}}
CFG = {"guidance.guidance_scale": log(1.0, 20.0)}
T_MAX = {"guidance.t_max": lin(0.5, 0.98)}
FAKE_LR = {"guidance.lr": log(3e-5, 1e-3)}
SEARCH_SPACES: dict[str, dict[str, Knob]] = {  # each method's own knobs; search_space() adds the scene's
    "sds": {**CFG, **T_MAX},
    "vsd": {**CFG, **FAKE_LR},
    "esd": {**CFG, **FAKE_LR, "guidance.entropy_weight": lin(0.0, 1.0)},
    "fdiv": {**CFG, **FAKE_LR, "guidance.discriminator_lr": log(3e-5, 1e-3)},
    "ism": {**CFG, "guidance.loss_weight": log(0.03, 1.0), "guidance.delta_t": one_of(20, 50, 100)},
    "tsm": {**CFG, "guidance.loss_weight": log(0.03, 1.0), "guidance.gamma": lin(0.1, 0.9)},
    "csd": {"guidance.t_max": lin(0.3, 0.98)},  # no CFG scale; its small gradients want the scene's lr retuned
    "csm": {**CFG, **T_MAX},
    "nfsd": {**CFG, "guidance.small_t": one_of(100, 200, 400)},
    "bsd": {"guidance.guidance_scale": log(1.0, 30.0), **T_MAX},
    "asd": {**CFG, "guidance.rho": lin(0.0, 0.5)},
    "cds": {**CFG, "guidance.t_prime_start": one_of(500, 700, 900)},
}


def search_space(method: str, scene: str) -> dict[str, Knob]:
    """The knobs searched for a method on a scene: the scene's learning rates and the method's own."""
    return {**SCENE_LR[scene], **SEARCH_SPACES[method]}


def overrides_of(config: dict[str, Any]) -> list[str]:
    """key=value overrides of a sampled config (numbers rounded to 4 significant digits)."""
    return [f"{k}={float(f'{v:.4g}') if isinstance(v, float) else v}" for k, v in sorted(config.items())]


def run_trial(config: dict[str, Any], method: str, scene: str, steps: int, prompts: tuple[str, ...], out: str,
              extra: tuple[str, ...] = (), report=None) -> list[dict]:
    """Train `config` on each prompt in turn (a normal run folder each, under out/runs/<trial>/),
    reporting after each: {"score", "iou", "colour_error", "prompts"}. `report(metrics)` is Ray Tune's
    (raising nothing; ASHA stops the trial between prompts). Returns the reports."""
    from dream3d.bench import preset

    path, variant = preset(method, scene)
    return _train_trial(config, str(Path(path).resolve()), tuple(variant), method, scene, steps, prompts, out, extra,
                        report)


def _train_trial(config, path, variant, method, scene, steps, prompts, out, extra, report) -> list[dict]:
    """run_trial with the preset already found (`path` absolute: a Ray Tune trial runs in its own folder)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # every trial on one thread (float sums depend on the thread count)
    try:
        return _score_prompts(config, path, variant, method, scene, steps, prompts, out, extra, report)
    finally:
        torch.set_num_threads(threads)


def _score_prompts(config, path, variant, method, scene, steps, prompts, out, extra, report) -> list[dict]:
    from dream3d.bench import MEASURED_RUN, train_with_curve
    from dream3d.config import load_config

    trial = config_id(config)
    reports, ious, errors = [], [], []
    for i, prompt in enumerate(prompts):
        cfg = load_config(path, [f"prompt={prompt}", f"scene.name={scene}", f"train.steps={steps}", "seed=0",
                                 *MEASURED_RUN, "output.logger=csv", *variant, *extra, *overrides_of(config)])
        trained = train_with_curve(cfg, Path(out) / "runs" / f"{method}-{trial}", f"p{i}", eval_every=steps)
        iou, err = float(trained["iou"]), float(trained["colour_error"])
        ious.append(iou if math.isfinite(iou) else 0.0)
        errors.append(err if math.isfinite(err) else 1.0)
        metrics = {"score": sum(ious) / len(ious) - sum(errors) / len(errors), "iou": sum(ious) / len(ious),
                   "colour_error": sum(errors) / len(errors), "prompts": i + 1}
        reports.append(metrics)
        if report is not None:
            report(metrics)
    return reports


def config_id(config: dict[str, Any]) -> str:
    import hashlib

    return hashlib.sha1(" ".join(overrides_of(config)).encode()).hexdigest()[:8]


def _trainable(config, path, variant, method, scene, steps, prompts, out, extra):
    from ray import tune

    _train_trial(config, path, variant, method, scene, steps, prompts, out, extra, tune.report)


def tune_method(method: str, scene: str, trials: int, steps: int, prompts: tuple[str, ...], out: Path,
                extra: tuple[str, ...], seed: int, workers: int) -> dict:
    """One method's record for tune_results.json: its hand-set preset's score on the prompts, then (trials
    > 0) its search (Ray Tune, random search seeded by `seed`, ASHA over the prompts)."""
    from dream3d.bench import preset

    space = search_space(method, scene)
    hand_set = run_trial({}, method, scene, steps, prompts, str(out), extra)[-1]
    record = {"method": method, "scene": scene, "space": {k: asdict(v) for k, v in space.items()}, "hand_set": hand_set,
              "trials": [], "best": None}
    if trials == 0:
        return record
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    path, variant = preset(method, scene)
    trainable = tune.with_resources(tune.with_parameters(
        _trainable, path=str(Path(path).resolve()), variant=tuple(variant), method=method, scene=scene, steps=steps,
        prompts=prompts, out=str(out), extra=extra), {"cpu": 1})
    scheduler = ASHAScheduler(time_attr="prompts", max_t=len(prompts), grace_period=1, reduction_factor=2)
    tuner = tune.Tuner(
        trainable, param_space={k: v.to_ray() for k, v in space.items()},
        tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=trials, scheduler=scheduler,
                                    search_alg=BasicVariantGenerator(random_state=seed), max_concurrent_trials=workers),
        run_config=tune.RunConfig(name=method, storage_path=str(out / "ray"), verbose=0))
    grid = tuner.fit()
    rows = []
    for result in grid:
        m = result.metrics or {}
        rows.append({"config": {k: result.config[k] for k in space}, "overrides": overrides_of(result.config),
                     "score": m.get("score"), "iou": m.get("iou"), "colour_error": m.get("colour_error"),
                     "prompts": m.get("prompts", 0), "error": None if result.error is None else str(result.error)[:300]})
    full = [r for r in rows if r["prompts"] == len(prompts) and r["score"] is not None]
    return {**record, "trials": rows, "best": best_of(full, hand_set)}


def best_of(finished: list[dict], hand_set: dict | None) -> dict | None:
    """The best finished trial, or the hand-set values ({"config": {}, "hand_set": True, ...}) when
    they score at least as high: a search never hands back a preset worse than the one it started from."""
    best = max(finished, key=lambda r: r["score"]) if finished else None
    if hand_set is not None and (best is None or hand_set["score"] >= best["score"]):
        return {"config": {}, "overrides": [], **{k: hand_set[k] for k in ("score", "iou", "colour_error", "prompts")},
                "hand_set": True}
    return best


def tuned_preset(method: str, scene: str, best: dict, overrides: tuple[str, ...] = ()) -> str:
    """The method's preset YAML with the tuning run's `overrides` (key=value, every trial ran with them)
    and its best values written in, and a header saying so."""
    from dream3d.bench import preset

    path, variant = preset(method, scene)
    raw = yaml.safe_load(Path(path).read_text())
    raw.setdefault("scene", {})["name"] = scene  # a scene without its own preset starts from the NeRF one
    values = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in overrides)}
    values.update({k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in best["config"].items()})
    for key, value in values.items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    tuned = (f"tuned keys: {', '.join(sorted(best['config']))}" if best["config"]
             else "no trial beat the hand-set values, kept here")
    header = (f"# {method} tuned by `dream3d tune` on {', '.join(TUNING_PROMPTS)} (score {best['score']:.3f}: {SCORE}).\n"
              f"# From {path}{' with ' + ' '.join(variant) if variant else ''}"
              f"{'; run overrides: ' + ' '.join(overrides) if overrides else ''}; {tuned}.\n")
    return header + yaml.safe_dump(raw, sort_keys=False)


def run_tuning(methods: list[str], scene: str = "nerf", trials: int = 8, steps: int = 200,
               prompts: tuple[str, ...] = TUNING_PROMPTS, out_root: str | Path = "tune", overrides: list[str] = (),
               seed: int = 0, workers: int | None = None) -> Path:
    """Tune each method; write tune_results.json / .md and presets/ under out_root/<date-time>/ (the
    results are rewritten after each method, so a stopped tuning keeps what it finished). Returns the folder."""
    unknown = [m for m in methods if m not in SEARCH_SPACES]
    if unknown:
        raise ConfigError(f"no search space for {', '.join(unknown)}; tunable: {', '.join(SEARCH_SPACES)}")
    if scene not in SCENE_LR:
        raise ConfigError(f"no search space for scene {scene!r}; tunable scenes: {', '.join(SCENE_LR)}")
    from dream3d.bench import DIVERSITY_PROMPT, FIDELITY_PROMPT, JANUS_PROMPT

    leaked = set(prompts) & {FIDELITY_PROMPT, JANUS_PROMPT, DIVERSITY_PROMPT}
    if leaked:
        raise ConfigError(f"tuning prompts must differ from the bench's evaluation prompts: {', '.join(sorted(leaked))}")
    if trials < 0:
        raise ConfigError(f"--trials {trials}: give 0 (score the hand-set presets only) or more")
    try:
        import ray
        from ray import tune  # noqa: F401 (ray[tune] installed)
    except ImportError:
        if trials > 0:
            raise ConfigError("dream3d tune needs Ray Tune: pip install 'dream3d[batch]'") from None
        ray = None
    import os

    folder = Path(out_root).resolve() / time.strftime("%Y-%m-%d-%H%M%S")
    (folder / "presets").mkdir(parents=True, exist_ok=True)
    workers = workers or max(1, min(2, os.cpu_count() or 1))
    started = trials > 0 and not ray.is_initialized()
    if started:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    results = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "scene": scene, "steps": steps, "trials": trials,
               "prompts": list(prompts), "score": SCORE, "seed": seed, "overrides": list(overrides), "methods": {}}
    try:
        for method in methods:
            t0 = time.perf_counter()
            record = tune_method(method, scene, trials, steps, tuple(prompts), folder, tuple(overrides), seed, workers)
            record["wall_s"] = round(time.perf_counter() - t0, 1)
            results["methods"][method] = record
            if record["best"]:
                preset_text = tuned_preset(method, scene, record["best"], tuple(overrides))
                atomic_write_text(folder / "presets" / f"{method}-{scene}.yaml", preset_text)
            write_json(folder / "tune_results.json", results)
            atomic_write_text(folder / "tune_results.md", markdown(results))
    finally:
        if started:
            ray.shutdown()
    return folder


def markdown(results: dict) -> str:
    lines = [f"# Tuning ({results['created']})", "",
             f"Scene {results['scene']}, {results['steps']} steps per run, {results['trials']} trials per method "
             f"(seeded random search, ASHA over the prompts), prompts: {', '.join(results['prompts'])}. Score: "
             f"{results['score']}.", "",
             "| method | hand-set score | best score | IoU | colour err | best values | trials (finished / all) | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for method, rec in results["methods"].items():
        best, hand = rec["best"], rec.get("hand_set")  # (results from before hand-set scoring have none)
        hand_score = f"{hand['score']:.3f}" if hand else "-"
        done = sum(r["prompts"] == len(results["prompts"]) for r in rec["trials"])
        if best is None:
            why = "not searched (--trials 0)" if not rec["trials"] else "no trial finished"
            lines.append(f"| {method} | {hand_score} | - | - | - | {why} | {done} / {len(rec['trials'])} | {rec['wall_s']} |")
            continue
        values = "hand-set values kept (no trial beat them)" if best.get("hand_set") else " ".join(best["overrides"])
        lines.append(f"| {method} | {hand_score} | {best['score']:.3f} | {best['iou']:.3f} | {best['colour_error']:.3f} | "
                     f"{values} | {done} / {len(rec['trials'])} | {rec['wall_s']} |")
    lines += ["", "Search spaces:", ""]
    for method, rec in results["methods"].items():
        lines.append(f"- {method}: " + ", ".join(
            f"{k} {v['kind']}({', '.join(map(str, v['values']))})" if v["kind"] == "choice"
            else f"{k} {v['kind']}[{v['lo']:g}, {v['hi']:g}]" for k, v in rec["space"].items()))
    return "\n".join(lines) + "\n"
