"""What the diffusers-UNet priors (Stable Diffusion, DeepFloyd IF) share: the settings of loading and
running a diffusers model, one UNet call per batch and the conversion of its output, in the model's
parameterisation, to eps."""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dream3d.kernel.atomic_io import atomic_torch_save
from dream3d.kernel.cache import prune
from dream3d.kernel.cameras import Cameras
from dream3d.kernel.device import check_device_name
from dream3d.kernel.schema import choice, server_only
from guidance.priors.base import DiffusionPrior, PriorConfig

log = logging.getLogger("dream3d")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ATTENTION = ("sdpa", "slicing", "default")  # torch scaled-dot-product | sliced (least memory) | eager


def is_local_model(model: str) -> bool:
    """Whether `prior.model` names a local file or folder rather than a hub id."""
    return model.startswith(("/", ".", "~")) or os.path.exists(model)


@dataclass
class DiffusersPriorConfig(PriorConfig):
    """The keys every diffusers prior takes; a subclass adds `model` (its default id) and its own."""

    revision: str | None = server_only(None)  # hub branch, tag or commit
    variant: str | None = server_only(None)  # weight-file variant on the hub, e.g. "fp16"
    dtype: str = choice("auto", ("auto", *DTYPES))  # auto = fp16 on CUDA, fp32 on CPU
    device: str = "auto"  # auto = follow train.device; or another CUDA device (cuda:N) to hold the model on a second GPU
    attention: str = choice("sdpa", ATTENTION)
    channels_last: bool = False
    cpu_offload: bool = False  # sequential CPU offload of the UNet and text encoders (accelerate): least GPU memory
    compile: bool = False  # torch.compile the UNet (slow first step)
    local_files_only: bool = server_only(False)  # never contact the hub (HF_HUB_OFFLINE=1 does the same)
    cache_embeddings: bool = True  # keep text embeddings on disk under the dream3d cache

    def validate(self) -> None:
        check_device_name(self.device, "prior.device")


class DiffusersUNetPrior(DiffusionPrior):
    """A prior whose eps comes from a diffusers UNet. Subclasses set `_unet_fn` (the UNet, maybe
    compiled), `device`, `dtype`, `prediction_type` (epsilon | v_prediction | sample) and `cfg` (with
    `channels_last`), and say in `unet_inputs` how text embeddings condition the UNet."""

    _unet_fn: Any
    dtype: torch.dtype
    prediction_type: str

    _embeddings: dict[str, Any]  # prompt -> embedding, this run's (clear_run_cache empties it)
    EMBEDDING: type  # the embedding dataclass: (text, tensors...), saved as {field: tensor} without the text

    def _encode_text(self, prompt: str) -> Any:
        """The model's text encoders on one prompt -> an EMBEDDING (tensors on the CPU)."""
        raise NotImplementedError

    def _cache_path(self, prompt: str) -> Path:
        """Where the disk cache keeps one prompt's embedding (keyed by what it depends on)."""
        raise NotImplementedError

    def cached_embedding(self, prompt: str) -> Any:
        """A prompt's embedding from memory, else from the disk cache (prior.cache_embeddings), else
        encoded and saved there. A corrupt entry is rebuilt, never trusted (weights_only); a full disk
        only costs the caching."""
        if prompt not in self._embeddings:
            path = self._cache_path(prompt) if self.cfg.cache_embeddings else None
            emb = None
            if path is not None and path.exists():
                try:
                    emb = self.EMBEDDING(prompt, **torch.load(path, map_location="cpu", weights_only=True))
                except Exception as e:  # noqa: BLE001 - whatever is wrong with the file, encode again
                    log.warning("ignoring unreadable embedding cache %s (%s)", path, e)
            if emb is None:
                emb = self._encode_text(prompt)
                if path is not None:
                    try:
                        atomic_torch_save({f.name: getattr(emb, f.name) for f in dataclasses.fields(emb)
                                           if f.name != "text"}, path)
                        prune(path.parent, keep=path)  # one file per prompt: bounded by $DREAM3D_CACHE_MAX_GB
                    except OSError as e:  # the cache is an optimisation: a full disk must not stop a run
                        log.warning("could not cache the text embedding in %s (%s)", path, e)
            self._embeddings[prompt] = emb
        return self._embeddings[prompt]

    def unet_inputs(self, text: Sequence[Any], cameras: Cameras | None = None) -> dict[str, Any]:
        """The UNet's conditioning keyword arguments for one embedding (and camera) per batch element."""
        raise NotImplementedError

    def sample_condition(self, text: Sequence[Any]) -> Tensor | None:
        """Channels concatenated to x_t before the UNet, [B,C',h,w] for one embedding per element (Zero123's
        reference latent); None: the UNet takes x_t alone (text-conditioned models)."""
        return None

    def output_to_eps(self, out: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The UNet's output in its parameterisation -> eps (guidance.md: eps = s_t x_t + a_t v)."""
        if self.prediction_type == "epsilon":
            return out
        a, s = self.coefficients(t, x_t.ndim)
        if self.prediction_type == "v_prediction":
            return s * x_t + a * out
        return (x_t - a * out) / s

    @torch.no_grad()
    def predict_eps(self, x_t: Tensor, t: Tensor, text: Sequence[Any], cameras: Cameras | None = None) -> Tensor:
        """eps [B,...] (float32, on x_t's device) from one UNet call on the prior's device and dtype."""
        x = x_t.to(self.device, self.dtype)
        extra = self.sample_condition(text)
        if extra is not None:
            x = torch.cat([x, extra.to(x)], 1)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self._unet_fn(x, t.to(self.device), **self.unet_inputs(text, cameras)).sample
        return self.output_to_eps(out.float().to(x_t.device), x_t, t)
