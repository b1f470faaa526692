"""The Gradio web UI: prompt in, live previews, a GLB viewer and downloads out.

The run is the Python API's `run()` in a background thread (the same code path as the CLI); the
UI polls its progress. Stop sets an event the trainer checks between steps: it checkpoints and
exports what exists. One training job at a time by default (a queue holds the rest); only the
runs directory is served.
"""
import argparse
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

PRESET_ROOTS = (Path("configs"), Path(__file__).resolve().parent.parent / "configs")
# what a shared UI lets a visitor ask for (the CLI has no such caps)
UI_LIMITS = {"train.steps": 5000, "train.batch_size": 8, "train.resolution": 128, "output.export.resolution": 256,
             "output.turntable_frames": 120, "output.turntable_resolution": 512, "output.val_resolution": 256}
PREVIEWS_PER_RUN = 20


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


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def make_config(preset: str, prompt: str, negative: str, steps: int, seed: int, guidance_scale: float | None,
                advanced: str, runs_dir: str | Path, root: Path | None = None):
    """A validated RunConfig from the UI's fields; `advanced` holds one key=value override per line,
    a guidance scale of None or 0 keeps the preset's. Raises UserInputError (bad preset, limits)
    or ConfigError (bad keys or values)."""
    from dream3d.config import load_config, validate

    root = root or preset_root()
    if preset not in list_presets(root):
        raise UserInputError(f"unknown preset {preset!r}; choose one of: {', '.join(list_presets(root))}")
    overrides = [line.strip() for line in (advanced or "").splitlines() if line.strip() and not line.strip().startswith("#")]
    for o in overrides:
        if "=" not in o:
            raise UserInputError(f"advanced override {o!r} is not key=value")
        if o.split("=", 1)[0].strip().startswith(("output.out_dir", "output.name", "prompt", "negative_prompt")):
            raise UserInputError(f"{o.split('=', 1)[0]!r} is set by the UI, not by an override")
        if "${" in o:  # OmegaConf interpolation could read the server's environment (${oc.env:...})
            raise UserInputError(f"advanced override {o!r}: interpolations (${{...}}) are not allowed here")
    try:
        overrides += [f"train.steps={int(steps)}", f"seed={int(seed)}"]
        if guidance_scale:  # None or 0: the preset's
            overrides.append(f"guidance.guidance_scale={float(guidance_scale)}")
    except (TypeError, ValueError, OverflowError):
        raise UserInputError(f"steps ({steps!r}) and seed ({seed!r}) must be whole numbers, the guidance scale "
                             f"({guidance_scale!r}) a number") from None
    cfg = load_config(root / f"{preset}.yaml", overrides)
    cfg.prompt, cfg.negative_prompt = prompt or "", negative or ""
    validate(cfg)  # the prompt checks (empty, too long) run here
    for key, cap in UI_LIMITS.items():
        if _get(cfg, key) > cap:
            raise UserInputError(f"{key} = {_get(cfg, key)} is above this UI's limit of {cap}")
    cfg.output.out_dir = str(runs_dir)
    cfg.output.progress = False
    cfg.output.val_every = max(1, min(cfg.output.val_every, cfg.train.steps // PREVIEWS_PER_RUN))
    return cfg


def zip_run(run_dir: Path) -> Path:
    """run_dir/run.zip with the whole folder (written beside it, then moved in)."""
    tmp = run_dir.parent / f".{run_dir.name}.zip-tmp"
    archive = Path(shutil.make_archive(str(tmp), "zip", root_dir=run_dir))
    return Path(shutil.move(str(archive), run_dir / "run.zip"))


def status_text(stats: dict | None, started: float, run_dir: Path | None) -> str:
    if not stats:
        return "Preparing the prior and the scene…"
    step, steps = stats["step"], stats["steps"]
    elapsed = time.time() - started
    eta = elapsed / max(step, 1) * (steps - step)
    return (f"**Step {step} / {steps}** — {elapsed:.0f} s elapsed, about {eta:.0f} s left · "
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
    """Stop events of the runs in progress, by browser session."""

    def __init__(self):
        self._stops: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

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

    def finish(self, session: str) -> None:
        with self._lock:
            self._stops.pop(session, None)


def build_app(runs_dir: str | Path = "runs", concurrency: int = 1, root: Path | None = None):
    """The Gradio Blocks (not launched)."""
    import gradio as gr

    from dream3d.trainer import run

    runs_dir = Path(runs_dir).resolve()
    root = root or preset_root()
    presets = list_presets(root)
    jobs = Jobs()

    def generate(preset, prompt, negative, steps, seed, guidance_scale, advanced, request: gr.Request,
                 progress=gr.Progress()):  # noqa: B008 - Gradio injects progress through this default
        try:
            cfg = make_config(preset, prompt, negative, steps, seed, guidance_scale, advanced, runs_dir, root)
        except ValueError as e:
            raise gr.Error(user_message(e)) from None
        session = getattr(request, "session_hash", None) or "default"
        stop = jobs.start(session)
        state: dict[str, Any] = {"stats": None, "run_dir": None, "result": None, "error": None}

        def target():
            try:
                state["result"] = run(cfg, preset.replace("/", "-"), progress=False, stop=stop,
                                      on_step=lambda s: state.__setitem__("stats", s),
                                      on_start=lambda d: state.__setitem__("run_dir", Path(d)))
            except BaseException as e:  # noqa: B036 - reported to the visitor below
                state["error"] = e

        started = time.time()
        worker = threading.Thread(target=target, name="dream3d-run", daemon=True)
        worker.start()
        last_preview = None
        try:
            while worker.is_alive():
                worker.join(timeout=1.0)
                stats = state["stats"]
                if stats:
                    progress((stats["step"], stats["steps"]), desc="training")
                    last_preview = str(stats["preview"]) if stats.get("preview") else last_preview
                yield status_text(stats, started, state["run_dir"]), last_preview, None, None, None
        finally:
            stop.set()  # a closed page or a cancelled event stops the run too
            jobs.finish(session)
        if state["error"] is not None:
            raise gr.Error(user_message(state["error"]))
        result, run_dir = state["result"], Path(state["result"]["run_dir"])
        files = [p for p in (run_dir / "model.glb", run_dir / "model.obj", run_dir / "model.mtl", run_dir / "model.png",
                             run_dir / "model.ply", run_dir / "model.splat.ply") if p.exists()]
        files.append(zip_run(run_dir))
        glb = run_dir / "model.glb"
        videos = sorted(run_dir.glob("turntable.*"))
        export = result["export"]
        note = f"no mesh: {export['error']}" if "error" in export else f"{export['faces']} faces"
        done = f"**{result['status'].capitalize()}** after {time.time() - started:.0f} s — {note}\n\nRun folder: `{run_dir}`"
        yield (done, last_preview, str(videos[0]) if videos else None, str(glb) if glb.exists() else None,
               [str(f) for f in files])

    def stop_run(request: gr.Request):
        stopped = jobs.stop(getattr(request, "session_hash", None) or "default")
        return "Stopping: saving a checkpoint and exporting what exists…" if stopped else "Nothing is running."

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
                    steps = gr.Slider(10, UI_LIMITS["train.steps"], value=400, step=10, label="Steps")
                    seed = gr.Number(value=0, precision=0, label="Seed")
                scale = gr.Number(value=0, label="Guidance scale (0 = the preset's)")
                with gr.Accordion("Advanced overrides", open=False):
                    advanced = gr.Textbox(label="key=value, one per line", lines=4, elem_id="advanced",
                                          placeholder="train.resolution=64\nscene.sparsity_weight=0.01")
                with gr.Row():
                    go = gr.Button("Generate", variant="primary", elem_id="generate")
                    halt = gr.Button("Stop", variant="stop", elem_id="stop")
            with gr.Column(scale=2):
                status = gr.Markdown("Type a prompt and press Generate.", elem_id="status")
                with gr.Row():
                    preview = gr.Image(label="Latest validation render (colour over opacity)", type="filepath")
                    video = gr.Video(label="Turntable")
                model = gr.Model3D(label="Mesh (GLB)", elem_id="model3d", height=360)
                glb = gr.File(visible=False)
                files = gr.File(label="Downloads", file_count="multiple")
        # Gradio 6.31's Model3D does not draw a value set by a generator, so the streaming event
        # returns the GLB as a file and a plain follow-up event hands it to the viewer
        go.click(generate, [preset, prompt, negative, steps, seed, scale, advanced], [status, preview, video, glb, files],
                 api_name="generate", concurrency_limit=concurrency).then(lambda f: f, glb, model, api_name=False)
        halt.click(stop_run, None, status, api_name="stop", concurrency_limit=None)
    return demo


def launch(host: str = "127.0.0.1", port: int = 7860, runs_dir: str | Path = "runs", concurrency: int = 1,
           block: bool = True):
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    demo = build_app(runs_dir, concurrency)
    demo.queue(max_size=32)
    demo.launch(server_name=host, server_port=port, allowed_paths=[str(runs_dir.resolve())],
                prevent_thread_lock=not block, quiet=not block)
    return demo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="dream3d app", description="Start the dream3d web UI.")
    ap.add_argument("--host", default=os.environ.get("DREAM3D_HOST", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("DREAM3D_PORT", "7860")))
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--concurrency", type=int, default=1, help="training jobs at a time")
    args = ap.parse_args(argv)
    launch(args.host, args.port, args.runs_dir, args.concurrency)
    return 0
