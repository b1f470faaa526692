"""The Gradio web UI: prompt in, live previews, a GLB viewer and downloads out.

The run is the Python API's `start_run()` in a background thread (the same code path as the CLI); the
UI polls its progress. Stop sets an event the trainer checks between steps: it checkpoints and
exports what exists. At most `concurrency` runs execute at a time: a run's worker thread holds
its slot until it has really ended (a cancelled visitor's run finishes its checkpoint first), and
a queue holds the rest. Stop bypasses the queue. Every request is priced before it starts
(dream3d/cost.py) and refused above the server's RequestBudget; only the runs directory is served.
"""
import argparse
import itertools
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("dream3d")

PRESET_ROOTS = (Path("configs"), Path(__file__).resolve().parent.parent / "configs")
# simple caps on what a shared UI lets a visitor ask for (the CLI has no such caps); the
# RequestBudget below bounds every combination of keys by estimated memory and time
UI_LIMITS = {"train.steps": 5000, "train.batch_size": 8, "train.resolution": 128, "output.export.resolution": 256,
             "output.turntable_frames": 120, "output.turntable_resolution": 512, "output.val_resolution": 256,
             "refine.geometry_steps": 2000, "refine.texture_steps": 2000, "refine.resolution": 128,
             "refine.sdf_resolution": 128, "refine.mesh.grid_resolution": 64}
SET_BY_UI = ("prompt", "negative_prompt", "seed")
DEFAULT_UI_STEPS = 400  # the steps field's starting value
CHOSEN_BY_PRESET = ("prior.name",)  # the preset's prior (a switch to Stable Diffusion would download weights)
MAX_ADVANCED_CHARS = 4000
PREVIEWS_PER_RUN = 20
MAX_UPLOAD = "10mb"  # the largest file a visitor may upload (the reference image of image-to-3D)
MAX_IMAGE_PIXELS = 2048 * 2048  # a reference image's pixels (it is resized to <= 256 px); larger ones are refused
# from the file's header, before any decoding (~64 MB as float RGBA at the limit)


@dataclass(frozen=True)
class RequestBudget:
    """What one web request may cost by the project's own estimate (dream3d.cost.estimate_cost)."""

    seconds: float = 1800.0  # wall time of the whole run on the server, export included
    memory_gb: float = 8.0  # peak resident memory of the process while it runs (host RAM, not GPU memory)


class UserInputError(ValueError):
    """Input the UI rejects, with a message for the visitor."""


def preset_root() -> Path:
    for root in PRESET_ROOTS:
        if root.is_dir():
            return root
    raise FileNotFoundError("no configs/ folder found; start the app from the dream3d checkout")


def list_presets(root: Path | None = None) -> list[str]:
    """Preset names ("toy/sds-nerf") for every YAML under configs/, ToyWorld ones first."""
    root = root or preset_root()
    names = sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))
    return sorted(names, key=lambda n: (not n.startswith("toy/"), n))


def offered_presets(runs_dir: str | Path, root: Path | None = None, budget: RequestBudget | None = None
                    ) -> tuple[list[str], dict[str, str]]:
    """(presets this UI accepts as they are, {preset: why not} for the others): a preset is offered only
    when its own settings, with its own prompt, pass the UI's limits and the request budget on this
    server (make_config's checks), so a visitor never picks one that is then refused."""
    from dream3d.kernel.schema import ConfigError

    root = root or preset_root()
    offered, hidden = [], {}
    with tempfile.TemporaryDirectory(prefix="dream3d-ui-") as tmp:
        sample = write_sample_image(Path(tmp) / "reference.png")
        for name in list_presets(root):
            try:
                offered.append(_offer(name, root, runs_dir, budget, sample))
            except (UserInputError, ConfigError) as e:
                hidden[name] = str(e)
            except Exception as e:  # noqa: BLE001 - one broken YAML must not stop the server: it is not offered
                hidden[name] = f"{type(e).__name__}: {e}"
    return offered, hidden


def _offer(name: str, root: Path, runs_dir: str | Path, budget: RequestBudget | None, sample: Path) -> str:
    """`name` if make_config accepts the preset as it is (an image-to-3D preset that needs an image: with
    `sample`), else the refusal."""
    from dream3d.config import load_preset

    own = load_preset(root / f"{name}.yaml")
    image = sample if own.image else None  # a preset that runs only with an image (Zero123) is priced with one
    steps = min(own.train.steps, DEFAULT_UI_STEPS)  # the visitor picks the steps: priced at the form's default
    make_config(name, own.prompt, own.negative_prompt, steps, own.seed, None, "", runs_dir, root, budget, image)
    return name


def write_sample_image(path: Path) -> Path:
    """A small RGBA reference view (a grey square on transparent) to price image-to-3D presets with."""
    import imageio.v3 as iio
    import numpy as np

    img = np.zeros((64, 64, 4), np.uint8)
    img[16:48, 16:48] = 128, 128, 128, 255
    iio.imwrite(path, img)
    return path


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _touches(key: str, keys) -> bool:
    """Whether overriding `key` sets one of `keys`: the key itself or a section holding it."""
    return any(k == key or k.startswith(key + ".") for k in keys)


def make_config(preset: str, prompt: str, negative: str, steps: int, seed: int, guidance_scale: float | None,
                advanced: str, runs_dir: str | Path, root: Path | None = None, budget: RequestBudget | None = None,
                image: str | Path | None = None, refine: bool = False):
    """A validated RunConfig from the UI's fields; `advanced` holds one key=value override per line,
    a guidance scale of None or 0 keeps the preset's; `image`: the uploaded reference view of an image-to-3D
    run (a file Gradio saved), checked here; `refine`: add the mesh refinement stages (refine_preset). Raises
    UserInputError (bad preset, a key the UI sets or that names a server file, limits, over budget, an image
    the preset's prior cannot take) or ConfigError (bad keys or values, an unusable image)."""
    from dream3d.config import IMAGE_PLACEHOLDER, RunConfig, load_config, validate
    from dream3d.cost import estimate_cost
    from dream3d.kernel.schema import server_only_keys
    from guidance import GUIDANCES
    from guidance.priors import PRIORS
    from renderers import SCENES

    root = root or preset_root()
    budget = budget or RequestBudget()
    if preset not in list_presets(root):
        raise UserInputError(f"unknown preset {preset!r}; choose one of: {', '.join(list_presets(root))}")
    # keys that name files, folders or downloads on the server: only presets set them
    refused = set(server_only_keys(RunConfig)) | {
        f"{kind}.{key}" for kind, reg in (("prior", PRIORS), ("guidance", GUIDANCES), ("scene", SCENES))
        for _, schema in reg.values() for key in server_only_keys(schema)}
    if len(advanced or "") > MAX_ADVANCED_CHARS:
        raise UserInputError(f"advanced overrides have {len(advanced)} characters; the limit is {MAX_ADVANCED_CHARS}")
    overrides = [line.strip() for line in (advanced or "").splitlines() if line.strip() and not line.strip().startswith("#")]
    for o in overrides:
        if "=" not in o:
            raise UserInputError(f"advanced override {o!r} is not key=value")
        key = o.split("=", 1)[0].strip()
        if any(key == k or key.startswith(k + ".") for k in SET_BY_UI):
            raise UserInputError(f"{key!r} is set by the UI, not by an override")
        if _touches(key, CHOSEN_BY_PRESET):
            raise UserInputError(f"{key!r} comes from the preset; pick another preset instead")
        if _touches(key, refused):
            raise UserInputError(f"{key!r} names a file or download on the server; this UI takes it from the preset only")
    try:
        overrides += [f"train.steps={int(steps)}", f"seed={int(seed)}"]
        if guidance_scale:  # None or 0: the preset's
            overrides.append(f"guidance.guidance_scale={float(guidance_scale)}")
    except (TypeError, ValueError, OverflowError):
        raise UserInputError(f"steps ({steps!r}) and seed ({seed!r}) must be whole numbers, the guidance scale "
                             f"({guidance_scale!r}) a number") from None
    if refine:
        preset, extra = refine_preset(preset, root)
        overrides = extra + overrides  # the visitor's own refine.* overrides win
    cfg = load_config(root / f"{preset}.yaml", overrides + ([f"image={IMAGE_PLACEHOLDER}"] if image else []))
    # (strings are literal: no ${...} is ever resolved; the upload's own path is set below, never parsed)
    cfg.prompt, cfg.negative_prompt = prompt or "", negative or ""
    if image:  # set here, never from text: `image` is a server-side key
        cfg.image = str(check_image(image, cfg, preset, root))
    validate(cfg)  # the prompt checks (empty, too long) run here
    for key, cap in UI_LIMITS.items():
        if _get(cfg, key) > cap:
            raise UserInputError(f"{key} = {_get(cfg, key)} is above this UI's limit of {cap}")
    cfg.output.out_dir = str(runs_dir)
    cfg.output.progress = False
    cfg.output.val_every = max(1, min(cfg.output.val_every, cfg.train.steps // PREVIEWS_PER_RUN))
    cost = estimate_cost(cfg)
    if cost.seconds > budget.seconds or cost.peak_bytes > budget.memory_gb * 2**30:
        raise UserInputError(
            f"this request would take about {cost.seconds:.0f} s and {cost.peak_bytes / 2**30:.1f} GiB; this server "
            f"allows {budget.seconds:.0f} s and {budget.memory_gb:.1f} GiB per request (largest parts: "
            f"{cost.largest()}). Lower the steps, resolutions, texture size or dataset size, or run it with "
            "the `dream3d run` CLI on your own machine")
    return cfg


REFINE_STEPS = ["refine.geometry_steps=100", "refine.texture_steps=100"]  # with the default refine settings (no
# hidden-face terms, which the refine presets pair with their longer geometry stages)


def refine_preset(preset: str, root: Path) -> tuple[str, list[str]]:
    """The UI's "Refine the mesh": (preset, overrides) of the same run with the mesh stages. A preset that
    refines already stays as it is; one with a `<name>-refine` sibling (the same run with tuned refine
    settings) becomes that sibling; any other gets REFINE_STEPS with the default refine settings."""
    from dream3d.config import load_preset

    if load_preset(root / f"{preset}.yaml").refine.enabled:
        return preset, []
    if f"{preset}-refine" in list_presets(root):
        return f"{preset}-refine", []
    return preset, list(REFINE_STEPS)


def image_presets(names: list[str]) -> list[str]:
    """The image-to-3D presets among `names` (by name: `*-image`, and Zero123's)."""
    return [n for n in names if n.endswith("-image") or "zero123" in n]


def check_image(image: str | Path, cfg: Any, preset: str, root: Path | None = None) -> Path:
    """An uploaded reference image that this preset's prior can take, within MAX_IMAGE_PIXELS (checked from the
    header before any decoding), with an object that can be cut out (dream3d/reference.py's refusals)."""
    from dream3d.reference import load_reference
    from guidance.priors import PRIORS

    prior_cls, _ = PRIORS[cfg.prior.name]
    if not prior_cls.supports("embed_image"):
        raise UserInputError(f"preset {preset} (prior {cfg.prior.name}) makes 3D from text only and cannot take an "
                             f"image; remove the image or choose an image-to-3D preset "
                             f"({', '.join(image_presets(list_presets(root)))})")
    load_reference(image, cfg.reference.resolution, MAX_IMAGE_PIXELS)
    return Path(image)


def zip_run(run_dir: Path) -> Path:
    """run_dir/run.zip with the folder's regular files (no symlinks; a unique temp name, then renamed)."""
    from dream3d.runs import RunDir, zip_folder

    return zip_folder(run_dir, RunDir(run_dir).archive)


def result_note(export: dict) -> str:
    """One line about the exported assets for the status text."""
    if "error" in export:
        return f"no mesh: {export['error']}"
    if "faces" in export:
        return f"{export['faces']} faces"
    splats = any(k.startswith("splat") for k in export.get("files", {}))
    return "no mesh format asked for" + (" (splats written)" if splats else "")


STAGE_LABELS = {"coarse": "", "geometry": " · refining the mesh: geometry", "texture": " · refining the mesh: texture"}


def status_text(stats: dict | None, started: float, run_dir: Path | None) -> str:
    if not stats:
        return "Preparing the prior and the scene…"
    step, steps = stats["step"], stats["steps"]
    elapsed = time.time() - started
    eta = elapsed / max(step, 1) * (steps - step)
    stage = STAGE_LABELS.get(stats.get("stage", "coarse"), "")
    return (f"**Step {step} / {steps}**{stage} — {elapsed:.0f} s elapsed, at most {eta:.0f} s left (training stops "
            "sooner once converged) · "
            f"|G| {stats.get('grad_norm', float('nan')):.3g} · opacity {stats.get('alpha', float('nan')):.2f}"
            + (f"\n\nRun folder: `{run_dir}`" if run_dir else ""))


def user_message(e: BaseException) -> str:
    from dream3d.config import ConfigError
    from dream3d.toyworld import PromptError
    from dream3d.trainer import NonFiniteError, OutputWriteError

    if isinstance(e, (UserInputError, ConfigError, PromptError, NonFiniteError, OutputWriteError)):
        return str(e)
    return f"the run failed ({type(e).__name__}: {e}); the run folder keeps its last checkpoint"


class Jobs:
    """Runs in progress: their Stop events by browser session, the concurrency slots, and a log of
    when each worker thread started and ended (monotonic seconds), which shows that runs never
    overlap beyond the concurrency."""

    def __init__(self, concurrency: int = 1):
        self._stops: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(max(1, concurrency))
        self.log: list[tuple[str, int, float]] = []  # ("start" | "end", run number, time)
        self._numbers = itertools.count(1)

    def start(self, session: str) -> threading.Event:
        with self._lock:
            self._stops[session] = threading.Event()
            return self._stops[session]

    def stop(self, session: str) -> bool:
        with self._lock:
            event = self._stops.get(session)
        if event is not None:
            event.set()
        return event is not None

    def finish(self, session: str, stop: threading.Event) -> None:
        with self._lock:
            if self._stops.get(session) is stop:
                self._stops.pop(session)

    def worker(self, target) -> threading.Thread:
        """A thread that runs target() inside a slot the caller has acquired, and releases it when
        target has returned (whatever happened to the request that started it)."""
        number = next(self._numbers)

        def body():
            self.log.append(("start", number, time.monotonic()))
            try:
                target()
            finally:
                self.log.append(("end", number, time.monotonic()))
                self.slots.release()

        return threading.Thread(target=body, name=f"dream3d-run-{number}", daemon=True)


def build_app(runs_dir: str | Path = "runs", concurrency: int = 1, root: Path | None = None,
              budget: RequestBudget | None = None):
    """The Gradio Blocks (not launched); `.jobs` holds the Jobs of this app, `.runs_dir` its folder."""
    import gradio as gr

    from dream3d.lifecycle import start_run
    from dream3d.runs import RunDir
    from dream3d.trainer import Trainer

    runs_dir = Path(runs_dir).resolve()
    root = root or preset_root()
    presets, hidden = offered_presets(runs_dir, root, budget)
    for name, why in hidden.items():  # for whoever runs the server: why a preset is not in the list
        log.info("web UI: preset %s not offered: %s", name, why)
    if not presets:
        raise RuntimeError(f"no preset under {root} fits this UI's limits and budget ({budget or RequestBudget()}); "
                           "raise the budget")
    jobs = Jobs(concurrency)

    def generate(preset, prompt, negative, steps, seed, guidance_scale, advanced, image=None, refine=False,
                 request: gr.Request = None, progress=gr.Progress()):  # noqa: B008 - Gradio injects progress through this
        try:
            cfg = make_config(preset, prompt, negative, steps, seed, guidance_scale, advanced, runs_dir, root, budget,
                              image or None, bool(refine))
        except ValueError as e:
            raise gr.Error(user_message(e)) from None
        session = getattr(request, "session_hash", None) or "default"
        # a slot frees only when the previous run's worker has ended (a cancelled run checkpoints first);
        # waiting in a loop of yields lets Gradio cancel this request meanwhile
        while not jobs.slots.acquire(timeout=1.0):
            yield "Waiting for the previous run to end…", None, None, None, None
        try:  # a request cancelled while it waited ends here, before any work
            yield "Starting…", None, None, None, None
        except BaseException:
            jobs.slots.release()
            raise
        started = time.time()
        stop = jobs.start(session)
        state: dict[str, Any] = {"stats": None, "run_dir": None, "result": None, "error": None}

        def target():
            try:
                state["result"] = start_run(cfg, preset.replace("/", "-"), progress=False, stop=stop,
                                            on_step=lambda s: state.__setitem__("stats", s),
                                            on_start=lambda d: state.__setitem__("run_dir", Path(d)))
            except BaseException as e:  # noqa: B036 - reported to the visitor below
                state["error"] = e

        worker = jobs.worker(target)
        try:
            worker.start()
        except BaseException:  # no thread (e.g. the thread limit): the slot must not leak
            jobs.finish(session, stop)
            jobs.slots.release()
            raise
        last_preview = None
        try:
            while worker.is_alive():
                worker.join(timeout=1.0)
                stats = state["stats"]
                if stats:
                    progress((stats["step"], stats["steps"]),
                             desc="training" if stats.get("stage", "coarse") == "coarse" else f"refining ({stats['stage']})")
                    last_preview = str(stats["preview"]) if stats.get("preview") else last_preview
                yield status_text(stats, started, state["run_dir"]), last_preview, None, None, None
        finally:
            stop.set()  # a closed page or a cancelled event stops the run too (its worker keeps the slot until done)
            jobs.finish(session, stop)
        if state["error"] is not None:
            raise gr.Error(user_message(state["error"]))
        result, folder = state["result"], RunDir(state["result"]["run_dir"])
        logs = [folder.step_log] if folder.step_log.exists() else []
        files = [*folder.assets(), *logs, zip_run(folder.path)]
        glb, video = folder.asset("glb"), folder.turntable()
        note = Trainer.stop_note(result)
        converged = f" ({note})" if note else ""
        tensorboard = (f"; TensorBoard: `tensorboard --logdir {folder.path.parent}`"
                       if any(folder.logs.glob("events.out.tfevents.*")) else "")
        done = (f"**{result['status'].capitalize()}**{converged} after {time.time() - started:.0f} s — "
                f"{result_note(result['export'])}\n\nRun folder: `{folder.path}` · training log: `steps.csv` in "
                f"Downloads{tensorboard}")
        yield (done, last_preview, str(video) if video else None, str(glb) if glb.exists() else None,
               [str(f) for f in files])

    def stop_run(request: gr.Request):
        stopped = jobs.stop(getattr(request, "session_hash", None) or "default")
        return ("Stopping: saving a checkpoint and exporting what exists (during the export: ending it)…" if stopped
                else "Nothing is running.")

    with gr.Blocks(title="dream3d") as demo:
        gr.Markdown("# dream3d\nText to 3D by score distillation. ToyWorld presets run on a CPU in minutes; "
                    "Stable Diffusion presets (`sd/…`) need a GPU and downloaded weights.")
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(label="Prompt", value="a red cube", max_lines=2, elem_id="prompt")
                negative = gr.Textbox(label="Negative prompt", value="", max_lines=2)
                default = "toy/sds-nerf" if "toy/sds-nerf" in presets else presets[0]
                preset = gr.Dropdown(presets, value=default, label="Preset (guidance and scene)")
                with gr.Row():
                    steps = gr.Slider(10, UI_LIMITS["train.steps"], value=DEFAULT_UI_STEPS, step=10, label="Steps")
                    seed = gr.Number(value=0, precision=0, label="Seed")
                scale = gr.Number(value=0, label="Guidance scale (0 = the preset's)")
                refine = gr.Checkbox(value=False, label="Refine the mesh: geometry and texture stages after training "
                                     "(a cleaner, watertight mesh; the progress names the stage)", elem_id="refine")
                with gr.Accordion("Image to 3D (optional)", open=False):
                    # a file, not gr.Image: Gradio would decode an image upload before any check; this one is read
                    # by check_image (its header first, then the pixels), then copied into the run folder by the run
                    image = gr.File(label=f"Reference view (PNG with transparency, or an object on a plain background; "
                                    f"at most {int(MAX_IMAGE_PIXELS ** 0.5)} px a side) — with an image-to-3D preset "
                                    f"({', '.join(image_presets(presets))})", file_types=["image"], type="filepath",
                                    elem_id="image")
                with gr.Accordion("Advanced overrides", open=False):
                    advanced = gr.Textbox(label="key=value, one per line", lines=4, elem_id="advanced",
                                          placeholder="train.resolution=64\nscene.sparsity_weight=0.01")
                with gr.Row():
                    go = gr.Button("Generate", variant="primary", elem_id="generate")
                    halt = gr.Button("Stop", variant="stop", elem_id="stop")
            with gr.Column(scale=2):
                status = gr.Markdown("Type a prompt and press Generate.", elem_id="status")
                with gr.Row():
                    preview = gr.Image(label="Latest validation render (colour over opacity, or over the normal map "
                                             "while the mesh geometry refines)", type="filepath")
                    video = gr.Video(label="Turntable")
                model = gr.Model3D(label="Mesh (GLB)", elem_id="model3d", height=360)
                glb = gr.File(visible=False)
                files = gr.File(label="Downloads", file_count="multiple")
        # Gradio 6.31's Model3D does not draw a value set by a generator, so the streaming event
        # returns the GLB as a file and a plain follow-up event hands it to the viewer
        go.click(generate, [preset, prompt, negative, steps, seed, scale, advanced, image, refine],
                 [status, preview, video, glb, files],
                 api_name="generate", concurrency_limit=concurrency).then(lambda f: f, glb, model, api_name=False)
        # not queued: Stop must work when the queue is full
        halt.click(stop_run, None, status, api_name="stop", queue=False)
    demo.jobs, demo.runs_dir = jobs, runs_dir
    return demo


def launch(host: str = "127.0.0.1", port: int = 7860, runs_dir: str | Path = "runs", concurrency: int = 1,
           block: bool = True, max_queue: int = 32, budget: RequestBudget | None = None, auth=None):
    """Serve the UI. `auth`: Gradio's (user, password) pair, a list of them, or a callable."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    demo = build_app(runs_dir, concurrency, budget=budget)
    demo.queue(max_size=max_queue, api_open=False)  # queued events only through the queue: no direct POST around it
    demo.launch(server_name=host, server_port=port, allowed_paths=[str(runs_dir.resolve())],
                prevent_thread_lock=not block, quiet=not block, max_file_size=MAX_UPLOAD, auth=auth)
    return demo


def add_server_arguments(ap: argparse.ArgumentParser) -> None:
    """The flags of `dream3d app` and `python app.py`."""
    ap.add_argument("--host", default=os.environ.get("DREAM3D_HOST", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("DREAM3D_PORT", "7860")))
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--concurrency", type=int, default=1, help="training jobs at a time")
    ap.add_argument("--max-queue", type=int, default=32, help="requests waiting at most (more are refused)")
    ap.add_argument("--max-request-seconds", type=float, default=RequestBudget.seconds,
                    help="estimated wall time one request may cost (default %(default)s)")
    ap.add_argument("--max-request-memory-gb", type=float, default=RequestBudget.memory_gb,
                    help="estimated peak memory one request may cost (default %(default)s)")
    ap.add_argument("--auth", metavar="USER:PASSWORD", default=os.environ.get("DREAM3D_AUTH"),
                    help="ask for this login (or set DREAM3D_AUTH); put a reverse proxy in front for more")


def serve(args: argparse.Namespace) -> int:
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    if args.auth and len(auth) != 2:
        raise SystemExit("--auth must look like USER:PASSWORD")
    launch(args.host, args.port, args.runs_dir, args.concurrency, max_queue=args.max_queue,
           budget=RequestBudget(args.max_request_seconds, args.max_request_memory_gb), auth=auth)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="dream3d app", description="Start the dream3d web UI.")
    add_server_arguments(ap)
    return serve(ap.parse_args(argv))
