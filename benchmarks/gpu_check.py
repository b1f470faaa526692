"""One command that checks everything GPU-only on a CUDA machine; `--dry-run` runs the same code on the CPU.

    python benchmarks/gpu_check.py [--wheels DIR] [--steps 300] [--cpu-steps N] [--out DIR]
                                   [--only 1,3] [--override KEY=VALUE ...] [--dry-run]

Why: no GPU was at hand while the CUDA paths were written, so this is the one script to run when one
is: six checks, one row each in a table printed at the end, exit status 1 when any row is FAIL (an
exception in a check is caught, reported as FAIL with its first line, and the next check runs):

  1 kernels  gsplat's and nerfacc's CUDA extensions built/loaded (timed), each with one tiny call
  2 pytest   `python -m pytest -q -m cuda`: every CUDA test passes. On a GPU a skipped test is a failure, except
             the nvdiffrast tests where nvdiffrast (not on PyPI) is not installed: those are reported
  3 train    configs/toy/sds-gaussians.yaml and sds-nerf.yaml for --steps with train.device=cuda, and for
             --cpu-steps with train.device=cpu (a background `dream3d run` started first, beside the
             kernel builds); silhouette IoU and colour error of both from dream3d.evaluate.evaluate_run;
             fails when CUDA's IoU is more than IOU_DROP_MAX below the CPU's, or its colour error more
             than COLOUR_ERROR_RISE_MAX above, or the scene did not train on CUDA
  4 render   each CUDA-trained scene (rebuilt from its run folder) rendered by the CUDA path (gsplat /
             nerfacc) and the torch path (scene moved to the CPU): PSNR between them >= PSNR_MIN_DB
  5 sd       a tiny random Stable Diffusion pipeline (tests/tiny_diffusers.py, saved with
             save_pretrained, no download) as the prior, fp16 on CUDA: SDS_STEPS steps, finite non-zero
             gradients on the render
  6 cost     ms per training step of every run (CUDA and CPU), ms per SDS step, peak GPU memory of
             each (torch.cuda.max_memory_allocated)

--dry-run (any machine, no CUDA call): 1 is skipped (it reports which versions import); 2 runs and
expects every CUDA test to skip; 3 trains both presets on the CPU for a few steps (default 5) at small
sizes (DRY_OVERRIDES), the "CUDA" side in this process with train.device=cpu and the reference in a
`dream3d run` subprocess, one after the other; 4 renders through the torch path twice (PSNR of a
render against itself); 5 runs the tiny pipeline in fp32 on the CPU (2 steps); 6 reports the CPU
numbers. A row that passed its CPU half reads "ok (dry run)".

Budget: under 8 minutes on one modern GPU with the defaults, kernel builds included (TIME_BUDGET_S;
the total is printed under the table). Run folders, logs, the tiny pipeline and gpu_check.json (the
table and the environment) stay in --out (default: a new temporary folder).

What the GPU machine needs (it has no internet): a CUDA build of torch, preinstalled; a CUDA toolkit
(nvcc, whose major version matches torch.version.cuda) and a C++ compiler for the kernel builds; and
wheels of this project's dependencies at the versions of constraints.txt: gsplat, nerfacc, diffusers,
transformers, the test extras (pytest collects every test module) and the rest. gsplat and nerfacc
ship as pure-Python wheels (py3-none-any) that carry their CUDA sources and compile them on first use
with the machine's nvcc and ninja (ninja is in constraints.txt) into TORCH_EXTENSIONS_DIR (default
~/.cache/torch_extensions), so a second run loads them in seconds; diffusers and transformers are pure
Python too; tokenizers, safetensors, numpy and others are binary wheels, so the folder must be made
for the GPU machine's Python version and platform. `--wheels DIR` installs them before the checks:
`pip install --no-index --find-links DIR -c constraints.txt -e .[test]` (the preinstalled torch
satisfies the torch requirement), then runs the script again in a fresh interpreter. Make DIR where
there is internet, with the same Python version (README, "Checking a GPU machine"):

    pip download --no-deps -d wheels -r constraints.txt "setuptools>=68"
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # dream3d, guidance and renderers from this checkout, installed or not
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the GPU machine has no internet: never wait on the hub

# -- thresholds and sizes -----------------------------------------------------------------------------
IOU_DROP_MAX = 0.05  # check 3: CUDA's silhouette IoU may be at most this much below the CPU's
COLOUR_ERROR_RISE_MAX = 0.05  # check 3: CUDA's colour error may be at most this much above the CPU's
PSNR_MIN_DB = {"gaussians": 35.0,  # check 4: gsplat vs the torch rasterizer (same algorithm)
               "nerf": 30.0}  # nerfacc vs torch marching: sample positions differ, as in tests/test_nerf_cuda.py
RENDER_CAMERAS = 4  # check 4: held-out cameras rendered by both paths, at the run's eval.resolution
NERF_RENDER_SAMPLES = 256  # check 4: samples per ray of both NeRF renders (the threshold's calibration in the test)
SDS_STEPS, SDS_STEPS_DRY = 5, 2  # check 5
SDS_RENDER = (2, 3, 64, 64)  # check 5: the render the SDS gradient lands on
STEPS, STEPS_DRY = 300, 5  # check 3: default training steps
PYTEST_TIMEOUT_S = 300
TIME_BUDGET_S = 480  # what the whole check should take on one modern GPU, kernel builds included
PRESETS = {"gaussians": "configs/toy/sds-gaussians.yaml", "nerf": "configs/toy/sds-nerf.yaml"}
# A dry run checks code paths, not quality: small renders, datasets, exports and evaluations (as tests/conftest.py's
# TINY_RUN), and Gaussians that densify within its few steps. --override values still come after these.
DRY_OVERRIDES = ["train.batch_size=2", "train.resolution=16", "prior.num_views=64", "prior.dataset_resolution=32",
                 "prior.resolution=16", "output.val_resolution=16", "output.turntable_frames=2",
                 "output.turntable_resolution=16", "output.export.resolution=32", "output.export.texture_size=64",
                 "eval.resolution=16", "eval.num_cameras=2", "eval.volume_resolution=16"]
DRY_SCENE_OVERRIDES = {"gaussians": ["scene.num_points=300", "scene.densify_from=2", "scene.densify_every=2"],
                       "nerf": ["scene.samples_per_ray=16", "scene.eval_samples_per_ray=24", "scene.max_resolution=32"]}
SD_PRESET = "configs/sd/sds-nerf.yaml"  # its guidance section; the prior is the tiny pipeline
WHEELS_DONE = "DREAM3D_GPU_CHECK_WHEELS_INSTALLED"

OK, FAIL, SKIPPED = "ok", "FAIL", "skipped"


@dataclass
class Row:
    """One line of the final table."""

    step: str
    status: str  # ok | FAIL | skipped, with " (dry run)" appended in a dry run
    numbers: str
    seconds: float


@dataclass
class RunResult:
    """A finished training run and what check 3 and 6 report of it."""

    run_dir: Path
    device: str  # where the scene's parameters were at the end of training
    steps: int
    ms_per_step: float  # render + guidance + backward/step, from metrics.json
    iou: float
    colour_error: float
    peak_gib: float | None = None  # CUDA runs
    export_error: str | None = None


@dataclass
class SDResult:
    steps: int
    ms_per_step: float
    grad_abs_mean: float
    dtype: str
    device: str
    peak_gib: float | None = None


class CheckError(RuntimeError):
    """A check ran and found something wrong (as opposed to crashing)."""


@dataclass
class Context:
    """What the checks share: options, the output folder, and work done once for several checks."""

    args: argparse.Namespace
    out: Path
    dry: bool
    steps: int
    cpu_steps: int
    memo: dict[str, tuple[bool, Any]] = field(default_factory=dict)
    cpu_futures: dict[str, Future] = field(default_factory=dict)
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=1))

    @property
    def device(self) -> str:
        return "cpu" if self.dry else "cuda"

    def once(self, key: str, fn: Callable[[], Any]) -> Any:
        """fn() the first time; its value (or its failure, raised again) afterwards."""
        if key not in self.memo:
            try:
                self.memo[key] = (True, fn())
            except Exception as e:
                self.memo[key] = (False, e)
                raise
        ok, value = self.memo[key]
        if not ok:
            raise CheckError(f"{key} failed: {one_line(value)}")
        return value


# -- helpers ------------------------------------------------------------------------------------------
def one_line(e: BaseException | str, limit: int = 220) -> str:
    """The first line of a message or exception, shortened; this script's own CheckError without its class name."""
    text = e if isinstance(e, str) else str(e) if isinstance(e, CheckError) else f"{type(e).__name__}: {e}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), text.strip())
    return first if len(first) <= limit else first[:limit - 3] + "..."


def require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        why = "this torch is built without CUDA" if torch.version.cuda is None else "torch sees no GPU (driver?)"
        raise CheckError(f"no CUDA device: torch.cuda.is_available() is False ({why}); on a CPU use --dry-run")


def sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def run_overrides(ctx: Context, steps: int, device: str, out_dir: Path, name: str) -> list[str]:
    """The overrides of one training run; --override values come last and win."""
    dry = DRY_OVERRIDES + DRY_SCENE_OVERRIDES[name] if ctx.dry else []
    return [f"train.steps={steps}", f"train.device={device}", "train.convergence.enabled=false",
            f"output.out_dir={out_dir}", f"output.name={name}", "output.progress=false", *dry, *ctx.args.override]


def summarise(run_dir: Path, device: str, peak_gib: float | None, export_error: str | None) -> RunResult:
    """IoU and colour error (dream3d eval's evaluate_run, held-out cameras) and ms per step (metrics.json)."""
    from dream3d.evaluate import evaluate_run
    from dream3d.runs import RunDir

    metrics = json.loads(RunDir(run_dir).metrics.read_text())
    quality = evaluate_run(run_dir)
    return RunResult(run_dir, device, metrics["step"], round(sum(metrics["ms_per_step"].values()), 2),
                     quality["silhouette_iou"], quality["colour_error"], peak_gib, export_error)


def gpu_run(ctx: Context, name: str) -> RunResult:
    """The preset trained in this process on ctx.device (CUDA; the CPU in a dry run), once."""
    return ctx.once(f"{name} run on {ctx.device} (this process)", lambda: _train_here(ctx, name))


def _train_here(ctx: Context, name: str) -> RunResult:
    import torch

    from dream3d.config import load_config
    from dream3d.lifecycle import start_run
    from dream3d.trainer import Evaluation

    if not ctx.dry:
        require_cuda()
    cfg = load_config(ROOT / PRESETS[name], run_overrides(ctx, ctx.steps, ctx.device,
                                                          ctx.out / ("cuda" if not ctx.dry else "cuda-side-on-cpu"), name))
    seen: dict[str, str] = {}
    evaluation = Evaluation(every=cfg.train.steps, measure=lambda trainer: seen.update(device=str(trainer.scene.device)))
    if not ctx.dry:
        torch.cuda.reset_peak_memory_stats()
    result = start_run(cfg, f"gpu-check-{name}", progress=False, evaluation=evaluation)
    peak = None if ctx.dry else torch.cuda.max_memory_allocated() / 2**30
    device = seen.get("device", "?")
    if not device.startswith(ctx.device):
        raise CheckError(f"train.device={ctx.device} but the {name} scene trained on {device}: the trainer does not "
                         "move the scene to train.device")
    return summarise(Path(result["run_dir"]), device, peak, result["export"].get("error"))


def start_cpu_reference(ctx: Context, name: str) -> Future:
    """`dream3d run <preset> train.device=cpu` in a subprocess, on the background thread (one at a time)."""
    if name not in ctx.cpu_futures:
        ctx.cpu_futures[name] = ctx.pool.submit(_train_subprocess, ctx, name)
    return ctx.cpu_futures[name]


def _train_subprocess(ctx: Context, name: str) -> tuple[Path, float]:
    folder = ctx.out / "cpu"
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{name}.log"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the reference cannot touch the GPU
    if not ctx.dry:  # beside the kernel builds (ninja runs ~10 compilers): leave them the cores
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 4) // 4)))
    cmd = [sys.executable, "-m", "dream3d.cli", "run", str(ROOT / PRESETS[name]),
           *run_overrides(ctx, ctx.cpu_steps, "cpu", folder, name)]
    t0 = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
    text = log.read_text()
    found = re.search(r"^run folder: (.+)$", text, re.MULTILINE)
    if rc != 0 or found is None:
        raise CheckError(f"`dream3d run {PRESETS[name]} train.device=cpu` exited {rc}: "
                         f"{one_line(text.strip().splitlines()[-1] if text.strip() else 'no output')} (log: {log})")
    return Path(found.group(1)), time.perf_counter() - t0


def cpu_run(ctx: Context, name: str) -> RunResult:
    """The CPU reference of a preset (started in the background at the beginning on a GPU), evaluated here."""
    def finish() -> RunResult:
        run_dir, _ = start_cpu_reference(ctx, name).result()
        metrics = json.loads((run_dir / "metrics.json").read_text())
        return summarise(run_dir, "cpu", None, (metrics.get("export") or {}).get("error"))

    return ctx.once(f"{name} CPU reference (subprocess)", finish)


# -- the checks ---------------------------------------------------------------------------------------
def check_kernels(ctx: Context) -> tuple[str, str]:
    """1: gsplat's and nerfacc's CUDA extensions: build (first use) or load, each timed with one tiny call."""
    import gsplat
    import nerfacc

    if ctx.dry:  # importing their CUDA backends would start a build (nvcc may be a stub here)
        return SKIPPED, f"gsplat {gsplat.__version__} and nerfacc {nerfacc.__version__} import; builds need CUDA"
    require_cuda()
    import torch

    parts, failed = [], []
    for label, fn in ((f"gsplat {gsplat.__version__}", _gsplat_kernel), (f"nerfacc {nerfacc.__version__}", _nerfacc_kernel)):
        t0 = time.perf_counter()
        try:
            fn()
            parts.append(f"{label} {time.perf_counter() - t0:.1f} s")
        except Exception as e:
            traceback.print_exc()
            failed.append(f"{label} failed after {time.perf_counter() - t0:.0f} s: {one_line(e)}")
    major, minor = torch.cuda.get_device_capability()
    parts.append(f"{torch.cuda.get_device_name()} sm_{major}{minor}, torch {torch.__version__} CUDA {torch.version.cuda}")
    return (FAIL if failed else OK), "; ".join(failed + parts)


def _gsplat_kernel() -> None:
    import torch
    from gsplat.cuda._backend import _C  # the JIT build happens on this import

    if _C is None:
        raise CheckError("gsplat's CUDA extension is not available (no CUDA toolkit found: nvcc / CUDA_HOME)")
    from gsplat import rasterization

    g = torch.Generator().manual_seed(0)
    n = 64
    means = (torch.rand(n, 3, generator=g) - 0.5).cuda()
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1).cuda()
    scales, opacities = torch.full((n, 3), 0.05, device="cuda"), torch.full((n,), 0.8, device="cuda")
    colors = torch.rand(n, 3, generator=g).cuda()
    viewmats = torch.eye(4, device="cuda")[None].clone()
    viewmats[0, 2, 3] = 3.0  # the points sit 2.5-3.5 in front of the camera
    Ks = torch.tensor([[[40.0, 0.0, 16.0], [0.0, 40.0, 16.0], [0.0, 0.0, 1.0]]], device="cuda")
    _, alpha, _ = rasterization(means, quats, scales, opacities, colors, viewmats, Ks, 32, 32)
    torch.cuda.synchronize()
    if not float(alpha.max()) > 0:
        raise CheckError("gsplat's rasterization drew nothing for 64 Gaussians in front of the camera")


def _nerfacc_kernel() -> None:
    import torch
    from nerfacc.cuda._backend import _C  # the JIT build happens on this import

    if _C is None:
        raise CheckError("nerfacc's CUDA extension is not available (no CUDA toolkit found: nvcc)")
    from nerfacc import OccGridEstimator

    estimator = OccGridEstimator([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0], resolution=8, levels=1).cuda()
    estimator.binaries.fill_(True)
    origins = torch.tensor([[0.0, 0.0, -3.0]], device="cuda").repeat(4, 1)
    dirs = torch.tensor([[0.0, 0.0, 1.0]], device="cuda").repeat(4, 1)
    ray_indices, _, _ = estimator.sampling(origins, dirs, render_step_size=0.1)
    torch.cuda.synchronize()
    if ray_indices.numel() == 0:
        raise CheckError("nerfacc's OccGridEstimator.sampling returned no samples for rays through a full grid")


def pytest_counts(output: str) -> dict[str, int]:
    """Counts of pytest's closing line ("2 passed, 1 skipped, 451 deselected in 5.3s"); {} when none."""
    counts: dict[str, int] = {}
    for line in reversed(output.strip().splitlines()):
        found = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", line)
        if found:
            for n, what in found:
                counts["errors" if what.startswith("error") else what] = int(n)
            break
    return counts


OPTIONAL_SKIP = re.compile(r"^SKIPPED \[(\d+)\].*nvdiffrast is not installed", re.M)  # not on PyPI: may be absent


def optional_skips(output: str) -> int:
    """CUDA tests skipped (pytest -rs lines) because nvdiffrast, which is optional (not on PyPI), is not installed."""
    return sum(int(n) for n in OPTIONAL_SKIP.findall(output))


def judge_pytest(rc: int, counts: dict[str, int], dry: bool, optional: int = 0) -> tuple[str, str]:
    """On a GPU every CUDA test must pass: a skip is a failure, except the `optional` ones, whose package (nvdiffrast)
    is not installed, which are reported. In a dry run every one must skip."""
    shown = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("passed", "skipped", "failed", "errors"))
    ran = counts.get("passed", 0) + counts.get("skipped", 0) + counts.get("failed", 0) + counts.get("errors", 0)
    if ran == 0:
        return FAIL, f"no CUDA test ran (pytest exit {rc}): are the tests marked @pytest.mark.cuda?"
    if rc != 0 or counts.get("failed") or counts.get("errors"):
        return FAIL, f"{shown} (pytest exit {rc})"
    if dry:
        return (OK if counts.get("passed", 0) == 0 else FAIL), f"{shown} (all skip without CUDA, as expected)"
    if counts.get("skipped", 0) > optional:
        return FAIL, f"{shown}: a CUDA test skipped on the GPU"
    return OK, shown + (f" ({optional} skipped: nvdiffrast is not installed, the mesh stages used the torch path)"
                        if optional else "")


def check_pytest(ctx: Context) -> tuple[str, str]:
    """2: `python -m pytest -q -m cuda` in a subprocess; the log is kept in --out."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-rs", "-p", "no:cacheprovider"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=PYTEST_TIMEOUT_S,
                          check=False)
    output = proc.stdout + proc.stderr
    (ctx.out / "pytest_cuda.log").write_text(output)
    status, numbers = judge_pytest(proc.returncode, pytest_counts(proc.stdout), ctx.dry, optional_skips(proc.stdout))
    if status == FAIL:
        reason = next((line for line in output.splitlines() if line.startswith(("FAILED", "ERROR", "SKIPPED"))), "")
        numbers += f"; {one_line(reason)}" if reason else ""
        numbers += f" (log: {ctx.out / 'pytest_cuda.log'})"
    return status, numbers


def compare_quality(name: str, gpu: RunResult, cpu: RunResult) -> list[str]:
    """Check 3's verdict on one preset: what is wrong with the CUDA run next to the CPU reference ([] = fine)."""
    problems = []
    if gpu.iou < cpu.iou - IOU_DROP_MAX:
        problems.append(f"{name}: CUDA IoU {gpu.iou:.3f} is more than {IOU_DROP_MAX} below the CPU's {cpu.iou:.3f}")
    if gpu.colour_error > cpu.colour_error + COLOUR_ERROR_RISE_MAX:
        problems.append(f"{name}: CUDA colour error {gpu.colour_error:.3f} is more than {COLOUR_ERROR_RISE_MAX} above "
                        f"the CPU's {cpu.colour_error:.3f}")
    for side, run in (("CUDA", gpu), ("CPU", cpu)):
        if run.export_error:
            problems.append(f"{name}: {side} export failed: {one_line(run.export_error)}")
    return problems


def check_training(ctx: Context) -> tuple[str, str]:
    """3: both presets on CUDA (here) and on the CPU (subprocess): quality side by side."""
    parts, problems = [], []
    for name in PRESETS:  # one preset's crash does not hide the other's numbers
        try:
            gpu, cpu = gpu_run(ctx, name), cpu_run(ctx, name)
        except Exception as e:
            traceback.print_exc()
            problems.append(f"{name}: {one_line(e)}")
            continue
        steps = f"{gpu.steps} steps" + (f", CPU {cpu.steps}" if cpu.steps != gpu.steps else "")
        parts.append(f"{name} ({steps}): IoU {gpu.iou:.3f} vs CPU {cpu.iou:.3f}, colour error "
                     f"{gpu.colour_error:.3f} vs {cpu.colour_error:.3f}")
        problems += compare_quality(name, gpu, cpu)
    prefix = "both sides on the CPU: " if ctx.dry else ""
    return (FAIL if problems else OK), prefix + "; ".join(problems + parts)


def check_render(ctx: Context) -> tuple[str, str]:
    """4: a CUDA-trained scene through the CUDA path and the torch path (on the CPU): PSNR."""
    import torch

    from dream3d.kernel.cameras import CameraSampler
    from dream3d.lifecycle import load_run
    from dream3d.toyworld.metrics import psnr
    from renderers.gaussians.rasterize import use_cuda as gsplat_used
    from renderers.nerf.sampling_cuda import use_cuda as nerfacc_used

    fast_path = {"gaussians": lambda s: gsplat_used(s.gaussians),  # nerfacc marches only with the occupancy sampler
                 "nerf": lambda s: nerfacc_used(s.field) and s.occupancy is not None}

    def both_paths(name: str) -> float:
        trainer, _ = load_run(gpu_run(ctx, name).run_dir)
        cfg, scene = trainer.cfg, trainer.scene
        if name == "nerf":  # dense sampling, as tests/test_nerf_cuda.py: the two paths place samples differently
            scene.cfg.eval_samples_per_ray = NERF_RENDER_SAMPLES
        cams = CameraSampler(tuple(cfg.camera.elevation_range), (-180.0, 180.0), cfg.camera.distance,
                             cfg.camera.fovy).held_out(RENDER_CAMERAS)
        res = cfg.eval.resolution
        with torch.no_grad():
            if ctx.dry:  # the torch path stands in for the CUDA one
                fast = scene.to("cpu").render(cams, res, res, train=False).rgb
            else:
                scene.to("cuda")  # as the trainer moves scenes
                if not fast_path[name](scene):
                    raise CheckError(f"the scene is on {scene.device} but its renderer does not choose the CUDA path")
                fast = scene.render(cams, res, res, train=False).rgb
                if not fast.is_cuda:
                    raise CheckError(f"the CUDA render came back on {fast.device}")
                fast = fast.float().cpu()
            torch_path = scene.to("cpu").render(cams, res, res, train=False).rgb
        return psnr(fast, torch_path)

    parts, failed = [], False
    for name in PRESETS:
        try:
            db = both_paths(name)
        except Exception as e:
            traceback.print_exc()
            parts.append(f"{name}: {one_line(e)}")
            failed = True
            continue
        parts.append(f"{name} {db:.1f} dB" + ("" if db >= PSNR_MIN_DB[name] else f" < {PSNR_MIN_DB[name]:g}"))
        failed |= db < PSNR_MIN_DB[name]
    what = "torch path twice" if ctx.dry else "CUDA vs torch path"
    return (FAIL if failed else OK), f"{what}, {RENDER_CAMERAS} views at eval.resolution: " + "; ".join(parts)


def sd_run(ctx: Context) -> SDResult:
    return ctx.once("tiny Stable Diffusion SDS", lambda: _sds_steps(ctx))


def _sds_steps(ctx: Context) -> SDResult:
    import torch

    from dream3d.config import load_config
    from dream3d.kernel.cameras import CameraSampler
    from guidance import RunContext, build_guidance
    from guidance.priors import build_prior

    if not ctx.dry:
        require_cuda()
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_diffusers import build_tiny_pipeline

    folder = ctx.out / "tiny_sd"
    if not (folder / "model_index.json").exists():
        build_tiny_pipeline(folder)
    dtype = "fp32" if ctx.dry else "fp16"
    cfg = load_config(ROOT / SD_PRESET, ["prompt=a red cube", f"prior.model={folder}", "prior.resolution=32",
                                         f"prior.dtype={dtype}", f"prior.device={ctx.device}", f"train.device={ctx.device}",
                                         "prior.local_files_only=true", "prior.cache_embeddings=false"])
    if not ctx.dry:
        torch.cuda.reset_peak_memory_stats()
    prior = build_prior(cfg.prior)
    unet = next(prior.unet.parameters())
    want = torch.float32 if ctx.dry else torch.float16
    if unet.dtype != want or unet.device.type != ctx.device:
        raise CheckError(f"the UNet is {unet.dtype} on {unet.device}, not {want} on {ctx.device}")
    guidance = build_guidance(cfg.guidance, prior, RunContext(cfg.train.steps))
    cond = guidance.embed(cfg.prompt, cfg.negative_prompt)
    gen = torch.Generator().manual_seed(0)
    render = torch.rand(SDS_RENDER, generator=gen).to(ctx.device).requires_grad_()
    sampler, times, grads = CameraSampler(), [], []
    for step in range(SDS_STEPS_DRY if ctx.dry else SDS_STEPS):
        render.grad = None
        sync()
        t0 = time.perf_counter()
        out = guidance(render, sampler.sample(SDS_RENDER[0], gen), cond, step, gen)
        (out.loss + sum(out.aux_losses.values())).backward()
        sync()
        times.append(time.perf_counter() - t0)
        g = render.grad
        if g is None or not bool(torch.isfinite(g).all()) or not float(g.abs().sum()) > 0:
            raise CheckError(f"SDS step {step}: the render's gradient is "
                             f"{'missing' if g is None else 'not finite' if not torch.isfinite(g).all() else 'all zero'}")
        grads.append(float(g.abs().mean()))
    timed = times[1:] or times  # the first step pays for cuDNN/kernel selection
    peak = None if ctx.dry else torch.cuda.max_memory_allocated() / 2**30
    return SDResult(len(times), 1000 * sum(timed) / len(timed), sum(grads) / len(grads), dtype, str(unet.device), peak)


def check_sd(ctx: Context) -> tuple[str, str]:
    """5: SDS steps with the tiny pipeline fully on CUDA in fp16 (fp32 on the CPU in a dry run)."""
    r = sd_run(ctx)
    return OK, f"{r.steps} SDS steps, UNet {r.dtype} on {r.device}: gradients finite, mean abs {r.grad_abs_mean:.2e}"


def check_cost(ctx: Context) -> tuple[str, str]:
    """6: ms per step of every run and of the SDS step; peak GPU memory of each."""
    def gib(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f} GiB"

    parts, missing = [], []
    for name in PRESETS:
        try:
            g = gpu_run(ctx, name)
        except Exception as e:
            missing.append(f"{name}: {one_line(e)}")
            continue
        try:
            c = f"{cpu_run(ctx, name).ms_per_step:.1f}"
        except Exception:
            c = "n/a (failed)"
        side = "CUDA" if not ctx.dry else "here"
        parts.append(f"{name} {g.ms_per_step:.1f} ms/step {side} vs {c} CPU, peak {gib(g.peak_gib)}")
    try:
        sd = sd_run(ctx)
        parts.append(f"SDS {sd.dtype} {sd.ms_per_step:.1f} ms/step, peak {gib(sd.peak_gib)}")
    except Exception as e:
        missing.append(f"SDS: {one_line(e)}")
    return (FAIL if missing else OK), "; ".join([f"missing {m}" for m in missing] + parts)


CHECKS: list[tuple[int, str, Callable[[Context], tuple[str, str]]]] = [
    (1, "kernels: gsplat + nerfacc build", check_kernels),
    (2, "pytest -m cuda", check_pytest),
    (3, "train toy presets: CUDA vs CPU quality", check_training),
    (4, "render: CUDA path vs torch path", check_render),
    (5, "Stable Diffusion SDS, fp16 on CUDA", check_sd),
    (6, "ms/step and peak GPU memory", check_cost),
]


# -- running, the table, the exit status --------------------------------------------------------------
def run_check(ctx: Context, title: str, fn: Callable[[Context], tuple[str, str]]) -> Row:
    """One check as a table row; any exception becomes FAIL with its first line (traceback on stderr)."""
    t0 = time.perf_counter()
    try:
        status, numbers = fn(ctx)
    except Exception as e:
        traceback.print_exc()
        status, numbers = FAIL, one_line(e)
    if ctx.dry and status != FAIL:
        status += " (dry run)"
    return Row(title, status, numbers, round(time.perf_counter() - t0, 1))


def format_table(rows: list[Row]) -> str:
    """A Markdown table: step | status | numbers | seconds."""
    lines = ["| step | status | numbers | seconds |", "|---|---|---|---:|"]
    lines += [f"| {r.step} | {r.status} | {r.numbers.replace('|', '/')} | {r.seconds:.1f} |" for r in rows]
    return "\n".join(lines)


def exit_code(rows: list[Row]) -> int:
    """1 when any check failed, else 0."""
    return int(any(r.status.startswith(FAIL) for r in rows))


def environment() -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                           "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    for package in ("gsplat", "nerfacc", "nvdiffrast", "diffusers", "transformers"):
        try:
            env[package] = __import__(package).__version__
        except Exception as e:  # reported, and the checks that need it fail on their own
            env[package] = f"not importable ({one_line(e, 80)})"
    return env


def install_wheels(folder: Path) -> None:
    """pip-install this project and its dependencies from a wheel folder, no index (the GPU machine is offline)."""
    if importlib.util.find_spec("torch") is None:
        raise SystemExit("torch is not installed: install the CUDA build of torch first (the wheel folder has none)")
    if not folder.is_dir():
        raise SystemExit(f"--wheels {folder}: no such folder")
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(folder),
           "-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[test]"]
    print("installing:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring and README ('Checking a GPU machine') for details.")
    p.add_argument("--dry-run", action="store_true", help="everything on the CPU, CUDA calls skipped")
    p.add_argument("--steps", type=int, help=f"training steps of the CUDA runs (default {STEPS}; {STEPS_DRY} in a dry run)")
    p.add_argument("--cpu-steps", type=int, help="training steps of the CPU reference runs (default: --steps)")
    p.add_argument("--out", type=Path, help="folder for run folders, logs and gpu_check.json (default: a new temp folder)")
    p.add_argument("--only", default="1,2,3,4,5,6", help="comma-separated checks to run (default: all six)")
    p.add_argument("--override", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every training run, e.g. -o output.turntable_frames=0 (repeatable)")
    p.add_argument("--wheels", type=Path, metavar="DIR",
                   help="first pip install --no-index --find-links DIR -c constraints.txt -e .[test], then run")
    args = p.parse_args(argv)
    try:
        args.only = {int(x) for x in args.only.split(",") if x.strip()}
    except ValueError:
        p.error(f"--only {args.only!r}: give check numbers 1-6, e.g. --only 1,3")
    if not args.only <= {n for n, _, _ in CHECKS}:
        p.error(f"--only: checks are numbered 1-{len(CHECKS)}")
    for name in ("steps", "cpu_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.wheels is not None and not os.environ.get(WHEELS_DONE):
        install_wheels(args.wheels)
        os.environ[WHEELS_DONE] = "1"  # the fresh interpreter sees the new packages and skips this
        os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()), *(argv or sys.argv[1:])])
    import torch

    started = time.perf_counter()
    dry = args.dry_run
    steps = args.steps or (STEPS_DRY if dry else STEPS)
    out = (args.out or Path(tempfile.mkdtemp(prefix="dream3d-gpu-check-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(args, out, dry, steps, args.cpu_steps or steps)
    env = environment()
    mode = "dry run: everything on the CPU, CUDA calls skipped" if dry else "on CUDA"
    print(f"gpu_check ({mode}); torch {env['torch']} (CUDA {env['torch_cuda']}), "
          f"{env.get('gpu', 'no GPU')}; output in {out}", flush=True)
    if not dry and not torch.cuda.is_available():
        print("warning: torch.cuda.is_available() is False; the CUDA checks will fail (use --dry-run on a CPU)", flush=True)
    elif not dry and 3 in args.only:  # the CPU reference trains beside the kernel builds and CUDA tests
        for name in PRESETS:
            start_cpu_reference(ctx, name)
    rows = []
    try:
        for number, title, fn in CHECKS:
            if number in args.only:
                print(f"[{number}/6] {title} ...", flush=True)
                rows.append(run_check(ctx, f"{number} {title}", fn))
                print(f"[{number}/6] {rows[-1].status}: {rows[-1].numbers}", flush=True)
            else:
                rows.append(Row(f"{number} {title}", f"{SKIPPED} (not in --only)", "", 0.0))
    finally:
        for future in ctx.cpu_futures.values():
            future.cancel()
        ctx.pool.shutdown(wait=True)
    total = time.perf_counter() - started
    code = exit_code(rows)
    (out / "gpu_check.json").write_text(json.dumps(
        {"dry_run": dry, "steps": ctx.steps, "cpu_steps": ctx.cpu_steps, "overrides": args.override, "environment": env,
         "rows": [asdict(r) for r in rows], "total_s": round(total, 1), "exit_code": code}, indent=2))
    print()
    print(format_table(rows))
    budget = "" if dry else f" (budget {TIME_BUDGET_S} s{'; OVER BUDGET' if total > TIME_BUDGET_S else ''})"
    print(f"\ntotal {total:.0f} s{budget}; {'FAILED' if code else 'all passed'}; details in {out}/gpu_check.json")
    return code


if __name__ == "__main__":
    sys.exit(main())
