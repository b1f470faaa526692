"""DeepFloyd IF stage I through diffusers: a pixel-space prior at 64x64 with a T5 text encoder.

IF (DeepFloyd, 2023; model card https://huggingface.co/DeepFloyd/IF-I-XL-v1.0) is a cascade of pixel-space
diffusion models in the style of Imagen (Saharia et al. 2022, arXiv:2205.11487); stage I generates 64x64 images,
conditioned on the hidden states of a frozen T5-v1.1-XXL encoder. Only stage I is a prior here (the 256/1024
upscalers are not). DreamFusion (Poole et al. 2022, arXiv:2209.14988) distilled Imagen's 64x64 base model the same way.

What this module reproduces from diffusers' `IFPipeline` (encode_prompt, __call__):
- text: the prompt lower-cased and stripped (the pipeline without `clean_caption`), tokenized to 77 tokens
  (padding and truncation to max_length 77: "the text encoder was trained with a max length of 77 for IF"); the
  T5 encoder sees the attention mask, the UNet gets all 77 hidden states [77, D] and no mask.
- the UNet predicts eps and a learned variance (out_channels 6, scheduler variance_type "learned_range"): eps is
  the first 3 channels (`noise_pred.split(3, dim=1)`); the variance is unused by score distillation.
- the schedule: the DDPMScheduler's alphas_cumprod ("squaredcos_cap_v2", the cosine schedule, in IF).
x = img*2-1 [B,3,r,r] with renders resized to r = prior.resolution (64 for stage I; smaller only for tests),
differentiable; the UNet and T5 run under no_grad. Components load one by one from a hub id (gated: accept the
licence on the model page and `hf auth login`) or a local folder in the diffusers layout
(unet/ text_encoder/ tokenizer/ scheduler/), through `load_component` of the Stable Diffusion prior.
The hub tokenizer ships only spiece.model: reading it needs the `sentencepiece` package.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dream3d.kernel.cache import cache_root
from dream3d.kernel.cameras import Cameras
from dream3d.kernel.device import prior_device, resolve_device
from dream3d.kernel.schema import ConfigError, bounded, server_only
from guidance.priors.diffusers_unet import DiffusersPriorConfig, DiffusersUNetPrior, is_local_model
from guidance.priors.stable_diffusion import ModelUnavailableError, load_component, resolve_dtype

log = logging.getLogger(__name__)

MAX_TOKENS = 77  # IFPipeline.encode_prompt's max_length
SUBFOLDERS = ("unet", "text_encoder", "tokenizer", "scheduler")
EMBEDDING_CACHE_VERSION = 1

# model id -> what it is (stage I sizes from the model card: the UNet's parameters)
KNOWN_MODELS = {
    "DeepFloyd/IF-I-XL-v1.0": "IF stage I XL, 4.3B UNet + T5-XXL, 64 px pixel space, gated (configs/if default)",
    "DeepFloyd/IF-I-L-v1.0": "IF stage I L, 900M UNet + T5-XXL, 64 px pixel space, gated",
    "DeepFloyd/IF-I-M-v1.0": "IF stage I M, 400M UNet + T5-XXL, 64 px pixel space, gated",
}


@dataclass
class DeepFloydIFPriorConfig(DiffusersPriorConfig):
    """IF stage I; the shared keys (dtype, device, attention, offload, ...) are DiffusersPriorConfig's."""

    name: str = "deepfloyd_if"
    model: str = server_only("DeepFloyd/IF-I-XL-v1.0")  # hub id (IF-I-XL/L/M-v1.0, gated) or a local diffusers-layout folder
    resolution: int = bounded(64, 8, 256)  # renders are resized to this; stage I is trained at 64

    def validate(self) -> None:
        super().validate()
        if not self.model.strip():
            raise ConfigError("prior.model is empty; give a hub id (DeepFloyd/IF-I-XL-v1.0) or a folder")


@dataclass(frozen=True)
class T5Embedding:
    """One prompt's T5 hidden states [77, D] (D = 4096 for T5-XXL)."""

    text: str
    hidden: Tensor


def _check_folder(model: str) -> None:
    """A local prior.model must be a folder with IF stage I's four components (hub ids are checked on load)."""
    if not is_local_model(model):
        return
    folder = os.path.expanduser(model)
    layout = "unet/, text_encoder/, tokenizer/ and scheduler/"
    if not os.path.isdir(folder):
        raise ModelUnavailableError(f"prior.model = {model!r}: no such folder. Give a folder in the diffusers layout of "
                                    f"DeepFloyd IF stage I ({layout}) or a hub id (DeepFloyd/IF-I-XL-v1.0).")
    for sub in SUBFOLDERS:
        if not os.path.isdir(os.path.join(folder, sub)):
            extra = (" (IF stage II/III folders and some IF copies ship no T5: use a stage I folder that has one)"
                     if sub == "text_encoder" else "")
            raise ModelUnavailableError(f"prior.model = {model!r} has no '{sub}/' folder; a DeepFloyd IF stage I folder "
                                        f"has {layout}{extra}.")


class DeepFloydIFPrior(DiffusersUNetPrior):
    """IF stage I's UNet as eps(x_t, t, y); x = img*2-1 [B,3,r,r], r = prior.resolution (64)."""

    EMBEDDING = T5Embedding

    def __init__(self, cfg: DeepFloydIFPriorConfig | None = None, progress: bool = False,
                 device: torch.device | None = None):
        """`device`: the run's train.device; the models go there unless prior.device names another CUDA
        device (kernel/device.py prior_device). Predictions come back on the device of x_t."""
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from transformers import T5EncoderModel

        self.cfg = cfg = cfg or DeepFloydIFPriorConfig()
        cfg.validate()
        self.device = resolve_device(cfg.device, "prior.device") if device is None else prior_device(device, cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        _check_folder(cfg.model)

        scheduler = load_component(DDPMScheduler, cfg, "scheduler")
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ModelUnavailableError(f"'{cfg.model}' predicts {self.prediction_type!r}; supported: epsilon, "
                                        "v_prediction, sample")
        self.alphas_cumprod = scheduler.alphas_cumprod.float().to(device or self.device)  # where t lives
        self.unet = load_component(UNet2DConditionModel, cfg, "unet", torch_dtype=self.dtype)
        self._check_unet()
        self.tokenizer = self._load_tokenizer()
        self.text_encoder = load_component(T5EncoderModel, cfg, "text_encoder", torch_dtype=self.dtype)
        for m in (self.unet, self.text_encoder):
            m.requires_grad_(False).eval()
        if cfg.cpu_offload:
            from accelerate import cpu_offload

            for m in (self.unet, self.text_encoder):
                cpu_offload(m, execution_device=self.device)
        else:
            self.unet.to(self.device)
            self.text_encoder.to(self.device)
        if cfg.attention == "slicing":
            self.unet.set_attention_slice("auto")
        elif cfg.attention == "default":
            self.unet.set_default_attn_processor()  # eager attention (IF's added-KV attention, no sdpa)
        # sdpa: what diffusers builds IF's attention with when torch has it (AttnAddedKVProcessor2_0)
        if cfg.channels_last:
            self.unet.to(memory_format=torch.channels_last)
        self._unet_fn = torch.compile(self.unet) if cfg.compile else self.unet
        self._embeddings: dict[str, T5Embedding] = {}
        self._warned_truncation = False

    def _check_unet(self) -> None:
        c = self.unet.config
        if c.in_channels != 3 or c.out_channels not in (3, 6) or c.class_embed_type is not None:
            what = ("a latent model (Stable Diffusion?): use prior.name=stable_diffusion" if c.in_channels == 4 else
                    "an IF upscaler (stage II/III), not stage I" if c.in_channels == 6 else "not IF stage I")
            raise ModelUnavailableError(f"prior.model = {self.cfg.model!r}: its UNet takes {c.in_channels} channels and "
                                        f"gives {c.out_channels}; IF stage I takes 3 (RGB) and gives 6 (eps and a "
                                        f"variance). This is {what}.")
        scale = 2 ** (len(c.block_out_channels) - 1)
        if self.cfg.resolution % scale:
            raise ConfigError(f"prior.resolution = {self.cfg.resolution} must be a multiple of {scale} (the UNet's "
                              "downsampling factor); IF stage I is trained at 64")

    def _load_tokenizer(self):
        from transformers import T5TokenizerFast  # the tokenizers-backed T5Tokenizer (one class in transformers 5)

        try:
            return load_component(T5TokenizerFast, self.cfg, "tokenizer")
        except (ModelUnavailableError, ImportError) as e:  # transformers 4 raises ImportError, 5 a tiktoken ValueError
            if importlib.util.find_spec("sentencepiece") is not None or not any(
                    w in str(e).lower() for w in ("sentencepiece", "tiktoken")):
                raise
            raise ModelUnavailableError(
                f"cannot read the T5 tokenizer of '{self.cfg.model}': DeepFloyd ships it as tokenizer/spiece.model, "
                "and reading that needs the sentencepiece package (pip install 'dream3d[deepfloyd]'), which is not "
                "installed. "
                f"[{str(e)[:300]}]") from None

    # -- prior-space mapping -------------------------------------------------------------
    @property
    def sample_shape(self) -> tuple[int, ...]:
        r = self.cfg.resolution
        return (self.unet.config.in_channels, r, r)

    def encode(self, img: Tensor) -> Tensor:
        """Renders [B,3,H,W] in [0,1] -> x = img*2-1 [B,3,r,r] (float32, on img's device; differentiable)."""
        r = self.cfg.resolution
        if img.shape[-2:] != (r, r):
            img = F.interpolate(img, size=(r, r), mode="bilinear", align_corners=False, antialias=img.shape[-1] > r)
        return img.float() * 2 - 1

    @torch.no_grad()
    def decode(self, x: Tensor) -> Tensor:
        return ((x.float() + 1) / 2).clamp(0, 1)

    # -- text ------------------------------------------------------------------------------
    def clear_run_cache(self) -> None:
        self._embeddings.clear()  # the disk cache (prior.cache_embeddings) keeps them for the next run
        self._warned_truncation = False

    def embed(self, prompt: str) -> T5Embedding:
        """Prompt -> T5Embedding [77, D], cached in memory and (optionally) on disk. Longer prompts are
        truncated to 77 tokens with a warning naming the dropped words."""
        return self.cached_embedding(prompt)

    @torch.no_grad()
    def _encode_text(self, prompt: str) -> T5Embedding:
        text = prompt.lower().strip()  # IFPipeline._text_preprocessing without clean_caption
        tok = self.tokenizer(text, padding="max_length", max_length=MAX_TOKENS, truncation=True, add_special_tokens=True,
                             return_tensors="pt")
        full = self.tokenizer(text, verbose=False).input_ids
        if len(full) > MAX_TOKENS:
            dropped = self.tokenizer.decode(full[MAX_TOKENS - 1:-1], skip_special_tokens=True)
            (log.debug if self._warned_truncation else log.warning)(
                "prompt is longer than IF's %d T5 tokens; ignored: %r", MAX_TOKENS, dropped)
            self._warned_truncation = True
        out = self.text_encoder(tok.input_ids.to(self.device), attention_mask=tok.attention_mask.to(self.device))
        return T5Embedding(prompt, out.last_hidden_state[0].float().cpu())

    def _cache_path(self, prompt: str) -> Path:
        key = json.dumps(["deepfloyd_if", EMBEDDING_CACHE_VERSION, MAX_TOKENS, self._model_fingerprint(), prompt])
        return cache_root() / "embeddings" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.pt"

    def _model_fingerprint(self) -> list:
        """What the embedding depends on: model id, revision and dtype, or the text encoder's and tokenizer's files."""
        model = os.path.expanduser(self.cfg.model)
        if not os.path.isdir(model):
            commit = getattr(self.text_encoder.config, "_commit_hash", None)
            return [self.cfg.model, self.cfg.revision, commit, self.cfg.variant, str(self.dtype)]
        files: list = [str(self.dtype)]
        for sub in ("text_encoder", "tokenizer"):
            for p in sorted(Path(model, sub).glob("*")):
                st = p.stat()
                files.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
        return files

    # -- the network -----------------------------------------------------------------------
    def unet_inputs(self, text: Sequence[T5Embedding], cameras: Cameras | None = None) -> dict[str, Any]:
        """The UNet's conditioning for one embedding per batch element: T5 hidden states [B,77,D], no mask
        (as IFPipeline)."""
        return {"encoder_hidden_states": torch.stack([e.hidden for e in text]).to(self.device, self.dtype)}

    def output_to_eps(self, out: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The UNet's output [B,6,r,r] (eps | learned variance) -> eps [B,3,r,r]: the first 3 channels, then
        the parameterisation (guidance.md: eps = s_t x_t + a_t v)."""
        c = x_t.shape[1]
        if out.shape[1] == 2 * c:
            out = out[:, :c]  # IFPipeline: noise_pred.split(3, dim=1)[0]
        return super().output_to_eps(out, x_t, t)
