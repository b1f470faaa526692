"""Zero123 and Stable Zero123 (Liu et al. 2023, arXiv 2303.11328; Stability AI 2023) through diffusers: a latent
diffusion model of a novel view of an object given one reference view and the relative camera. Image-to-3D's
prior for real images (DreamGaussian, Magic123 and threestudio use it so).

The UNet is diffusers' UNet2DConditionModel with 8 input channels: the noisy latent and the reference's VAE
latent (its posterior mode, without the scaling factor) side by side. Its cross-attention sees one token:
`proj([CLIP image embedding of the reference, T])` with T the relative camera [4] (`zero123_camera`). The
unconditional branch of classifier-free guidance zeroes both the token and the reference latent (Zero123's
training dropout), so CFG is `eps(x, 0) + w (eps(x, ref) - eps(x, 0))` as guidance.md writes it.

Weights: `prior.model` is a diffusers-layout folder or hub id with unet/ (8 input channels), vae/, scheduler/,
image_encoder/ (CLIPVisionModelWithProjection), feature_extractor/ (CLIPImageProcessor: the CLIP input size and
normalisation) and the projection, clip_camera_projection/ (ashawkey/zero123-xl-diffusers,
ashawkey/stable-zero123-diffusers) or cc_projection/ (kxic/zero123-xl, diffusers' community pipeline): one linear
layer [D, D_clip+4] (768 x 772 in the released models), read as tensors only (safetensors, or a .bin with weights_only=True).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dream3d.kernel.cameras import Cameras
from dream3d.kernel.schema import ConfigError, choice, server_only
from guidance.priors.diffusers_unet import is_local_model
from guidance.priors.single_file import is_single_file
from guidance.priors.stable_diffusion import (
    ModelUnavailableError,
    StableDiffusionPrior,
    StableDiffusionPriorConfig,
    load_component,
)

log = logging.getLogger(__name__)

PROJECTION_FOLDERS = ("clip_camera_projection", "cc_projection")
PROJECTION_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


@dataclass
class Zero123PriorConfig(StableDiffusionPriorConfig):
    """Zero123 / Stable Zero123; the loading keys (dtype, device, attention, offload, ...) are Stable Diffusion's."""

    name: str = "zero123"
    model: str = server_only("ashawkey/zero123-xl-diffusers")  # hub id or diffusers-layout folder (see the module)
    # the 4th number of the relative camera T: zero123 = the change of camera distance (Zero123, Zero123-XL);
    # stable_zero123 = the reference's polar angle (Stable Zero123). auto: stable_zero123 when prior.model's name
    # says stable-zero123, else zero123
    camera_embedding: str = choice("auto", ("auto", "zero123", "stable_zero123"))

    def validate(self) -> None:
        super().validate()
        if is_single_file(self.model):
            raise ConfigError(f"prior.model = {self.model!r} is one weight file; Zero123 loads a diffusers-layout folder "
                              "or hub id (ashawkey/zero123-xl-diffusers, ashawkey/stable-zero123-diffusers)")
        if self.empty_prompt != "auto":
            raise ConfigError("prior.empty_prompt is for text-conditioned models; Zero123's unconditional branch is "
                              "always zeros: remove prior.empty_prompt")

    def stable(self) -> bool:
        """Whether T's 4th number is the reference's polar angle (Stable Zero123)."""
        if self.camera_embedding == "auto":
            name = os.path.basename(os.path.normpath(os.path.expanduser(self.model))).lower().replace("_", "-")
            return "stable-zero123" in name
        return self.camera_embedding == "stable_zero123"


@dataclass(frozen=True)
class ReferenceView:
    """Zero123's condition: the reference's CLIP image embedding [D] and VAE latent [4,h,w] (unscaled posterior
    mode) and the camera it was seen from; `clip is None`: the unconditional branch (zero token, zero latent)."""

    text: str
    clip: Tensor | None = None
    latent: Tensor | None = None
    elevation: float = 0.0
    azimuth: float = 0.0
    distance: float = 0.0


def zero123_camera(cameras: Cameras, ref: Sequence[ReferenceView], stable: bool) -> Tensor:
    """The relative camera T [B,4] of each target camera from its reference (threestudio's and DreamGaussian's
    convention): [polar change in radians (polar = 90 deg - elevation), sin and cos of the azimuth change,
    distance change (Zero123) or the reference's polar angle in radians (Stable Zero123)]."""
    ref_elev = torch.tensor([r.elevation for r in ref], dtype=torch.float32)
    ref_az = torch.tensor([r.azimuth for r in ref], dtype=torch.float32)
    elev, az = cameras.elevation.float().cpu(), cameras.azimuth.float().cpu()
    d_az = torch.deg2rad(az - ref_az)
    last = (torch.deg2rad(90 - ref_elev) if stable
            else cameras.distance.float().cpu() - torch.tensor([r.distance for r in ref], dtype=torch.float32))
    return torch.stack([torch.deg2rad(ref_elev - elev), torch.sin(d_az), torch.cos(d_az), last], -1)


def projection_file(cfg: Zero123PriorConfig) -> str:
    """The camera projection's weight file: local, or fetched from the hub (the Hugging Face cache)."""
    model = os.path.expanduser(cfg.model)
    tried = [f"{sub}/{name}" for sub in PROJECTION_FOLDERS for name in PROJECTION_FILES]
    if is_local_model(cfg.model):
        for rel in tried:
            if os.path.isfile(os.path.join(model, rel)):
                return os.path.join(model, rel)
        raise ModelUnavailableError(f"prior.model = {cfg.model!r} has no camera projection ({' or '.join(tried[::2])}): "
                                    "not a Zero123 folder in the diffusers layout")
    from huggingface_hub import hf_hub_download

    errors = []
    for rel in tried:
        sub, name = rel.split("/")
        try:
            return hf_hub_download(cfg.model, name, subfolder=sub, revision=cfg.revision,
                                   local_files_only=cfg.local_files_only)
        except Exception as e:  # noqa: BLE001 - not this layout, offline or missing: try the next, then say all
            errors.append(f"{rel}: {type(e).__name__}")
    raise ModelUnavailableError(f"cannot load the camera projection of '{cfg.model}' ({'; '.join(errors)}). Download the "
                                f"model where there is internet (`hf download {cfg.model}`) and copy the cache folder, "
                                "or pass a local folder: prior.model=/path/to/folder")


def load_projection(path: str) -> nn.Linear:
    """The linear layer [D, D_clip+4] of a projection file, read as tensors only (no code runs)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(path)
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    weights = [(k, v) for k, v in sd.items() if k.endswith("weight") and v.ndim == 2]
    if len(weights) != 1:
        raise ModelUnavailableError(f"{path} is not a Zero123 camera projection: expected one linear layer, found "
                                    f"{[(k, tuple(v.shape)) for k, v in sd.items()]}")
    key, w = weights[0]
    bias = sd.get(key.removesuffix("weight") + "bias")
    layer = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    layer.load_state_dict({"weight": w, **({"bias": bias} if bias is not None else {})})
    return layer


class Zero123Prior(StableDiffusionPrior):
    """Zero123's UNet as eps(x_t, t, reference, camera); x = VAE latents [B,4,r/8,r/8] (r: 256 for the released
    models). Conditions on an image (`embed_image`), not on text: every prompt embeds to the unconditional branch."""

    def __init__(self, cfg: Zero123PriorConfig | None = None, progress: bool = False, device: torch.device | None = None):
        cfg = cfg or Zero123PriorConfig()
        cfg.validate()
        super().__init__(cfg, progress, device)
        unet_in, latent = self.unet.config.in_channels, self.vae.config.latent_channels
        if unet_in != 2 * latent:
            raise ModelUnavailableError(f"prior.model = {cfg.model!r} is not a Zero123 UNet: it takes {unet_in} input "
                                        f"channels, Zero123's takes {2 * latent} (the noisy and the reference latent)")
        clip_dim, proj = self.image_encoder.config.projection_dim, self.projection
        if (proj.in_features, proj.out_features) != (clip_dim + 4, self.unet.config.cross_attention_dim):
            raise ModelUnavailableError(
                f"prior.model = {cfg.model!r}: the camera projection maps {proj.in_features} -> {proj.out_features} "
                f"numbers; Zero123's maps the CLIP embedding and the camera, {clip_dim} + 4, to the UNet's "
                f"{self.unet.config.cross_attention_dim}")
        self.stable = cfg.stable()
        self._null = ReferenceView("")
        self._said_prompt = False

    def _load_encoders(self, cfg: Zero123PriorConfig) -> None:
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        self.tokenizers, self.text_encoders = [], []
        self.image_encoder = load_component(CLIPVisionModelWithProjection, cfg, "image_encoder", torch_dtype=self.dtype)
        processor = load_component(CLIPImageProcessor, cfg, "feature_extractor")
        crop = processor.crop_size
        self.clip_size = (int(crop["height"]), int(crop["width"]))  # a dict, or a SizeDict in transformers 5
        self.clip_mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
        self.clip_std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
        self.projection = load_projection(projection_file(cfg)).to(self.device, self.dtype)

    def encoders(self) -> list[nn.Module]:
        return [self.image_encoder, self.projection]

    def clear_run_cache(self) -> None:
        self._said_prompt = False  # nothing else is kept: the trainer embeds each run's reference once

    def embed(self, prompt: str) -> ReferenceView:
        """The unconditional branch for any prompt: Zero123 has no text encoder (the prompt names the run only)."""
        if prompt and not self._said_prompt:
            log.info("Zero123 conditions on the reference image only; the prompt %r does not steer it", prompt[:80])
            self._said_prompt = True
        return self._null

    @torch.no_grad()
    def embed_image(self, image: Tensor, camera: Cameras) -> ReferenceView:
        """The reference view image [3,H,W] in [0,1] on white, seen from camera [1]: its CLIP embedding (the image
        resized to the CLIP input and normalised as the model's feature_extractor says) and VAE latent."""
        img = image[None].float()
        clip_in = F.interpolate(img, size=self.clip_size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        clip_in = (clip_in - self.clip_mean) / self.clip_std
        r = self.resolution
        img = F.interpolate(img, size=(r, r), mode="bilinear", align_corners=False, antialias=img.shape[-1] > r)
        clip = self.image_encoder(clip_in.to(self.device, self.dtype)).image_embeds[0]
        latent = self.vae.encode((img * 2 - 1).to(self.device, self.vae.dtype)).latent_dist.mode()[0]
        return ReferenceView("<reference image>", clip.float().cpu(), latent.float().cpu(), float(camera.elevation[0]),
                             float(camera.azimuth[0]), float(camera.distance[0]))

    def unet_inputs(self, text: Sequence[ReferenceView], cameras: Cameras | None = None) -> dict[str, Any]:
        """One cross-attention token per element: proj([CLIP, T]) for a reference, zeros for the unconditional."""
        hidden = torch.zeros(len(text), 1, self.projection.out_features, device=self.device, dtype=self.dtype)
        idx = [i for i, e in enumerate(text) if e.clip is not None]
        if idx:
            if cameras is None:
                raise ValueError("Zero123 needs the target views' cameras (their change from the reference camera)")
            refs = [text[i] for i in idx]
            rel = zero123_camera(cameras[torch.tensor(idx)], refs, self.stable)
            tokens = torch.cat([torch.stack([e.clip for e in refs]), rel], -1).to(self.device, self.dtype)
            hidden[idx] = self.projection(tokens)[:, None]
        return {"encoder_hidden_states": hidden}

    def sample_condition(self, text: Sequence[ReferenceView]) -> Tensor:
        """The reference latents [B,4,h,w] beside x_t (zeros for the unconditional branch)."""
        shape = self.sample_shape
        return torch.stack([e.latent if e.clip is not None else torch.zeros(shape) for e in text]).to(self.device, self.dtype)


KNOWN_MODELS = {
    "ashawkey/zero123-xl-diffusers": "Zero123-XL in the diffusers layout, 256 px (camera_embedding auto = zero123)",
    "ashawkey/stable-zero123-diffusers": "Stable Zero123, 256 px (camera_embedding auto = stable_zero123; "
                                         "non-commercial licence)",
}

