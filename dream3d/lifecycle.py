"""One run lifecycle for every front end (CLI, web UI, batch, bench): start a run in a new folder,
load or resume one from its last checkpoint, or complete one in a given folder (reuse it when it
has finished, resume it when it has a checkpoint, start it over when it has none).

Stopping is the same everywhere: a `stop` event the trainer checks between steps (see Trainer.fit).
"""
from __future__ import annotations

import copy
import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from dream3d.config import ConfigError, RunConfig, build_config, changed_keys, load_config
from dream3d.kernel.device import resolve_device
from dream3d.kernel.timing import PhaseTimer
from dream3d.runs import CheckpointError, RunDir
from dream3d.train_log import check_logger
from dream3d.trainer import Evaluation, Trainer
from guidance.priors import DiffusionPrior, build_prior

RESUMABLE_CHANGES = ("train.steps", "train.convergence.", "train.device", "output.", "eval.")  # keys a resumed run may change


def start_run(cfg: RunConfig, config_name: str = "config", progress: bool | None = None,
              stop: threading.Event | None = None, on_step: Callable[[dict], None] | None = None,
              on_start: Callable[[Path], None] | None = None, evaluation: Evaluation | None = None,
              folder: RunDir | None = None, prior: DiffusionPrior | None = None) -> dict:
    """Train a new run to the end (or until `stop` is set; see Trainer.fit) and return fit's result.
    The prompt is checked against the prior before the folder is made: a new one under
    output.out_dir, or `folder` (made if missing; a caller that gives one has claimed it, e.g. with
    RunDir.create, or owns it, as complete_run does). `on_start(run_dir)` is called once it exists.
    `prior`: one already built for cfg.prior (a batch worker's), else it is built here."""
    device = resolve_device(cfg.train.device)  # no such device here: one clear line before any work
    check_logger(cfg.output.logger)  # a missing TensorBoard / W&B fails before any work
    timer = PhaseTimer()
    with timer("setup"):
        prior = prior or build_prior(cfg.prior, progress=cfg.output.progress if progress is None else progress,
                                     device=device)
        prior.embed(cfg.prompt)
    if folder is None:
        folder = RunDir.create(cfg.output.out_dir, cfg.prompt, config_name, cfg.seed, cfg.output.name)
    else:
        folder.path.mkdir(parents=True, exist_ok=True)
    if on_start is not None:
        on_start(folder.path)
    return Trainer(cfg, folder, progress, prior, timer).fit(stop, on_step, evaluation)


def load_run(run_dir: str | Path, overrides: tuple[str, ...] = (), prior: DiffusionPrior | None = None
             ) -> tuple[Trainer, dict]:
    """A trainer restored from a run folder's last checkpoint (scene, optimiser, RNG, step).
    Overrides (and edits of config.yaml) may change only train.steps, train.convergence.*, train.device, output.*
    and eval.*; anything else would not be the run the checkpoint holds."""
    folder = RunDir(run_dir)
    if not folder.config.exists():
        raise ConfigError(f"{run_dir} is not a dream3d run folder (no config.yaml)")
    cfg = load_config(folder.config, list(overrides))
    state = folder.load_checkpoint()
    try:  # the config the checkpoint was trained with: config.yaml is only a copy and may have been edited
        trained = build_config(copy.deepcopy(state["config"]))
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"checkpoint {folder.checkpoint} holds no valid config ({e})") from None
    changed = [k for k in changed_keys(trained, cfg) if not k.startswith(RESUMABLE_CHANGES)]
    if changed:
        raise ConfigError(f"{folder.config} and the overrides differ from the config the checkpoint was trained with "
                          f"in {', '.join(changed)}; a resumed run can change only train.steps, train.convergence.*, "
                          "train.device, output.* and eval.* "
                          "(restore config.yaml, or start a new run with `dream3d run`)")
    if state.get("stage", "coarse") != "coarse" and cfg.train.steps != trained.train.steps:
        raise ConfigError(f"{folder.path} is past its coarse stage (now: {state['stage']}), which train.steps sets; "
                          "a longer coarse stage needs a new run (refine.* steps cannot change on resume either)")
    trainer = Trainer(cfg, folder, progress=False, prior=prior)
    trainer.load_state_dict(state)
    trainer.progress = cfg.output.progress
    return trainer, state


def resume_run(run_dir: str | Path, overrides: tuple[str, ...] = (), progress: bool | None = None,
               stop: threading.Event | None = None, on_step: Callable[[dict], None] | None = None,
               prior: DiffusionPrior | None = None) -> dict:
    """Continue a run from its last checkpoint to train.steps (which an override may raise) or
    convergence (a converged run continues only with train.convergence.enabled=false)."""
    trainer, _ = load_run(run_dir, overrides, prior)
    if progress is not None:
        trainer.progress = progress
    return trainer.fit(stop, on_step)


def is_finished(folder: RunDir, cfg: RunConfig) -> bool:
    """Whether `folder` holds a run that finished: all of cfg.train.steps, or converged before, and
    then every refinement step cfg.refine asks for."""
    metrics = json.loads(folder.metrics.read_text()) if folder.metrics.exists() else {}
    if cfg.refine.enabled:  # a finished refined run ended in its last stage, at its last step
        last = "texture" if cfg.refine.texture_steps else "geometry"
        return (metrics.get("status") == "finished" and metrics.get("stage") == last
                and metrics.get("step") == metrics.get("total_steps"))
    converged = cfg.train.convergence.enabled and metrics.get("stop") == "converged"
    return metrics.get("status") == "finished" and (metrics.get("step") == cfg.train.steps or converged)


def complete_run(cfg: RunConfig, folder: RunDir, config_name: str = "config", progress: bool | None = None,
                 prior: DiffusionPrior | None = None) -> bool:
    """Make `folder` hold the finished run of `cfg`; True when it already did (reused). A folder
    with a checkpoint is resumed; one without (killed before its first) is started over. The caller
    checks that an existing folder was made with the same settings."""
    if is_finished(folder, cfg):
        return True
    if folder.checkpoint.exists():
        resume_run(folder.path, progress=progress, prior=prior)
        return False
    if folder.path.exists():  # nothing to keep
        shutil.rmtree(folder.path)
    start_run(cfg, config_name, progress, folder=folder, prior=prior)
    return False
