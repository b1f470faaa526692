"""ToyWorld's closed-form diffusion prior (shared/docs/toyworld.md).

For the dataset images x_i of a prompt, the noised marginal is p_t(x) = mean_i N(x; a_t x_i, s_t^2 I)
and its optimal denoiser is exact: D(x_t) = sum_i softmax_i(-|x_t - a_t x_i|^2 / 2 s_t^2) x_i,
eps = (x_t - a_t D) / s_t. Views can be weighted by camera (a log-weight added to the softmax).

View conditioning `text` keeps the dataset views in one view bucket: the one a prompt's view suffix
names (", back view"), else the query camera's. The prior's buckets are the default thresholds
(`DEFAULT_VIEW_THRESHOLDS`): like a trained text-to-image model, the prior has one fixed meaning of
"front view", and a guidance's own thresholds (guidance.view_*) only choose which prompt a camera
gets. With the defaults the two agree, so a view-dependent prompt selects its camera's bucket.

With `views` > 1 the prior is multi-view: it denoises groups of that many views jointly, exactly
(guidance/priors/toyworld_multiview.py), like MVDream's 4-view model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dream3d.kernel.cameras import VIEW_BUCKETS, Cameras, view_bucket, wrap_degrees
from dream3d.kernel.schema import ConfigError, bounded, choice
from dream3d.toyworld.catalogue import COLOURS, SHAPES, VIEW_SUFFIX, Item, all_items, parse_prompt
from dream3d.toyworld.dataset import ShapeViews, load_grid_views, load_shape_views
from guidance.priors.base import DiffusionPrior, PriorConfig, scaled_linear_alphas_cumprod
from guidance.priors.toyworld_multiview import JOINT_VIEW_CONDITIONING, JointDenoiser, ReferencePosterior

VIEW_CONDITIONING = ("none", "text", "camera")


SINGLE_VIEW_KEYS = ("num_views", "dataset_seed", "camera_distribution", "kappa", "window_azimuth", "window_elevation",
                    "min_views", "uncond_views_per_item")  # the single-view dataset's knobs


@dataclass
class ToyWorldPriorConfig(PriorConfig):
    name: str = "toyworld"
    resolution: int = bounded(32, 8, 64)  # the prior's pixel resolution; renders are area-resized to it
    num_views: int = bounded(2048, 8, 16384)  # dataset views per shape
    dataset_resolution: int = bounded(64, 8, 256)
    dataset_seed: int = bounded(0, 0, 2**32 - 1)
    camera_distribution: str = choice("uniform", ("uniform", "front_biased"))
    kappa: float = bounded(2.0, 0.0, 100.0)  # von Mises concentration for front_biased
    view_conditioning: str = choice("camera", VIEW_CONDITIONING)
    window_azimuth: float = bounded(15.0, 0.1, 180.0)  # camera conditioning: half-widths of the view window (deg)
    window_elevation: float = bounded(10.0, 0.1, 90.0)
    min_views: int = bounded(4, 1, 16384)  # fewer views in the window -> the nearest `min_views` are used
    uncond_views_per_item: int = bounded(256, 1, 16384)  # unconditional set: views of every catalogue item
    # > 1: multi-view, the exact joint denoiser of groups of this many views (view_conditioning camera or none)
    views: int = bounded(1, 1, 12)
    grid_elevation_step: float = bounded(2.5, 0.5, 55.0)  # multi-view: the candidate cameras' grid (degrees)
    grid_azimuth_steps: int = bounded(72, 4, 720)  # multi-view: grid azimuths over 360 degrees
    image_sigma: float = bounded(0.05, 0.001, 1.0)  # image-to-3D: the reference view's noise in the posterior ([-1,1] units)
    image_max_turn: float = bounded(45.0, 0.0, 180.0)  # image-to-3D: the reference shows the front within this (degrees)

    def joint_views(self) -> int:
        return self.views

    def validate(self) -> None:
        base = ToyWorldPriorConfig()
        if self.views == 1:  # the camera grid also serves image-to-3D runs (embed_image)
            return
        if self.view_conditioning not in JOINT_VIEW_CONDITIONING:
            raise ConfigError(f"prior.views={self.views} (multi-view) takes prior.view_conditioning "
                              f"{' or '.join(JOINT_VIEW_CONDITIONING)}, got {self.view_conditioning!r}")
        if self.grid_azimuth_steps % self.views:
            raise ConfigError(f"prior.grid_azimuth_steps ({self.grid_azimuth_steps}) must be a multiple of prior.views "
                              f"({self.views}): a group's views lie 360/{self.views} degrees apart on the grid")
        for key in SINGLE_VIEW_KEYS:
            if getattr(self, key) != getattr(base, key):
                raise ConfigError(f"prior.{key} is a knob of the single-view dataset; the multi-view prior "
                                  f"(prior.views={self.views}) renders its candidates from a camera grid "
                                  f"(prior.grid_elevation_step, prior.grid_azimuth_steps): remove it")


@dataclass(frozen=True)
class ToyWorldEmbedding:
    """The item a prompt denotes, or None for the unconditional (empty) prompt, and the view bucket
    its suffix names (", side view" -> "side"), if any."""

    item: Item | None
    view: str | None = None

    @property
    def key(self) -> str:
        return self.item.key if self.item else "<uncond>"


@dataclass
class _ViewSet:
    x: Tensor  # [N,D] images in [-1,1]
    sq_norm: Tensor  # [N]
    elevation: Tensor  # [N]
    azimuth: Tensor  # [N]
    buckets: Tensor | None = None  # [N] index in VIEW_BUCKETS (default thresholds), computed when first needed


class ToyWorldPrior(DiffusionPrior):
    """Exact noise prediction for ToyWorld prompts, in pixel space x = img*2-1 [B,3,r,r]."""

    def __init__(self, cfg: ToyWorldPriorConfig | None = None, progress: bool = False,
                 device: torch.device | None = None):
        """`device`: where the view sets live and the closed form is computed (default the CPU)."""
        self.cfg = cfg or ToyWorldPriorConfig()
        self.device = torch.device(device or "cpu")
        if self.cfg.view_conditioning not in VIEW_CONDITIONING:
            raise ValueError(f"view_conditioning {self.cfg.view_conditioning!r}; valid: {', '.join(VIEW_CONDITIONING)}")
        self.alphas_cumprod = scaled_linear_alphas_cumprod().to(self.device)
        self.progress = progress
        self._sets: dict[str, _ViewSet] = {}
        self._shapes: dict[str, ShapeViews] = {}
        self._grid: JointDenoiser | None = None  # the camera-grid closed form: multi-view and image-to-3D
        self.joint = self.grid_denoiser() if self.cfg.views > 1 else None

    @property
    def joint_views(self) -> int:
        return self.cfg.views

    def grid_denoiser(self) -> JointDenoiser:
        """The closed form over the camera grid's candidates (guidance/priors/toyworld_multiview.py), built once."""
        if self._grid is None:
            c = self.cfg
            self._grid = JointDenoiser(
                lambda shape: load_grid_views(shape, c.grid_elevation_step, c.grid_azimuth_steps, c.dataset_resolution,
                                              self.progress),
                c.resolution, c.grid_elevation_step, c.grid_azimuth_steps,
                c.view_conditioning if c.views > 1 else "camera", device=self.device)
        return self._grid

    def embed_image(self, image: Tensor, camera: Cameras) -> ReferencePosterior:
        """Image-to-3D: the posterior over catalogue objects (every shape, body colour and front marker) and
        their turns that a reference view explains, image [3,H,W] in [0,1] on white, seen from camera [1]
        (azimuth 0 of the run). Predictions with this embedding are the exact denoiser of a novel view (or a
        group of views) given the reference: Zero123's kind of prior. The prompt plays no part. The reference
        is taken to show the object's front, turned by at most prior.image_max_turn: from the front alone, a
        cube's plain back and the same cube turned round with a coloured front behind it look alike."""
        r = self.cfg.resolution
        img = F.interpolate(image[None].float(), size=(r, r), mode="area" if image.shape[-1] > r else "bilinear")[0]
        objects = [(shape, colour, marker) for shape in SHAPES for colour in COLOURS
                   for marker in (None, *(m for m in COLOURS if m != colour))]
        return self.grid_denoiser().reference_posterior(img, camera.to(self.device), self.cfg.image_sigma, objects,
                                                        self.cfg.image_max_turn)

    # -- prior-space mapping -------------------------------------------------------------
    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (3, self.cfg.resolution, self.cfg.resolution)

    def encode(self, img: Tensor) -> Tensor:
        r = self.cfg.resolution
        if img.shape[-2:] != (r, r):
            img = F.interpolate(img, size=(r, r), mode="area" if img.shape[-1] > r else "bilinear")
        return img * 2 - 1

    def decode(self, x: Tensor) -> Tensor:
        return ((x + 1) / 2).clamp(0, 1)

    def embed(self, prompt: str) -> ToyWorldEmbedding:
        suffix = VIEW_SUFFIX.search(prompt.strip())
        return ToyWorldEmbedding(parse_prompt(prompt) if prompt.strip() else None, suffix and suffix.group(1).lower())

    # -- data ------------------------------------------------------------------------------
    def _shape(self, shape: str) -> ShapeViews:
        if shape not in self._shapes:
            c = self.cfg
            self._shapes[shape] = load_shape_views(
                shape, c.num_views, c.dataset_resolution, c.dataset_seed, c.camera_distribution, c.kappa, self.progress
            )
        return self._shapes[shape]

    def view_set(self, emb: ToyWorldEmbedding) -> _ViewSet:
        """The images S(y) of an embedding (cached): all colours of the item, or the subsampled
        union of every catalogue item for the unconditional prompt."""
        if emb.key in self._sets:
            return self._sets[emb.key]
        r = self.cfg.resolution
        parts = []
        if emb.item is None:
            rng = np.random.default_rng(self.cfg.dataset_seed)
            for it in all_items():
                sv = self._shape(it.shape)
                n = len(sv.elevation)
                idx = torch.from_numpy(np.sort(rng.choice(n, min(self.cfg.uncond_views_per_item, n), replace=False)))
                parts.append((sv.images(it.colours[0], None, r)[idx], sv.elevation[idx], sv.azimuth[idx]))
        else:
            sv = self._shape(emb.item.shape)
            for colour in emb.item.colours:
                parts.append((sv.images(colour, emb.item.marker, r), sv.elevation, sv.azimuth))
        x = torch.cat([p[0] for p in parts]).reshape(sum(len(p[0]) for p in parts), -1).to(self.device) * 2 - 1
        vs = _ViewSet(x, (x * x).sum(-1), torch.cat([p[1] for p in parts]).to(self.device),
                      torch.cat([p[2] for p in parts]).to(self.device))
        self._sets[emb.key] = vs
        return vs

    def view_log_weights(self, vs: _ViewSet, cameras: Cameras | None, batch: int,
                         views: Sequence[str | None] | None = None) -> Tensor:
        """Log-weights [B,N] of dataset views for each query (0 = in, -inf = out). `views`: per query,
        the bucket its prompt names or None (`text` conditioning; None: the camera's bucket)."""
        n = vs.x.shape[0]
        mode = self.cfg.view_conditioning
        views = list(views) if views is not None else [None] * batch
        if mode == "none" or (cameras is None and (mode == "camera" or None in views)):
            return torch.zeros(batch, n, device=self.device)
        if mode == "text":
            if cameras is not None:
                views = [v or view_bucket(float(e), float(a)) for v, e, a in zip(views, cameras.elevation, cameras.azimuth)]
            if vs.buckets is None:
                vs.buckets = torch.tensor([VIEW_BUCKETS.index(view_bucket(float(e), float(a)))
                                           for e, a in zip(vs.elevation, vs.azimuth)], device=self.device)
            query = torch.tensor([VIEW_BUCKETS.index(v) for v in views], device=self.device)
            keep = query[:, None] == vs.buckets[None]
            # a bucket with no dataset views (overhead) falls back to all views
            keep[~keep.any(-1)] = True
            return torch.where(keep, 0.0, -math.inf)
        cameras = cameras.to(self.device)
        d_az = wrap_degrees(vs.azimuth[None] - cameras.azimuth[:, None]).abs()
        d_el = (vs.elevation[None] - cameras.elevation[:, None]).abs()
        keep = (d_az < self.cfg.window_azimuth) & (d_el < self.cfg.window_elevation)
        k = min(self.cfg.min_views, n)
        nearest = torch.zeros_like(keep)
        nearest.scatter_(1, (d_az**2 + d_el**2).topk(k, dim=1, largest=False).indices, True)
        keep = torch.where(keep.sum(-1, keepdim=True) >= k, keep, keep | nearest)
        return torch.where(keep, 0.0, -math.inf)

    # -- the closed form -------------------------------------------------------------------
    def logits(self, x_t: Tensor, t: Tensor, vs: _ViewSet, log_w: Tensor) -> Tensor:
        """Posterior logits over dataset views [B,N]: -|x_t - a_t x_i|^2 / 2 s_t^2 + log w_i."""
        abar = self.alphas_cumprod[t].to(x_t.dtype)[:, None]
        xf = x_t.reshape(x_t.shape[0], -1)
        d2 = (xf * xf).sum(-1, keepdim=True) - 2 * abar.sqrt() * (xf @ vs.x.T.to(xf.dtype)) + abar * vs.sq_norm[None].to(xf.dtype)
        return -d2.clamp(min=0) / (2 * (1 - abar)) + log_w.to(xf.dtype)

    def denoise(self, x_t: Tensor, t: Tensor, emb: ToyWorldEmbedding, cameras: Cameras | None = None,
                views: Sequence[str | None] | None = None) -> Tensor:
        """The exact posterior mean D(x_t) = E[x_0 | x_t] [B,...]; `views` per query as in
        `view_log_weights` (default: emb's own view for every query)."""
        vs = self.view_set(emb)
        views = [emb.view] * x_t.shape[0] if views is None else views
        w = torch.softmax(self.logits(x_t, t, vs, self.view_log_weights(vs, cameras, x_t.shape[0], views)), -1)
        return (w @ vs.x.to(w.dtype)).reshape(x_t.shape)

    def log_prob(self, x_t: Tensor, t: Tensor, emb: ToyWorldEmbedding, cameras: Cameras | None = None) -> Tensor:
        """log p_t(x_t) [B] of the (camera-weighted) mixture; single-view priors only."""
        if self.joint is not None:
            raise NotImplementedError("log_prob is the single-view mixture's density; the multi-view prior "
                                      "(prior.views > 1) has a joint one per group: use prior.views=1")
        vs = self.view_set(emb)
        log_w = self.view_log_weights(vs, cameras, x_t.shape[0], [emb.view] * x_t.shape[0])
        log_w = log_w - torch.logsumexp(log_w, -1, keepdim=True)
        abar = self.alphas_cumprod[t].to(x_t.dtype)
        dim = x_t[0].numel()
        return torch.logsumexp(self.logits(x_t, t, vs, log_w), -1) - 0.5 * dim * torch.log(2 * math.pi * (1 - abar))

    @torch.no_grad()
    def predict_eps(self, x_t: Tensor, t: Tensor, text: Sequence[ToyWorldEmbedding], cameras: Cameras | None = None) -> Tensor:
        x, t = x_t.to(self.device), t.to(self.device)
        cameras = cameras.to(self.device) if cameras is not None else None
        eps = torch.empty_like(x)
        a, s = self.coefficients(t, x.ndim)
        if self.joint is not None:
            return ((x - a * self._denoise_grouped(x, t, text, cameras, self.cfg.views)) / s).to(x_t.device)
        for key in dict.fromkeys(e.key for e in text):
            idx = torch.tensor([i for i, e in enumerate(text) if e.key == key], device=self.device)
            emb = next(e for e in text if e.key == key)
            cams = cameras[idx] if cameras is not None else None
            if isinstance(emb, ReferencePosterior):  # image-to-3D: each view alone, given the reference
                d = self._denoise_grouped(x[idx], t[idx], [emb] * len(idx), cams, 1)
            else:
                d = self.denoise(x[idx], t[idx], emb, cams, [text[i].view for i in idx.tolist()])
            eps[idx] = (x[idx] - a[idx] * d) / s[idx]
        return eps.to(x_t.device)

    def _denoise_grouped(self, x_t: Tensor, t: Tensor, text: Sequence, cameras: Cameras | None, n: int) -> Tensor:
        """The camera grid's posterior mean [B,...] over groups of `n` consecutive samples, one prompt or
        reference image per group (view suffixes are ignored: the cameras say where each view is)."""
        if cameras is None or x_t.shape[0] % n:
            raise ValueError(f"the multi-view and image-conditioned ToyWorld prior denoises groups of {n} view(s) with "
                             f"their cameras; got {x_t.shape[0]} samples{' and no cameras' if cameras is None else ''}")
        out = torch.empty_like(x_t)
        for g in range(0, x_t.shape[0], n):
            keys = {e.key for e in text[g:g + n]}
            if len(keys) > 1:
                raise ValueError(f"the views of one group must share a prompt; group {g // n} has {sorted(keys)}")
            sl = slice(g, g + n)
            cond = text[g] if isinstance(text[g], ReferencePosterior) else text[g].item
            out[sl] = self.grid_denoiser().denoise_group(x_t[sl], self.alphas_cumprod[t[sl]], cond, cameras[sl])
        return out
