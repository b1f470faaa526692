"""The optimisation loop: sample cameras -> scene.render -> guidance -> backward -> step.

The trainer only wires a prior, a guidance and a scene together; it owns the run folder,
the device, the random generator, checkpoints, previews, the step logs (dream3d/train_log.py), the
turntable and the export. Device: everything a step touches (scene and optimiser state, cameras,
rays, noise, timesteps, guidance buffers, the prior) lives on `train.device` (dream3d/kernel/device.py).
Randomness: the loop's own draws (cameras, timesteps, noise, ray jitter) go through `generator`, a
CPU generator whose draws are moved to the device (dream3d/kernel/draws.py); initial values come
from the seed on the CPU before the scene moves (NeRF weights from torch's global generator,
Gaussian points from dream3d.scenes); what a library draws
from the global generators (gsplat's split, on the CPU or the GPU) follows the seed too. All of them
are checkpointed, so runs are reproducible and a resumed run continues exactly (on a GPU up to the
kernels' own nondeterminism: gsplat's backward sums with atomics). Starting, resuming and reusing
runs is dream3d.lifecycle.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from dream3d.config import RunConfig, to_dict, to_yaml
from dream3d.convergence import ConvergenceMonitor
from dream3d.export import EmptySceneError, ExportError, export_scene
from dream3d.kernel.atomic_io import atomic_write_text, write_json
from dream3d.kernel.cameras import Cameras, CameraSampler
from dream3d.kernel.device import resolve_device
from dream3d.kernel.schema import ConfigError
from dream3d.kernel.timing import PhaseTimer
from dream3d.reference import reference_loss
from dream3d.refine import coarse_sdf
from dream3d.runs import CheckpointError, RunDir, to_uint8, write_image, write_video
from dream3d.scenes import build_run_scene
from dream3d.toyworld.validation import TruthMasks
from dream3d.train_log import TrainLog
from guidance import RunContext, build_guidance
from guidance.priors import build_prior
from renderers.base import SceneInit
from renderers.mesh.scene import MeshScene

log = logging.getLogger("dream3d")


LOG_ONLY = ("lr_", "step_ms")  # per-step log columns not kept in metrics.json's history (config / wall time)


STAGES = ("coarse", "geometry", "texture")  # the NeRF / Gaussian run, then mesh geometry, then mesh texture


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with NaN/Inf gradients."""


class OutputWriteError(RuntimeError):
    """An output could not be written (disk full, read-only folder); the run stopped."""


def make_optimizer(scene, guidance) -> torch.optim.Optimizer:
    """Adam over the scene's parameter groups and the guidance's own trainables (if any)."""
    return torch.optim.Adam(scene.optimizer_groups() + guidance.optimizer_groups(), betas=(0.9, 0.99), eps=1e-15)


@dataclass
class Evaluation:
    """A measurement Trainer.fit makes every `every` steps and after the last step, outside the
    timed training (the bench's silhouette IoU curve): `measure(trainer)` may render the scene
    (without the trainer's generator, so the run's random draws do not change)."""

    every: int
    measure: Callable[["Trainer"], None]


class Trainer:
    """`timer` collects the wall seconds of the run's phases (setup, train, convergence, previews,
    checkpoints, export.*, turntable), written to metrics.json; a caller that did setup work of
    its own (building the prior) passes the timer it measured that with."""

    def __init__(self, cfg: RunConfig, run_dir: RunDir, progress: bool | None = None, prior=None,
                 timer: PhaseTimer | None = None):
        self.timer = timer or PhaseTimer()
        with self.timer("setup"):
            self._setup(cfg, run_dir, progress, prior)

    def _setup(self, cfg: RunConfig, run_dir: RunDir, progress: bool | None, prior) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.progress = cfg.output.progress if progress is None else progress
        self.device = resolve_device(cfg.train.device)
        if self.device.type == "cpu":
            # PyTorch's CPU index_put_ with accumulate (the backward of indexing: the mesh scene's geometry gradients)
            # adds with atomics on several threads above 32k elements, so two runs differed in the last bits and then
            # diverged; its deterministic kernels are serial (measured: no slower, README "Determinism")
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.manual_seed(cfg.seed)  # parameter initialisation and library draws (gsplat's split; CUDA's too)
        self.generator = torch.Generator().manual_seed(cfg.seed)  # the loop's own random draws (CPU, moved over)
        self.camera_sampler = CameraSampler(tuple(cfg.camera.elevation_range), tuple(cfg.camera.azimuth_range),
                                            cfg.camera.distance, cfg.camera.fovy)
        self.prior = prior or build_prior(cfg.prior, progress=self.progress, device=self.device)
        if self.prior.device.type != self.device.type:
            raise ConfigError(f"the prior was built on {self.prior.device}, the run trains on {self.device} "
                              "(train.device); build it with build_prior(..., device=)")
        self.schedule_steps = cfg.train.steps
        self.guidance = build_guidance(cfg.guidance, self.prior, self.run_context(self.schedule_steps)).to(self.device)
        self.reference = self.load_reference() if cfg.image else None  # image-to-3D: (rgb, mask, camera)
        image = self.prior.embed_image(self.reference[0], self.reference[2]) if self.reference else None
        self.cond = self.guidance.embed(cfg.prompt, cfg.negative_prompt, image)
        self.scene = build_run_scene(cfg.scene, cfg.seed, self.view_elevations).to(self.device)
        self.optimizer = make_optimizer(self.scene, self.guidance)
        self.convergence = ConvergenceMonitor(cfg.train.convergence)
        self.step = 0
        self.stage = "coarse"  # then the refinement stages, when cfg.refine asks for them (STAGES, next_stage)
        self.coarse_end: int | None = None  # the step at which the coarse stage ended, once it has
        self.bad_steps = 0
        self.skipped_steps = 0
        self.timings: dict[str, float] = defaultdict(float)
        self.history: list[dict] = []
        self.train_log: TrainLog | None = None  # open while fit runs
        self.validation_cameras = self.camera_sampler.orbit(4, 15.0).to(self.device)  # convergence checks, previews
        self.truth = TruthMasks.for_run(cfg.prompt, cfg.prior.name, self.validation_cameras)
        self.validation_iou: float | None = None  # of the last validation render, when a truth exists

    def load_reference(self) -> tuple[torch.Tensor, torch.Tensor, Cameras]:
        """Image-to-3D's reference view (dream3d/reference.py): rgb [3,r,r] on white, mask [1,r,r] and its camera
        [1] (azimuth 0). Read from the run folder's copy when it has one (a resumed run), else from `image`, which
        is then copied there."""
        from dream3d.reference import keep_copy, load_reference

        cfg = self.cfg
        if not self.prior.supports("embed_image"):
            raise ConfigError(f"image=... needs a prior that conditions on an image; prior.name={cfg.prior.name} does "
                              "not (ToyWorld's does; Zero123 is not supported yet)")
        kept = sorted(self.run_dir.path.glob("reference.*"))
        source = kept[0] if kept else Path(cfg.image).expanduser()
        rgb, mask = load_reference(source, cfg.reference.resolution)
        if not kept:
            keep_copy(source, self.run_dir.path)
        camera = Cameras.make([cfg.reference.elevation], [0.0], cfg.camera.distance, cfg.camera.fovy)
        return rgb.to(self.device), mask.to(self.device), camera.to(self.device)

    @property
    def view_elevations(self) -> tuple[float, float]:
        """The training cameras' elevation range (degrees): the views the export's surface cameras and the
        mesh stage's hidden-face terms take as seen."""
        return tuple(self.cfg.camera.elevation_range)

    def run_context(self, schedule_steps: int) -> RunContext:
        """What the guidance may know of this run: its length and camera distribution. The length is the
        one the run started with (`schedule_steps`, kept in checkpoints): guidance schedules written in
        shares of the run ("20%") stay where they were when a resumed run gets another train.steps."""
        return RunContext(schedule_steps, self.camera_sampler)

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"step": self.step, "config": to_dict(self.cfg), "scene": self.scene.state_dict(),
                "guidance": self.guidance.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                **({"cuda_rng": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {}),
                "skipped_steps": self.skipped_steps, "timings": dict(self.timings), "history": self.history,
                "convergence": self.convergence.state_dict(), "phases": self.timer.seconds(6),
                "schedule_steps": self.schedule_steps, "stage": self.stage, "coarse_end": self.coarse_end}

    def load_state_dict(self, state: dict) -> None:
        """Restore everything, or raise before changing anything."""
        stage = state.get("stage", "coarse")  # checkpoints from before refinement: the coarse stage
        if stage not in STAGES:
            raise CheckpointError(f"checkpoint stage {stage!r} is unknown; valid: {', '.join(STAGES)}")
        if stage == "coarse":
            scene = build_run_scene(self.cfg.scene, self.cfg.seed, self.view_elevations).to(self.device)
        else:  # the mesh's own state restores the frozen geometry
            scene = MeshScene(self.cfg.refine.mesh, SceneInit(view_elevations=self.view_elevations)).to(self.device)
        # checkpoints from before shares of the run: the length their config had
        schedule_steps = state.get("schedule_steps") or state.get("config", {}).get("train", {}).get("steps")
        guidance = build_guidance(self.cfg.guidance, self.prior, self.run_context(schedule_steps)).to(self.device)
        if stage != "coarse":
            guidance.set_timestep_range(*self.cfg.refine.timestep_range(self.cfg.guidance))
        try:
            scene.load_state_dict(state["scene"])
            guidance.load_state_dict(state["guidance"])
            optimizer = make_optimizer(scene, guidance)
            optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"checkpoint does not match this config ({type(e).__name__}: {str(e)[:300]})") from None
        self.scene, self.guidance, self.optimizer = scene, guidance, optimizer
        self.schedule_steps = schedule_steps
        self.step, self.skipped_steps = state["step"], state.get("skipped_steps", 0)
        self.stage, self.coarse_end = stage, state.get("coarse_end")
        self.scene.begin_step(self.scene_step)
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in state:  # absent when the run moved here from the CPU
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.timings = defaultdict(float, state.get("timings", {}))
        self.history = state.get("history", [])
        if "convergence" in state:  # checkpoints from before convergence stops have none
            self.convergence.load_state_dict(state["convergence"])
        for name, seconds in state.get("phases", {}).items():  # earlier sessions' phases add up with this one's
            self.timer.add(name, seconds)

    def save_checkpoint(self) -> Path:
        with self.timer("checkpoints"):
            return self.run_dir.save_checkpoint(self.state_dict())

    # -- stages ----------------------------------------------------------------------------
    @property
    def stage_start(self) -> int:
        """The step at which the current stage began."""
        if self.stage == "coarse":
            return 0
        return self.coarse_end + (self.cfg.refine.geometry_steps if self.stage == "texture" else 0)

    @property
    def stage_end(self) -> int:
        """The step at which the current stage ends (the coarse stage may end sooner: converged)."""
        r = self.cfg.refine
        if self.stage == "coarse":
            return self.cfg.train.steps
        return self.stage_start + (r.geometry_steps if self.stage == "geometry" else r.texture_steps)

    @property
    def scene_step(self) -> int:
        """The step within the current stage: a scene's own schedules count from its stage's start."""
        return self.step - self.stage_start

    @property
    def resolution(self) -> int:
        """Render resolution of the current stage's training steps and validation checks."""
        return self.cfg.train.resolution if self.stage == "coarse" else self.cfg.refine.resolution

    @property
    def total_steps(self) -> int:
        """The run's length as far as it is known: where the coarse stage ends (train.steps, or the step
        it converged at) plus the refinement's steps."""
        coarse = self.coarse_end if self.coarse_end is not None else (self.step if self.converged else self.cfg.train.steps)
        return coarse + self.cfg.refine.geometry_steps + self.cfg.refine.texture_steps

    def stage_done(self) -> bool:
        return self.step >= self.stage_end or (self.stage == "coarse" and self.converged)

    def next_stage(self) -> bool:
        """Start the next refinement stage (cfg.refine) once the current one is done; False when none is
        left. Coarse -> geometry: a DMTet mesh scene starts from the coarse scene's surface as its export
        would extract it (dream3d.refine.coarse_sdf). Geometry -> texture: the mesh is frozen and only its
        albedo learns. Each stage gets a fresh optimiser (the guidance's own trainables included)."""
        r = self.cfg.refine
        if self.stage == "coarse":
            if not r.enabled:
                return False
            self.coarse_end = self.step
            with self.timer("refine_sdf"):
                sdf = coarse_sdf(self.scene, self.cfg.output.export, self.view_elevations, r.sdf_resolution,
                                 bound=r.mesh.bound)
            self.scene = MeshScene(r.mesh, SceneInit(sdf=sdf, view_elevations=self.view_elevations)).to(self.device)
            self.stage = "geometry"
            self.guidance.set_timestep_range(*r.timestep_range(self.cfg.guidance))
            if r.geometry_steps > 0:
                self.optimizer = make_optimizer(self.scene, self.guidance)
                return True
        if self.stage == "geometry" and r.texture_steps > 0:
            self.scene.freeze_geometry()
            self.stage = "texture"
            self.optimizer = make_optimizer(self.scene, self.guidance)
            return True
        return False

    # -- one step --------------------------------------------------------------------------
    def train_step(self) -> dict:
        cfg, gen = self.cfg, self.generator
        t0 = time.perf_counter()
        views = self.prior.joint_views  # a multi-view prior denoises groups of views: render such groups
        cams = (self.camera_sampler.sample(cfg.train.batch_size, gen) if views == 1 else
                self.camera_sampler.sample_groups(cfg.train.batch_size // views, views, gen)).to(self.device)
        self.scene.begin_step(self.scene_step)
        res = self.resolution
        out = self.scene.render(cams, res, res, gen)
        t1 = time.perf_counter()
        g = self.guidance(out.rgb, cams, self.cond, self.step, gen)
        t2 = time.perf_counter()
        losses = {"guidance": g.loss, **g.aux_losses, **self.scene.regularizers(out, self.scene_step)}
        if self.reference is not None:  # image-to-3D: the reference view itself, as DreamGaussian and Magic123
            rgb, mask, camera = self.reference
            r = cfg.reference.resolution
            ref = self.scene.render(camera, r, r, gen)
            losses["reference"] = reference_loss(ref.rgb, ref.alpha, rgb, mask, cfg.reference.rgb_weight,
                                                 cfg.reference.mask_weight)
        total = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        finite = all(torch.isfinite(p.grad).all() for grp in self.optimizer.param_groups
                     for p in grp["params"] if p.grad is not None)
        if finite:
            self.scene.post_backward(self.scene_step, out, self.optimizer)
            self.optimizer.step()
            self.bad_steps = 0
        else:
            self.bad_steps += 1
            self.skipped_steps += 1
            log.warning("step %d: non-finite gradient, step skipped (%d in a row)", self.step, self.bad_steps)
            if self.bad_steps >= cfg.train.max_bad_steps:
                raise NonFiniteError(f"{self.bad_steps} consecutive steps had NaN/Inf gradients (last: step {self.step}); "
                                     "the last finite state is checkpointed. Lower the learning rates or "
                                     "guidance.guidance_scale, or set guidance.grad_clip.")
        t3 = time.perf_counter()
        for k, v in (("render", t1 - t0), ("guidance", t2 - t1), ("backward_step", t3 - t2)):
            self.timings[k] += v
        self.timings["steps"] += 1
        self.step += 1
        return {**g.stats, "alpha": float(out.alpha.detach().mean()), "loss": float(total.detach()),
                **{f"loss_{k}": float(v.detach()) for k, v in losses.items()}, **self.scene.log_stats(),
                **{f"lr_{grp.get('name', i)}": grp["lr"] for i, grp in enumerate(self.optimizer.param_groups)},
                "step_ms": 1000 * (t3 - t0)}

    @property
    def converged(self) -> bool:
        return self.cfg.train.convergence.enabled and self.convergence.converged_at is not None

    @torch.no_grad()
    def check_convergence(self) -> bool:
        """Feed the convergence monitor its validation renders when due; True once the coarse stage has
        converged. Refinement stages run all their steps: False there."""
        if self.stage != "coarse":
            return False
        if not self.convergence.due(self.step):
            return self.converged
        with self.timer("convergence"):
            res = self.cfg.train.resolution
            out = self.scene.render(self.validation_cameras, res, res, train=False)
            if self.truth is not None:
                self.validation_iou = self.truth.iou(out.alpha)
            return self.convergence.observe(self.step, torch.cat([out.rgb, out.alpha], 1))

    # -- outputs ---------------------------------------------------------------------------
    @torch.no_grad()
    def save_preview(self) -> Path:
        with self.timer("previews"):
            res = self.cfg.output.val_resolution
            out = self.scene.render(self.validation_cameras, res, res, train=False)
            if self.stage == "geometry" and out.normal is not None:  # colour over the normal map: the shape being refined
                below = (out.normal * 0.5 + 0.5) * out.alpha + (1 - out.alpha)
            else:  # colour over opacity
                below = out.alpha.expand_as(out.rgb)
            grid = torch.cat([out.rgb, below], dim=2)
            if self.truth is not None and self.validation_iou is None:  # at the training resolution, as the convergence check's
                res = self.resolution
                self.validation_iou = self.truth.iou(self.scene.render(self.validation_cameras, res, res, train=False).alpha)
            if self.train_log is not None:
                self.train_log.image(self.step, "validation", to_uint8(grid))
            return write_image(self.run_dir.preview(self.step), grid)

    @torch.no_grad()
    def save_turntable(self) -> Path | None:
        n, res = self.cfg.output.turntable_frames, self.cfg.output.turntable_resolution
        if n == 0:
            return None
        with self.timer("turntable"):
            cams = self.camera_sampler.orbit(n, 15.0).to(self.device)
            frames = [to_uint8(self.scene.render(cams[i:i + 1], res, res, train=False).rgb[0]) for i in range(n)]
            return write_video(self.run_dir.video(self.cfg.output.video_format), frames)

    def export(self, cancel: Callable[[], bool] | None = None) -> dict:
        """export_scene with the run's settings; an error (or `cancel()` turning true between
        export phases) gives {"error": message} and leaves the checkpoint for `dream3d export`."""
        e = self.cfg.output.export
        try:
            with self.timer("export"):
                info = export_scene(self.scene, self.run_dir.model, e, self.view_elevations, cancel)
        except (EmptySceneError, ExportError) as err:  # the checkpoint is safe; `dream3d export` can retry
            log.error("export skipped: %s", err)
            return {"error": str(err)}
        return info

    def write_metrics(self, status: str, wall: float, extra: dict | None = None) -> None:
        """metrics.json: status, where training stopped and why ("stop": converged | steps | stopped |
        interrupted | non_finite), the convergence check, wall seconds per phase ("phases_s", summed
        over every session of the run; export.* are the parts of this session's export) and per
        training step."""
        n = max(self.timings.get("steps", 0), 1)
        extra = dict(extra or {})
        phases = {**self.timer.seconds(), "train": round(self.train_seconds, 2)}
        export = extra.get("export") or {}
        phases.update({f"export.{k}": v for k, v in export.get("seconds", {}).items()})
        stop = self.stop_reason(status)
        write_json(self.run_dir.metrics, {
            "status": status, "prompt": self.cfg.prompt, "seed": self.cfg.seed, "step": self.step,
            "steps": self.cfg.train.steps, "stage": self.stage, "total_steps": self.total_steps, "stop": stop,
            "convergence": self.convergence.summary(),
            "wall_time_s": round(wall, 2), "phases_s": phases, "skipped_steps": self.skipped_steps,
            "ms_per_step": {k: round(1000 * v / n, 2) for k, v in self.timings.items() if k != "steps"},
            "history": self.history, **extra,
        })

    @staticmethod
    def stop_note(result: dict) -> str:
        """How a fit result's training stopped, for people: "" unless the coarse stage converged early,
        else "converged at step 330 of 1000" (", then 200 refinement steps" for a refined run)."""
        if result.get("stop") != "converged":
            return ""
        end = result.get("coarse_end")
        note = f"converged at step {end if end is not None else result['step']} of {result.get('train_steps', result['steps'])}"
        return note + (f", then {result['step'] - end} refinement steps" if end is not None else "")

    def stop_reason(self, status: str) -> str:
        """Why training ended: converged | steps (all train.steps) | stopped | interrupted | non_finite."""
        return status if status != "finished" else ("converged" if self.converged else "steps")

    # -- the loop --------------------------------------------------------------------------
    @property
    def progress_label(self) -> str:
        """The progress bar's label: "dream3d", or the stage while a run refines ("dream3d geometry")."""
        return "dream3d" if not self.cfg.refine.enabled else f"dream3d {self.stage}"

    @property
    def train_seconds(self) -> float:
        """Time spent in training steps (render, guidance, backward and step), over every session."""
        return sum(v for k, v in self.timings.items() if k != "steps")

    def fit(self, stop: threading.Event | None = None, on_step: Callable[[dict], None] | None = None,
            evaluation: Evaluation | None = None) -> dict:
        """Train until converged (train.convergence) or cfg.train.steps, then through the refinement
        stages cfg.refine asks for (next_stage), then preview, checkpoint, turntable, export, metrics.

        `stop` set (e.g. by the web UI's Stop button): finish the current step, checkpoint, export
        what exists and return with status "stopped". Set after training ended (during the export):
        the export ends at its next phase without assets (the checkpoint is final; `dream3d export`
        writes them later), no turntable, status "stopped". `on_step(stats)` is called after every step
        with the step, the step count, the guidance statistics and the latest preview path.
        `evaluation.measure(self)` runs every `evaluation.every` steps and after the last one.

        Ctrl-C: checkpoint and export what exists, then re-raise KeyboardInterrupt.
        Too many non-finite steps: checkpoint the last finite state, raise NonFiniteError.
        A failed write (disk full, read-only): stop at once with OutputWriteError; the previous
        checkpoint is intact (all writes are atomic)."""
        cfg, start = self.cfg, time.perf_counter()
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.progress, desc=self.progress_label,
                   unit="step", dynamic_ncols=True)
        status = "finished"
        pending = None
        try:
            atomic_write_text(self.run_dir.config, to_yaml(cfg))
            self.train_log = TrainLog(self.run_dir, cfg.output.logger, self.step, to_dict(cfg))
            preview = None
            while True:
                while not self.stage_done():
                    if stop is not None and stop.is_set():
                        status = "stopped"
                        break
                    stats = self.train_step()
                    pending = stats  # logged below; by the Ctrl-C handler if it comes first (the checkpoint holds this step)
                    bar.update(1)
                    bar.set_postfix(grad=f"{stats['grad_norm']:.3g}", alpha=f"{stats['alpha']:.2f}", refresh=False)
                    self.validation_iou = None
                    last = self.check_convergence() or self.step == self.stage_end
                    if self.step % cfg.output.val_every == 0 or last:
                        self.history.append({"step": self.step, "stage": self.stage, **{
                            k: round(v, 5) for k, v in stats.items() if not k.startswith(LOG_ONLY)}})
                        preview = self.save_preview()
                    self.train_log.scalars(self.step, {**stats, "iou": self.validation_iou})
                    pending = None
                    if on_step is not None:
                        on_step({"step": self.step, "steps": self.total_steps, "stage": self.stage, "preview": preview,
                                 **stats})
                    if evaluation is not None and (self.step % evaluation.every == 0 or last):
                        evaluation.measure(self)
                    if self.step % cfg.output.checkpoint_every == 0 and not last:
                        self.save_checkpoint()
                if status == "stopped":
                    break
                if self.stage == "coarse" and self.converged:
                    log.info("converged at step %d of %d (validation renders changed by %.4f < %g); "
                             "train.convergence.enabled=false trains every step", self.step, cfg.train.steps,
                             self.convergence.change, cfg.train.convergence.tolerance)
                if not self.next_stage():
                    break
                self.save_checkpoint()  # the new stage's start: a resumed run does not convert the scene again
                bar.total = self.total_steps
                bar.set_description(self.progress_label)
                bar.refresh()
            self.save_checkpoint()
        except KeyboardInterrupt:
            status = "interrupted"
            if pending is not None and self.train_log is not None:
                self.train_log.scalars(self.step, pending)
            self.save_checkpoint()
        except NonFiniteError:
            self.save_checkpoint()
            self.write_metrics("non_finite", time.perf_counter() - start)
            raise
        except OSError as e:
            raise OutputWriteError(
                f"could not write {e.filename or 'an output file'} ({e.strerror or e}) at step {self.step}: free disk "
                f"space or make {self.run_dir.path} writable, then `dream3d resume {self.run_dir.path}` continues from the "
                "last checkpoint, which is intact") from e
        finally:
            bar.close()
            if self.train_log is not None:
                self.train_log.close()
                self.train_log = None
        # Stop pressed after training ended (during export): end the export early, skip the turntable
        cancel = None if status != "finished" or stop is None else stop.is_set
        export = self.export(cancel)
        if stop is not None and stop.is_set():
            status = "stopped" if status == "finished" else status
        turntable = self.save_turntable() if status == "finished" else None
        self.write_metrics(status, time.perf_counter() - start, {"export": export,
                                                                 "turntable": str(turntable) if turntable else None})
        if status == "interrupted":
            raise KeyboardInterrupt
        return {"status": status, "run_dir": str(self.run_dir.path), "export": export, "step": self.step,
                "steps": self.total_steps, "stage": self.stage, "stop": self.stop_reason(status),
                "coarse_end": self.coarse_end, "train_steps": cfg.train.steps}
