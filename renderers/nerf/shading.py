"""Random shading of training renders (DreamFusion, Poole et al. 2022, sec. 3.1 and A.2).

A training image is, at random, the plain albedo, a diffusely lit albedo, or a lit white surface
("textureless"), under a point light placed near the camera. Shading makes geometry visible to
the prior (a flat-coloured blob looks right from every side; a shaded one does not);
textureless renders stop the field from painting geometry into the albedo. During the first
`ambient_only_steps` every image is the plain albedo (threestudio's warm-up), so geometry forms
before lighting is asked of it.

Shading is deferred: the opacity-weighted normal and albedo of each pixel are shaded once
(Lambert: albedo * (ambient + diffuse * max(0, n.l))), which for opaque surfaces equals shading
every sample and costs nothing per sample.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dream3d.kernel import draws

SHADING_MODES = ("albedo", "diffuse")
ALBEDO, LAMBERTIAN, TEXTURELESS = 0, 1, 2


@dataclass(frozen=True)
class Lighting:
    """Per image: mode [B] (ALBEDO | LAMBERTIAN | TEXTURELESS) and unit light direction [B,3]."""

    mode: Tensor
    light_dir: Tensor


def sample_lighting(camera_positions: Tensor, generator: torch.Generator | None, albedo_ratio: float,
                    textureless_ratio: float, light_jitter: float) -> Lighting:
    """Each image is albedo with probability `albedo_ratio`, else textureless with probability
    `textureless_ratio`, else lit albedo; the light comes from the camera's side of the scene,
    its direction jittered by N(0, light_jitter^2) per axis. camera_positions [B,3]."""
    b = camera_positions.shape[0]
    u = draws.rand((b, 2), generator, camera_positions.device)
    mode = torch.where(u[:, 0] < albedo_ratio, ALBEDO, torch.where(u[:, 1] < textureless_ratio, TEXTURELESS, LAMBERTIAN))
    toward_camera = torch.nn.functional.normalize(camera_positions, dim=-1)
    jitter = draws.randn((b, 3), generator, camera_positions.device) * light_jitter
    return Lighting(mode, torch.nn.functional.normalize(toward_camera + jitter, dim=-1))


def shade(albedo: Tensor, normal: Tensor, opacity: Tensor, lighting: Lighting, ambient: float,
          diffuse: float) -> Tensor:
    """Shaded, opacity-premultiplied colour [B,N,3] of pixels with premultiplied albedo [B,N,3],
    opacity-weighted normal [B,N,3] and opacity [B,N,1]; not yet composited on the background."""
    n = torch.nn.functional.normalize(normal, dim=-1)
    lambert = (n * lighting.light_dir.to(n.device)[:, None, :]).sum(-1, keepdim=True).clamp(min=0)
    light = ambient + diffuse * lambert
    mode = lighting.mode.to(n.device)[:, None, None]
    surface = torch.where(mode == TEXTURELESS, opacity.expand_as(albedo), albedo)
    return torch.where(mode == ALBEDO, albedo, surface * light)
