"""`dream3d doctor`: what this machine can run, before a run starts.

One report (a dict, printed as text or JSON) with a section per question: the hardware torch sees
and what `train.device=auto` resolves to; whether gsplat's and nerfacc's CUDA kernels are compiled
or can be (checked on disk, never by importing their backends, which would start a multi-minute
JIT compile); which priors' weights are on disk (Hugging Face cache or a local folder, never the
network); and, per preset under configs/, whether its estimated peak memory fits this machine.

Memory figures are estimates: host memory from dream3d.cost (fitted on 2-core CPU machines), GPU
memory from rough Stable Diffusion footprints (not measured here) plus the scene's share.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import torch

GIB = 2**30
CUDA_CONTEXT_BYTES = 0.5 * GIB  # CUDA context + allocator slack on each GPU used, added to every GPU estimate
# Stable Diffusion footprints, rough published-order figures, not measured here: UNet + VAE + text encoder(s)
# with activations at the model's native resolution. GPU: fp16 (dtype=auto on CUDA), (low, high) of the range;
# the fit check uses the high end. CPU: fp32 weights + activations in host memory.
SD_GPU_BYTES = {"sd": (2.5e9, 4e9), "sdxl": (8e9, 10e9)}
SD_CPU_BYTES = {"sd": 6e9, "sdxl": 16e9}
SD_FAMILY_NAMES = {"sd": "SD 1.x/2.x", "sdxl": "SDXL"}
WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")  # folders that must hold a weights file
DEFAULT_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")  # a folder without model_index.json
KERNELS = {  # package -> (JIT extension name, what uses its kernels, what happens without the package)
    "gsplat": ("gsplat_cuda", "Gaussian scenes on CUDA",
               "Gaussian scenes cannot run (its torch reference is used on the CPU too): pip install gsplat"),
    "nerfacc": ("nerfacc_cuda", "NeRF scenes on CUDA", "NeRF scenes on the CPU do not need it: pip install nerfacc"),
}
BUILD_STEPS = (("both compile on first CUDA use (a few minutes each), which needs a GPU and a CUDA toolkit (nvcc) whose "
                "major version matches torch.version.cuda (set CUDA_HOME if it is not /usr/local/cuda); to build them now:"),
               "python benchmarks/gpu_check.py   # builds both and reports the time",
               "python -c 'from gsplat.cuda._backend import _C'; python -c 'from nerfacc.cuda._backend import _C'")


# ---------------------------------------------------------------- hardware


def _host_memory() -> dict[str, Any]:
    """Total and available RAM (psutil, else /proc/meminfo), lowered to a cgroup memory limit if one is set."""
    total = available = None
    source = "psutil"
    try:
        import psutil

        vm = psutil.virtual_memory()
        total, available = float(vm.total), float(vm.available)
    except ImportError:
        source = "/proc/meminfo"
        try:
            info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
            total = float(info["MemTotal"].split()[0]) * 1024
            available = float(info.get("MemAvailable", info["MemTotal"]).split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            source = "unknown"
    limit = None
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):  # cgroup v2, v1
        try:
            text = Path(f).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):
            limit = float(text)
        break
    usable = min((x for x in (total, limit) if x is not None), default=None)
    return {"ram_total_bytes": total, "ram_available_bytes": available, "cgroup_limit_bytes": limit,
            "ram_usable_bytes": usable, "ram_source": source}


def hardware() -> dict[str, Any]:
    """torch, its CUDA / MPS view of the machine, CPUs and RAM."""
    from dream3d.kernel.device import mps_available

    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    gpus = []
    for i in range(count):
        p = torch.cuda.get_device_properties(i)
        major, minor = getattr(p, "major", None), getattr(p, "minor", None)
        gpus.append({"device": f"cuda:{i}", "name": p.name, "total_bytes": float(p.total_memory),
                     "capability": f"{major}.{minor}" if major is not None else None})
    why = None
    if not available:
        why = ("this PyTorch is built without CUDA" if torch.version.cuda is None
               else "PyTorch sees no GPU (driver, CUDA_VISIBLE_DEVICES)")
    cpus_usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"torch_version": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": available,
            "why_no_cuda": why, "device_count": count, "gpus": gpus, "mps_available": mps_available(),
            "cpus": os.cpu_count(), "cpus_usable": cpus_usable, "torch_threads": torch.get_num_threads(),
            **_host_memory()}


# ---------------------------------------------------------------- CUDA kernels


def cuda_toolkit() -> dict[str, Any]:
    """The nvcc torch's extension builder would use and the release it reports. Found is not enough to build:
    it must run, report a version, and match torch's CUDA major version (and there must be a GPU)."""
    from torch.utils.cpp_extension import CUDA_HOME

    nvcc = None
    if CUDA_HOME and os.path.isfile(os.path.join(CUDA_HOME, "bin", "nvcc")):
        nvcc = os.path.join(CUDA_HOME, "bin", "nvcc")
    nvcc = nvcc or shutil.which("nvcc")
    version = error = None
    if nvcc:
        try:
            out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=20, check=False)
            m = re.search(r"release (\d+\.\d+)", out.stdout)
            version = m.group(1) if m else None
            if not m:
                error = f"`{nvcc} --version` reported no release (exit {out.returncode}): a stub or a broken toolkit"
        except (OSError, subprocess.TimeoutExpired) as e:
            error = f"`{nvcc} --version` failed: {e}"
    torch_cuda = torch.version.cuda
    matches = bool(version and torch_cuda and version.split(".")[0] == torch_cuda.split(".")[0])
    return {"cuda_home": CUDA_HOME, "nvcc": nvcc, "version": version, "error": error, "torch_cuda": torch_cuda,
            "matches_torch": matches}


def _extensions_root() -> Path:
    """torch's JIT build root for this Python and torch build (torch.utils.cpp_extension._get_build_directory's
    rule, computed here because that function creates the folder)."""
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root)
    accelerator = (f"rocm{torch.version.hip.replace('.', '')}" if torch.version.hip
                   else f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu")
    py = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    return Path(get_default_build_root()) / f"{py}_{accelerator}"


def kernel_status(package: str, toolkit: dict[str, Any], cuda: bool) -> dict[str, Any]:
    """Whether `package`'s CUDA extension is compiled (a prebuilt module in the package, or torch's JIT cache)
    or could be built here, without importing its backend."""
    ext_name, used_by, if_missing = KERNELS[package]
    try:
        version = importlib.metadata.version(package)
        spec = importlib.util.find_spec(package)  # a top-level spec: nothing of the package runs
    except (importlib.metadata.PackageNotFoundError, ImportError, ValueError):
        version, spec = None, None
    entry: dict[str, Any] = {"package": package, "installed": spec is not None, "version": version, "prebuilt": None,
                             "jit_build_dir": None, "compiled": False, "buildable": False, "usable": False}
    if spec is None:
        return {**entry, "status": f"not installed: {if_missing}"}
    locations = list(spec.submodule_search_locations or [])
    folder = Path(locations[0]) if locations else Path(spec.origin or ".").parent
    prebuilt = [p for pattern in ("csrc*.so", "csrc*.pyd", "_C*.so", "_C*.pyd") for p in folder.glob(pattern)]
    build_dir = _extensions_root() / ext_name
    jit = build_dir / f"{ext_name}.so"
    entry.update(prebuilt=str(prebuilt[0]) if prebuilt else None, jit_build_dir=str(build_dir))
    entry["compiled"] = bool(prebuilt) or jit.is_file()
    where = f"prebuilt {prebuilt[0].name}" if prebuilt else f"compiled in {build_dir}" if entry["compiled"] else None
    if not cuda:
        done = f" ({where}, unused without a GPU)" if where else ""
        return {**entry, "status": f"not usable here (no CUDA device): the torch paths are used{done}"}
    if entry["compiled"]:
        return {**entry, "usable": True, "status": f"ready: {where}"}
    if toolkit["matches_torch"] and package == "nerfacc" and not shutil.which("nvcc"):
        # nerfacc 0.5 decides by running `nvcc` from the PATH, not CUDA_HOME, and turns itself off otherwise
        return {**entry, "status": f"cannot build: nerfacc runs `nvcc` from the PATH only and {toolkit['nvcc']} is not on "
                                   f"it; add {os.path.dirname(toolkit['nvcc'])} to PATH ({used_by} need it)"}
    if toolkit["matches_torch"]:
        return {**entry, "buildable": True, "usable": True,
                "status": f"not built yet: compiles on first CUDA use (a few minutes) with nvcc {toolkit['version']}"}
    if not toolkit["nvcc"]:
        why = "no CUDA toolkit (nvcc) found"
    elif toolkit["error"]:
        why = toolkit["error"]
    elif not toolkit["torch_cuda"]:
        why = "this PyTorch is built without CUDA"
    else:
        why = f"nvcc is CUDA {toolkit['version']}, torch is built with CUDA {toolkit['torch_cuda']}"
    return {**entry, "status": f"cannot build: {why}; {used_by} need it (train.device=cpu uses the torch path)"}


def kernels(cuda: bool) -> dict[str, Any]:
    toolkit = cuda_toolkit()
    return {"cuda_toolkit": toolkit, **{p: kernel_status(p, toolkit, cuda) for p in KERNELS}, "how_to_build": list(BUILD_STEPS)}


# ---------------------------------------------------------------- prior weights


def hub_cache() -> str:
    """The Hugging Face hub cache diffusers reads (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def model_family(model: str, folder: Path | None = None) -> str:
    """"sdxl" (two text encoders; recognised by the folder or the id) or "sd" (1.x / 2.x)."""
    if folder is not None and (folder / "text_encoder_2").is_dir():
        return "sdxl"
    return "sdxl" if "xl" in model.lower() else "sd"


def missing_components(folder: Path) -> list[str]:
    """Components of a diffusers-layout folder that are absent: model_index.json's list (or unet, vae,
    text_encoder, tokenizer, scheduler without one); weight folders need a .safetensors or .bin file."""
    components: list[str] = list(DEFAULT_COMPONENTS)
    index = folder / "model_index.json"
    if index.is_file():
        try:
            data = json.loads(index.read_text())
            components = [k for k, v in data.items() if not k.startswith("_") and isinstance(v, list) and v and v[0]]
        except (OSError, ValueError):
            return ["model_index.json (unreadable)"]
    missing = []
    for c in components:
        sub = folder / c
        has_weights = any(p.is_file() for pattern in ("*.safetensors", "*.bin") for p in sub.glob(pattern))
        if not sub.is_dir() or (c in WEIGHT_COMPONENTS and not has_weights):
            missing.append(c)
    return missing


def check_weights(model: str, cache_dir: str | None = None) -> dict[str, Any]:
    """Whether a Stable Diffusion model is complete on disk: a local diffusers-layout folder, or the hub id's
    snapshot (default revision) in the Hugging Face cache. Never contacts the network."""
    from huggingface_hub import try_to_load_from_cache

    from guidance.priors.diffusers_unet import is_local_model
    from guidance.priors.single_file import is_single_file
    from guidance.priors.stable_diffusion import REMOVED_MODELS

    entry: dict[str, Any] = {"model": model, "present": False, "path": None, "missing": [], "detail": ""}
    if is_single_file(model):  # one .safetensors checkpoint (its configs come from prior.single_file_config)
        present = Path(model).expanduser().is_file()
        return {**entry, "source": "file", "path": model, "present": present, "family": model_family(model),
                "detail": "one checkpoint file" if present else "no such file"}
    if is_local_model(model):
        folder = Path(model).expanduser()
        entry.update(source="folder", path=str(folder))
        if not folder.is_dir():
            return {**entry, "family": model_family(model), "detail": "no such folder"}
    else:
        cache_dir = cache_dir or hub_cache()
        entry["source"] = "hub cache"
        try:
            found = try_to_load_from_cache(model, "model_index.json", cache_dir=cache_dir)
        except ValueError as e:  # an id the hub would reject (HFValidationError)
            return {**entry, "family": model_family(model), "detail": f"not a hub id or a folder: {e}"}
        if not isinstance(found, str) and model in REMOVED_MODELS:  # what the prior loads instead (live_model_id)
            mirror = check_weights(REMOVED_MODELS[model], cache_dir)
            return {**mirror, "model": model, "detail": f"removed from the hub; its mirror {REMOVED_MODELS[model]}: "
                                                       f"{mirror['detail']}"}
        if not isinstance(found, str):
            return {**entry, "family": model_family(model), "detail": "not in the Hugging Face cache"}
        folder = Path(found).parent
        entry["path"] = str(folder)
    entry["family"] = model_family(model, folder)
    entry["missing"] = missing_components(folder)
    entry["present"] = not entry["missing"]
    entry["detail"] = ("complete" if entry["present"]
                       else f"incomplete (missing: {', '.join(entry['missing'])}); not a full diffusers layout")
    return entry


def preset_models(root: Path | None) -> dict[str, list[str]]:
    """Stable Diffusion model -> the presets using it (read from the YAML, so a preset that fails to load still
    counts), with the prior's default first."""
    import yaml

    from guidance.priors.stable_diffusion import StableDiffusionPriorConfig

    models: dict[str, list[str]] = {StableDiffusionPriorConfig.model: []}
    for path, name in _preset_files(root):
        try:
            prior = (yaml.safe_load(path.read_text()) or {}).get("prior") or {}
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        if isinstance(prior, dict) and prior.get("name") == "stable_diffusion":
            models.setdefault(str(prior.get("model", StableDiffusionPriorConfig.model)), []).append(name)
    return models


def weights(root: Path | None) -> dict[str, Any]:
    """ToyWorld (embedded) and every Stable Diffusion model the presets or the prior's default name, on disk."""
    from guidance.priors.stable_diffusion import StableDiffusionPriorConfig

    cache, default = hub_cache(), StableDiffusionPriorConfig.model
    priors = [{"prior": "toyworld", "model": None, "present": True, "detail": "embedded: always available, no download"}]
    for model, presets in preset_models(root).items():
        priors.append({"prior": "stable_diffusion", **check_weights(model, cache), "presets": presets,
                       "default": model == default})
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return {"hub_cache": cache, "hf_hub_offline": offline, "priors": priors}


# ---------------------------------------------------------------- presets


def _preset_files(root: Path | None) -> list[tuple[Path, str]]:
    if root is None:
        from dream3d.webapp import preset_root

        try:
            root = preset_root()
        except FileNotFoundError:
            return []
    return [(p, str(p.relative_to(root).with_suffix(""))) for p in sorted(root.rglob("*.yaml"))]


def _gpu_bytes(cfg, prior_on: torch.device, scene_on: torch.device, family: str | None) -> dict[str, float]:
    """Estimated GPU memory per CUDA device: the prior (Stable Diffusion's rough footprint, or ToyWorld's
    resident tensors) plus the scene's parameters, Adam state and one training step's activations."""
    from dream3d.cost import prior_cost, render_cost, scene_parameter_bytes

    t = cfg.train
    scene = scene_parameter_bytes(cfg.scene) + render_cost(cfg.scene, t.batch_size, t.resolution, train=True)[1]
    if family:
        prior = SD_GPU_BYTES[family][1] * (2.0 if getattr(cfg.prior, "dtype", "auto") == "fp32" else 1.0)
    else:
        prior = prior_cost(cfg)[2]
    out: dict[str, float] = {}
    for device, nbytes in ((scene_on, scene), (prior_on, prior)):
        if device.type == "cuda":
            key = f"cuda:{device.index or 0}"
            out[key] = out.get(key, CUDA_CONTEXT_BYTES) + nbytes
    return out


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.0f} h"


def preset_fit(path: Path, name: str, hw: dict[str, Any], models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One preset: where it would run, its estimated peak memory there, and a one-line verdict. `models` maps a
    Stable Diffusion model to its check_weights entry. A preset that fails to load is reported, never raised."""
    from dream3d.config import load_preset
    from dream3d.cost import SD_HOST_BYTES, estimate_cost
    from dream3d.kernel.device import DeviceUnavailableError, prior_device, resolve_device

    entry: dict[str, Any] = {"name": name, "path": str(path), "prior": None, "model": None, "family": None,
                             "scene": None, "device": None, "prior_device": None, "host_bytes_estimate": None,
                             "host_fits": None, "gpu_bytes_estimate": None, "gpu_fits": None, "fits": False,
                             "weights_present": None, "seconds_estimate": None, "error": None}
    try:
        cfg = load_preset(str(path))  # an image-to-3D preset that needs an image is reported as an image run
        sd = cfg.prior.name == "stable_diffusion"
        entry.update(prior=cfg.prior.name, scene=cfg.scene.name)
        if sd:
            found = models.get(cfg.prior.model) or check_weights(cfg.prior.model)
            entry.update(model=cfg.prior.model, family=found["family"], weights_present=found["present"])
        elif cfg.prior.name == "mvdream":  # a folder that `dream3d convert-mvdream` writes
            entry.update(model=cfg.prior.model, weights_present=(Path(cfg.prior.model).expanduser() / "unet").is_dir())
        elif cfg.prior.name == "zero123":  # a hub id or diffusers-layout folder
            from guidance.priors.stable_diffusion import cached_locally

            entry.update(model=cfg.prior.model, weights_present=cached_locally(cfg.prior.model))
        cost = estimate_cost(cfg)
        scene_on = resolve_device(cfg.train.device)
        prior_on = prior_device(scene_on, getattr(cfg.prior, "device", None))
    except DeviceUnavailableError as e:  # loads, but asks for a device this machine does not have
        return {**entry, "verdict": f"no: {e}"}
    except Exception as e:  # noqa: BLE001 - a broken preset is a finding of the report, not a crash
        entry["error"] = f"{type(e).__name__}: {e}"
        return {**entry, "verdict": f"error: {entry['error']}"}
    host = cost.peak_bytes
    if sd and prior_on.type != "cuda":  # cost.py's CPU figure is for SD 1.x/2.x; SDXL in fp32 needs more
        host += max(0.0, SD_CPU_BYTES[entry["family"]] - SD_HOST_BYTES["cpu"])
    ram = hw["ram_usable_bytes"]
    entry.update(device=str(scene_on), prior_device=str(prior_on), host_bytes_estimate=host,
                 host_fits=None if ram is None else host <= ram)
    gpu_total = {g["device"]: g["total_bytes"] for g in hw["gpus"]}
    gpu = _gpu_bytes(cfg, prior_on, scene_on, entry["family"])
    if gpu:
        entry.update(gpu_bytes_estimate=gpu, gpu_fits=all(b <= gpu_total.get(d, 0.0) for d, b in gpu.items()))
    else:
        entry["seconds_estimate"] = cost.seconds  # the cost model's constants are CPU ones
    entry["fits"] = entry["host_fits"] is not False and entry["gpu_fits"] is not False
    if entry["gpu_fits"] is False:
        d, b = max(gpu.items(), key=lambda kv: kv[1] - gpu_total.get(kv[0], 0.0))
        verdict = f"no: needs ~{b / GIB:.1f} GiB on {d} (estimate), it has {gpu_total.get(d, 0.0) / GIB:.1f} GiB"
    elif entry["host_fits"] is False:
        verdict = f"no: needs ~{host / GIB:.1f} GiB of RAM (estimate), this machine has {ram / GIB:.1f} GiB"
    elif sd and not entry["weights_present"]:
        verdict = "needs weights (see above)"
    elif entry["prior"] == "mvdream" and not entry["weights_present"]:
        verdict = f"needs weights: `dream3d convert-mvdream sd-v2.1-base-4view.pt {cfg.prior.model}`"
    elif entry["prior"] == "zero123" and not entry["weights_present"]:
        verdict = f"needs weights: `hf download {cfg.prior.model}` where there is internet"
    else:
        verdict = "yes"
    if entry["fits"] and sd and prior_on.type == "cpu":
        verdict += f"; on the CPU: very slow (~{_duration(cost.seconds)} estimate)"
    elif entry["fits"] and entry["seconds_estimate"] is not None:
        verdict += f" (~{_duration(cost.seconds)} estimate)"
    return {**entry, "verdict": verdict}


# ---------------------------------------------------------------- report


def diagnose(root: Path | None = None) -> dict[str, Any]:
    """The whole report; `root` is the presets folder (default: configs/ as the web UI finds it)."""
    from dream3d.kernel.device import resolve_device

    hw = hardware()
    w = weights(root)
    models = {p["model"]: p for p in w["priors"] if p["model"]}
    presets = [preset_fit(path, name, hw, models) for path, name in _preset_files(root)]
    return {"hardware": hw, "auto_device": str(resolve_device("auto")), "kernels": kernels(hw["cuda_available"]),
            "weights": w, "presets": presets}


def _gib(b: float | None) -> str:
    return "?" if b is None else f"{b / GIB:.1f} GiB"


def format_report(r: dict[str, Any]) -> str:
    """The report as plain text, one section per topic."""
    hw, k, w = r["hardware"], r["kernels"], r["weights"]
    cuda = "yes" if hw["cuda_available"] else f"no ({hw['why_no_cuda']})"
    ram = f"{_gib(hw['ram_total_bytes'])} total, {_gib(hw['ram_available_bytes'])} available"
    if hw["cgroup_limit_bytes"]:
        ram += f", limited to {_gib(hw['cgroup_limit_bytes'])} (cgroup)"
    lines = ["Hardware",
             f"  torch            {hw['torch_version']} (CUDA build: {hw['torch_cuda'] or 'none'})",
             f"  CUDA available   {cuda}, {hw['device_count']} device(s)"]
    lines += [f"  {g['device']:<16} {g['name']}, {_gib(g['total_bytes'])}"
              + (f", compute {g['capability']}" if g["capability"] else "") for g in hw["gpus"]]
    lines += [f"  MPS              {'yes' if hw['mps_available'] else 'no'}",
              f"  CPUs             {hw['cpus']} ({hw['cpus_usable']} usable, {hw['torch_threads']} torch threads)",
              f"  RAM              {ram}",
              f"  train.device=auto resolves to {r['auto_device']}", "", "CUDA kernels"]
    for p in KERNELS:
        e = k[p]
        lines.append(f"  {p + ' ' + (e['version'] or ''):<16} {e['status']}")
    t = k["cuda_toolkit"]
    nvcc = (f"{t['nvcc']} (CUDA {t['version']})" if t["version"] else f"{t['nvcc']} ({t['error']})") if t["nvcc"] \
        else "not found"
    lines += [f"  nvcc             {nvcc}; torch's CUDA: {t['torch_cuda'] or 'none'}", _note(f"to build: {k['how_to_build'][0]}"),
              *(f"      {cmd}" for cmd in k["how_to_build"][1:]),
              "", f"Prior weights (on disk only; hub cache {w['hub_cache']}, HF_HUB_OFFLINE={int(w['hf_hub_offline'])})"]
    for p in w["priors"]:
        if p["prior"] == "toyworld":
            lines.append(f"  {'toyworld':<42} yes  {p['detail']}")
            continue
        used = [f"{len(p['presets'])} preset(s)"] if p["presets"] else []
        used += ["the default"] if p["default"] else []
        lines.append(f"  {p['model']:<42} {'yes' if p['present'] else 'no ':<4} {p['detail']}"
                     + (f" [{', '.join(used)}]" if used else ""))
    if not all(p["present"] for p in w["priors"]):
        how = "not while HF_HUB_OFFLINE=1" if w["hf_hub_offline"] else "several GB each"
        lines.append(_note(f"missing weights download on a preset's first run ({how}); or give a local diffusers-layout "
                           "folder: prior.model=/path/to/folder. `dream3d models` lists the supported models."))
    lines += ["", "Presets (memory: estimates, not measured; host RAM from dream3d.cost, GPU from rough model sizes)"]
    rows = [("preset", "prior", "device", "host RAM", "GPU mem", "runs here?")]
    for p in r["presets"]:
        prior = SD_FAMILY_NAMES[p["family"]] if p["family"] else (p["prior"] or "?")
        gpu = ", ".join(f"{_gib(b)}" for b in p["gpu_bytes_estimate"].values()) if p["gpu_bytes_estimate"] else "-"
        host = "-" if p["host_bytes_estimate"] is None else "~" + _gib(p["host_bytes_estimate"])
        gpu = gpu if gpu == "-" else "~" + gpu
        rows.append((p["name"], prior, p["device"] or "-", host, gpu, p["verdict"]))
    widths = [max(len(row[i]) for row in rows) + 2 for i in range(5)]
    lines += ["  " + "".join(c.ljust(n) for c, n in zip(row, widths)) + row[5] for row in rows]
    if hw["cuda_available"]:
        lines.append(_note("GPU: Stable Diffusion in fp16 ~2.5-4 GB (SD 1.x/2.x), ~8-10 GB (SDXL), rough figures not "
                           "measured here; the fit check uses the high end plus the scene and 0.5 GiB of CUDA context"))
    elif any(p["prior"] == "stable_diffusion" for p in r["presets"]):
        lines.append(_note("Stable Diffusion presets run on the CPU here (fp32, very slow); on a GPU they need ~2.5-4 GB "
                           "(SD 1.x/2.x) or ~8-10 GB (SDXL) of GPU memory in fp16 (rough figures, not measured here)"))
    return "\n".join(lines)


def _note(text: str) -> str:
    return textwrap.fill(text, width=110, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False)
