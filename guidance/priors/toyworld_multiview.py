"""ToyWorld's exact multi-view prior: the joint denoiser of N views of one object, the closed-form
counterpart of MVDream's 4-view diffusion model (Shi et al. 2023, arXiv 2308.16512).

A joint sample is one catalogue object of the prompt seen from N cameras, so the views of a sample
always agree on one object: one front marker, seen from one side only. Candidate views come from a
regular camera grid (dream3d.toyworld.dataset.grid_cameras) rendered once per shape and cached; a
query camera snaps to the nearest grid camera. Candidates K, by view conditioning:
- `camera` (MVDream: the model is given every view's camera): the prompt's objects o seen from the
  group's own cameras, x^k_o = render(o, c_k).
- `none` (the model knows only where the views sit relative to one another): the object turned by any
  grid azimuth phi, uniformly (multi-view training data are renders of 3D assets from random azimuths,
  whatever the front bias of single photos): x^k_(o,phi) = render(o, e_k, az_k - az_1 + phi).
For one group's noisy views x_t^k, each at its own timestep t_k, the posterior and the denoiser are exact:
  w_K ∝ prod_k N(x_t^k; a_(t_k) x^k_K, s_(t_k)^2 I),   D^k = sum_K w_K x^k_K,   eps^k = (x_t^k - a_(t_k) D^k) / s_(t_k).
The unconditional prompt's objects are every plain catalogue item (dream3d.toyworld.catalogue.all_items).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from dream3d.kernel.cameras import Cameras, wrap_degrees
from dream3d.toyworld.catalogue import Item, all_items
from dream3d.toyworld.dataset import DATASET_ELEVATIONS, ShapeViews, tint

JOINT_VIEW_CONDITIONING = ("camera", "none")


class JointDenoiser:
    """The exact posterior mean of groups of N views (module docstring), in pixel space [-1,1].

    `load_grid(shape)` gives a shape's grid views (dream3d.toyworld.dataset.load_grid_views), whose
    cameras are `grid_cameras(elevation_step, azimuth_steps)`."""

    def __init__(self, load_grid: Callable[[str], ShapeViews], resolution: int, elevation_step: float,
                 azimuth_steps: int, conditioning: str, device: torch.device | None = None):
        if conditioning not in JOINT_VIEW_CONDITIONING:
            raise ValueError(f"the multi-view prior's view conditioning is one of {', '.join(JOINT_VIEW_CONDITIONING)}, "
                             f"got {conditioning!r}")
        self.load_grid, self.resolution, self.conditioning = load_grid, resolution, conditioning
        self.elevation_step, self.azimuth_steps = elevation_step, azimuth_steps
        self.device = torch.device(device or "cpu")
        self._grids: dict[str, Tensor] = {}

    def grid(self, shape: str) -> Tensor:
        """A shape's geometry layers at the prior's resolution [E,A,3,r,r] (float32, cached)."""
        if shape not in self._grids:
            views = self.load_grid(shape)
            layers = views.layers.float()
            if layers.shape[-1] != self.resolution:
                layers = F.interpolate(layers, size=(self.resolution,) * 2, mode="area")
            self._grids[shape] = layers.reshape(-1, self.azimuth_steps, *layers.shape[1:]).to(self.device)
        return self._grids[shape]

    def snap(self, cameras: Cameras, elevations: int) -> tuple[Tensor, Tensor]:
        """Grid indices (elevation [B], azimuth [B]) of the grid cameras nearest to `cameras`; elevations
        outside the grid's range take its nearest row."""
        e = ((cameras.elevation - DATASET_ELEVATIONS[0]) / self.elevation_step).round().long().clamp(0, elevations - 1)
        a = (wrap_degrees(cameras.azimuth) / (360.0 / self.azimuth_steps)).round().long() % self.azimuth_steps
        return e.to(self.device), a.to(self.device)

    @staticmethod
    def objects(item: Item | None) -> list[tuple[str, str, str | None]]:
        """(shape, body colour, marker) of every object a prompt's item denotes (None: the unconditional
        prompt, every plain catalogue item)."""
        if item is None:
            return [(it.shape, it.colours[0], None) for it in all_items()]
        return [(item.shape, colour, item.marker) for colour in item.colours]

    def object_views(self, obj: tuple, e: Tensor, az: Tensor) -> Tensor:
        """One catalogue object's (shape, colour, marker) views [J,N,D] in [0,1] at grid elevation indices e [N]
        and azimuth indices az [J,N] (taken modulo the grid)."""
        shape, colour, marker = obj
        az = az % self.azimuth_steps
        layers = self.grid(shape)[e[None].expand_as(az), az]  # [J,N,3,r,r]
        return tint(layers.flatten(0, 1), colour, marker).reshape(*az.shape, -1)

    def candidates(self, item: Item | None, e: Tensor, a: Tensor) -> Tensor:
        """The candidates' views [K,N,D] in [-1,1] for one group's grid indices e, a [N]: per object, one
        candidate (`camera`) or one per grid azimuth turn (`none`)."""
        if self.conditioning == "camera":
            az = a[None]  # [1,N]
        else:
            az = (a - a[0])[None] + torch.arange(self.azimuth_steps, device=a.device)[:, None]  # [A,N]
        return torch.cat([self.object_views(obj, e, az) for obj in self.objects(item)]) * 2 - 1

    def image_candidates(self, ref: "ReferencePosterior", e: Tensor, a: Tensor) -> Tensor:
        """The views [K,N,D] in [-1,1] of an image-conditioned posterior's candidates from a group's grid
        indices e, a [N] (run azimuths, the reference at 0): candidate K is its object turned by its turn."""
        out = []
        for i, obj in enumerate(ref.objects):
            turns = ref.turns[ref.object_index == i]
            if len(turns):
                out.append(self.object_views(obj, e, a[None] + turns[:, None]))  # [J,N]
        return torch.cat(out) * 2 - 1

    def reference_posterior(self, image: Tensor, camera: Cameras, sigma: float, objects,
                            max_turn: float = 180.0) -> "ReferencePosterior":
        """Which catalogue objects, turned by which grid azimuth, a clean reference view explains: for image
        [3,r,r] in [0,1] seen from camera [1] (the run's azimuth 0), log w_K = -|x_ref - x_K(ref)|^2 / 2 sigma^2
        over every object and every turn of at most `max_turn` degrees either way (the reference shows the
        object's front within that), keeping those within 50 of the best (the rest weigh < e^-50)."""
        x = (image.to(self.device).reshape(-1) * 2 - 1)
        e, a = self.snap(camera, self.grid(objects[0][0]).shape[0])
        index, turns, logw = [], [], []
        step = 360.0 / self.azimuth_steps
        all_turns = torch.arange(self.azimuth_steps, device=self.device)
        all_turns = all_turns[wrap_degrees(all_turns * step).abs() <= max_turn + 1e-6]
        for i, (shape, colour, marker) in enumerate(objects):
            views = tint(self.grid(shape)[e[0], (a[0] + all_turns) % self.azimuth_steps], colour, marker)  # [A,3,r,r]
            logw.append(-((views.reshape(len(all_turns), -1) * 2 - 1 - x) ** 2).sum(-1) / (2 * sigma**2))
            index.append(torch.full_like(all_turns, i))
            turns.append(all_turns)
        logw, index, turns = torch.cat(logw), torch.cat(index), torch.cat(turns)
        keep = logw >= logw.max() - 50
        return ReferencePosterior(list(objects), index[keep], turns[keep], torch.log_softmax(logw[keep], 0))

    def denoise_group(self, x_t: Tensor, abar: Tensor, item: "Item | ReferencePosterior | None", cameras: Cameras) -> Tensor:
        """D(x_t) [N,...] of one group: x_t [N,...], abar_t [N] (a timestep per view) and cameras [N]; `item`
        is the prompt's (None: unconditional), or a reference image's posterior (image-to-3D)."""
        shape = item.objects[0][0] if isinstance(item, ReferencePosterior) else self.objects(item)[0][0]
        e, a = self.snap(cameras, self.grid(shape).shape[0])
        if isinstance(item, ReferencePosterior):
            cand, log_prior = self.image_candidates(item, e, a).to(x_t.dtype), item.log_w.to(x_t.dtype)
        else:
            cand, log_prior = self.candidates(item, e, a).to(x_t.dtype), 0.0  # [K,N,D]; uniform
        x = x_t.reshape(x_t.shape[0], -1)  # [N,D]
        a_t, s2 = abar.sqrt().to(x.dtype)[None], (1 - abar).to(x.dtype)[None]
        d2 = (x * x).sum(-1) - 2 * a_t * torch.einsum("nd,knd->kn", x, cand) + a_t**2 * (cand * cand).sum(-1)  # [K,N]
        w = torch.softmax(log_prior - (d2.clamp(min=0) / (2 * s2)).sum(-1), 0)  # [K]: the candidates' posterior
        return torch.einsum("k,knd->nd", w, cand).reshape(x_t.shape)


@dataclass(frozen=True)
class ReferencePosterior:
    """An image-conditioned prior's candidates (JointDenoiser.reference_posterior): catalogue objects
    (shape, body colour, marker), and per candidate K its object's index, its turn (grid azimuth steps
    from the run's frame to the object's) and log w_K (normalised)."""

    objects: list
    object_index: Tensor
    turns: Tensor
    log_w: Tensor
    key: str = "<image>"
