"""Shared score-distillation machinery (shared/docs/guidance.md): timestep sampling, weightings
w(t), classifier-free guidance in one batched prior call, view-dependent prompt embeddings, the
stats a guidance logs, gradient clean-up and injection, and Perp-Neg (`guidance.perp_neg`) inside the
shared CFG path, so every objective that asks `cfg_predict` / `predict_cond_uncond` gets it. Each
guidance subclasses `ScoreDistillation` and overrides `gradient` (the few lines that differ); those
with trainables of their own (VSD, ESD, f-div's fake score and discriminator) also `aux_losses` and
`optimizer_groups`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor, nn

from dream3d.kernel import draws
from dream3d.kernel.cameras import DEFAULT_VIEW_THRESHOLDS, Cameras, CameraSampler, ViewThresholds, view_bucket, wrap_degrees
from dream3d.kernel.schedules import Schedule
from dream3d.kernel.schema import RUN_LENGTH_FOR_CHECKS, ConfigError, SectionConfig, bounded, choice
from guidance.priors.base import DiffusionPrior, per_sample

WEIGHTINGS = ("sds", "uniform", "fantasia3d", "ism", "a_t")


PERP_NEG_WEIGHTS = ("sb", "fsb", "fs", "sf")
PERP_NEG_VIEWS = ("front", "side", "back")  # the view prompts Perp-Neg predicts for every camera


@dataclass(frozen=True)
class PerpNegWeights:
    """Perp-Neg's negative weights f(r) = a exp(-b r) + c as (a, b, c), named as in threestudio: the
    side (sb) and front (fsb) negatives between side and back, the front (fs) and side (sf) negatives
    between front and side."""

    sb: tuple[float, float, float] = (1.0, 0.5, -0.606)
    fsb: tuple[float, float, float] = (1.0, 0.5, 0.967)
    fs: tuple[float, float, float] = (4.0, 0.5, -2.426)
    sf: tuple[float, float, float] = (4.0, 0.5, -2.426)


@dataclass
class GuidanceConfig(SectionConfig):
    """Knobs every guidance shares. Scheduled knobs take a number or [start_step, start, end, end_step]
    (steps may be shares of the run: ["20%", 0.98, 0.5, "20%"]). A method lists in IGNORED the shared
    knobs it does not read: setting one is a config error, not a silent no-op."""

    IGNORED: ClassVar[tuple[str, ...]] = ()
    name: str = "sds"
    guidance_scale: Any = bounded(1.0, 0.0, 1000.0, schedule="run")  # diffusers CFG: eps_u + w (eps_y - eps_u)
    weighting: str = choice("sds", WEIGHTINGS)
    t_min: Any = bounded(0.02, 0.0, 1.0, schedule="run")  # timestep range as fractions of T
    t_max: Any = bounded(0.98, 0.0, 1.0, schedule="run")
    grad_clip: Any = bounded(None, 0.0, None, schedule="run", nullable=True)  # elementwise clip of G, null = off
    loss_weight: float = bounded(1.0, 0.0, None)  # multiplies G (lambda_g in ISM/TSM/BSD)
    pixel_grad_clip: Any = bounded(None, 0.0, None, nullable=True)  # per-pixel clip of the render's gradient (TSM)
    view_dependent_prompt: bool = True
    # view buckets of the view-dependent prompts (degrees; DreamFusion's defaults, dream3d.kernel.cameras.view_bucket)
    view_overhead_elevation: float = bounded(60.0, -90.0, 90.0)  # "overhead view" above this elevation
    view_front_azimuth: float = bounded(45.0, 0.0, 180.0)  # "front view" below this |azimuth|
    view_back_azimuth: float = bounded(135.0, 0.0, 180.0)  # "back view" above this |azimuth|; "side view" between
    # Perp-Neg (Armandpour et al. 2023): the positive interpolated between view prompts by azimuth, the other
    # views as negatives perpendicular to it; each weight is f(r) = a exp(-b r) + c, [a, b, c] (threestudio's defaults)
    perp_neg: bool = False
    perp_neg_f_sb: list[float] = field(default_factory=lambda: list(PerpNegWeights.sb))  # side negative, side-back
    perp_neg_f_fsb: list[float] = field(default_factory=lambda: list(PerpNegWeights.fsb))  # front negative, side-back
    perp_neg_f_fs: list[float] = field(default_factory=lambda: list(PerpNegWeights.fs))  # front negative, front-side
    perp_neg_f_sf: list[float] = field(default_factory=lambda: list(PerpNegWeights.sf))  # side negative, front-side

    def validate(self) -> None:
        base = GuidanceConfig()
        for key in self.IGNORED:
            if getattr(self, key) != getattr(base, key):
                raise ConfigError(f"guidance.{key} = {getattr(self, key)!r} has no effect on {self.name} (it does not "
                                  f"read {key}); remove it or pick a method that uses it")
        if not any(isinstance(v, (list, tuple)) and any(isinstance(x, str) for x in v) for v in (self.t_min, self.t_max)):
            self.check_schedules(RUN_LENGTH_FOR_CHECKS)  # "N%" steps are checked by whoever knows the run's length
        if self.view_front_azimuth > self.view_back_azimuth:
            raise ConfigError(f"guidance.view_front_azimuth ({self.view_front_azimuth}) must be <= "
                              f"guidance.view_back_azimuth ({self.view_back_azimuth})")
        for name in PERP_NEG_WEIGHTS:
            f = getattr(self, f"perp_neg_f_{name}")
            if len(f) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in f):
                raise ConfigError(f"guidance.perp_neg_f_{name} must be [a, b, c] (f(r) = a exp(-b r) + c), got {f}")
        if self.perp_neg and not self.view_dependent_prompt:
            raise ConfigError("guidance.perp_neg=true needs guidance.view_dependent_prompt=true (its negatives are the "
                              "view prompts)")

    def check_schedules(self, total_steps: int) -> None:
        """t_min < t_max at every step of a run of `total_steps` (where shares of the run resolve), so a
        mix of absolute and "N%" steps is checked against the run's own length (dream3d/config.py)."""
        lo = Schedule.parse(self.t_min, "t_min", total_steps)
        hi = Schedule.parse(self.t_max, "t_max", total_steps)
        # both are linear between their breakpoints; a schedule with start_step == end_step jumps just after it
        for step in {0, lo.start_step, lo.end_step, lo.end_step + 1, hi.start_step, hi.end_step, hi.end_step + 1}:
            if lo(step) >= hi(step):
                raise ConfigError(f"guidance.t_min ({lo(step)}) must be < guidance.t_max ({hi(step)}) at step {step} "
                                  f"(of a {total_steps}-step run)")

    def view_thresholds(self) -> ViewThresholds:
        return ViewThresholds(self.view_overhead_elevation, self.view_front_azimuth, self.view_back_azimuth)

    def perp_neg_weights(self) -> PerpNegWeights | None:
        """The Perp-Neg weight functions, or None when Perp-Neg is off."""
        if not self.perp_neg:
            return None
        return PerpNegWeights(**{name: tuple(float(v) for v in getattr(self, f"perp_neg_f_{name}")) for name in PERP_NEG_WEIGHTS})

    def min_batch_size(self) -> int:
        """The fewest views per step the objective is itself with (f-div normalises its weights over the
        batch: with one view it is VSD)."""
        return 1

    def trains_prior_copy(self) -> bool:
        """Whether the objective trains a copy of the prior's network (VSD's LoRA fake score): a prior
        that offloads its weights (prior.cpu_offload) has no copy to give."""
        return False

    def prior_calls_per_image(self) -> float:
        """Prior predictions per rendered image and step, for the cost estimate (dream3d/cost.py):
        conditional, unconditional and one more for objectives with a second branch (Perp-Neg's two
        more view predictions are added by `perp_neg_calls`)."""
        return 3.0

    def perp_neg_calls(self) -> float:
        """Extra prior predictions per image and CFG query with Perp-Neg: three view prompts instead of one."""
        return 2.0 if self.perp_neg else 0.0

    def prior_calls_at_start(self) -> int:
        """Prior predictions made once before training (for the cost estimate)."""
        return 0


@dataclass
class GuidanceOutput:
    """`loss` injects the gradient (its value is meaningless; log stats['grad_norm'])."""

    loss: Tensor
    aux_losses: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


def weighting(name: str, alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """w(t) [B]: sds = 1-abar, uniform = 1, fantasia3d = a_t (1-abar), ism = s_t / a_t, a_t = a_t
    (BSD's factor)."""
    abar = alphas_cumprod[t]
    if name == "sds":
        return 1 - abar
    if name == "uniform":
        return torch.ones_like(abar)
    if name == "fantasia3d":
        return abar.sqrt() * (1 - abar)
    if name == "ism":
        return (1 - abar).sqrt() / abar.sqrt()
    if name == "a_t":
        return abar.sqrt()
    raise ValueError(f"unknown weighting {name!r}; valid: {', '.join(WEIGHTINGS)}")


class TimestepSampler:
    """t ~ U{t_min*T .. t_max*T} per batch element, with annealable bounds."""

    def __init__(self, t_min: Any, t_max: Any, num_timesteps: int, total_steps: int | None = None):
        self.t_min = Schedule.parse(t_min, "t_min", total_steps)
        self.t_max = Schedule.parse(t_max, "t_max", total_steps)
        self.T = num_timesteps

    def range(self, step: int) -> tuple[int, int]:
        lo = int(round(self.t_min(step) * self.T))
        hi = int(round(self.t_max(step) * self.T))
        lo, hi = max(0, min(lo, self.T - 1)), max(0, min(hi, self.T - 1))
        return lo, max(lo, hi)

    def sample(self, batch: int, step: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, group: int = 1) -> Tensor:
        """Integer timesteps [B] on `device` (drawn on the CPU: dream3d/kernel/draws.py), one per
        `group` consecutive elements (a multi-view prior's views share their timestep)."""
        if batch % group:
            raise ValueError(f"a batch of {batch} is not made of groups of {group} views")
        lo, hi = self.range(step)
        return draws.randint(lo, hi + 1, (batch // group,), generator, device).repeat_interleave(group)


def _decay(f: tuple[float, float, float], r: Tensor) -> Tensor:
    a, b, c = f
    return a * torch.exp(-b * r) + c


def perp_neg_mix(elevation: Tensor, azimuth: Tensor, weights: PerpNegWeights,
                 thresholds: ViewThresholds = DEFAULT_VIEW_THRESHOLDS) -> tuple[Tensor, Tensor, Tensor]:
    """Perp-Neg's per-camera mix over the view predictions (front, side, back), for cameras [B]
    (degrees): (overhead [B] bool, p [B,3], w [B,3]); the positive is sum_k p_k eps_k, the negative
    directions are the eps_k with weights w_k.
    |azimuth| < 90: r = 1 - |az|/90 (1 = front), p = (r, 1-r, 0), w = (f_fs(r), f_sf(1-r), 0);
    else r = 2 - |az|/90 (1 = side, 0 = back), p = (0, r, 1-r), w = (f_fsb(r), f_sb(r), 0);
    overhead cameras (elevation > thresholds.overhead): the overhead prompt alone, p = (1,0,0), w = 0.
    The azimuth thresholds do not enter: the interpolation is continuous in azimuth (as threestudio)."""
    az = wrap_degrees(azimuth.float()).abs()
    r = torch.where(az < 90, 1 - az / 90, 2 - az / 90)
    zero = torch.zeros_like(r)
    front_side = az < 90
    p = torch.where(front_side[:, None], torch.stack([r, 1 - r, zero], -1), torch.stack([zero, r, 1 - r], -1))
    w = torch.where(front_side[:, None], torch.stack([_decay(weights.fs, r), _decay(weights.sf, 1 - r), zero], -1),
                    torch.stack([_decay(weights.fsb, r), _decay(weights.sb, r), zero], -1))
    overhead = elevation.float() > thresholds.overhead
    p = torch.where(overhead[:, None], torch.tensor([1.0, 0.0, 0.0], device=p.device), p)
    w = torch.where(overhead[:, None], zero[:, None], w)
    return overhead, p, w


def perpendicular(a: Tensor, b: Tensor) -> Tensor:
    """The component of a perpendicular to b, per sample: a - (<a,b> / |b|^2) b, for a, b [B,...]
    (a itself where b = 0)."""
    dims = tuple(range(1, a.ndim))
    coef = (a * b).sum(dims, keepdim=True) / (b * b).sum(dims, keepdim=True).clamp(min=1e-30)
    return a - coef * b


def perp_neg_direction(eps_views: Sequence[Tensor], eps_u: Tensor, p: Tensor, w: Tensor) -> Tensor:
    """Perp-Neg's guidance direction [B,...] (Armandpour et al. 2023, arXiv 2304.04968, with the
    azimuth interpolation of its 2D-to-3D part): delta_pos - sum_k w_k perp(eps_k - eps_u, delta_pos),
    delta_pos = sum_k p_k eps_k - eps_u; eps_views: the K view predictions [B,...], p, w [B,K].
    The positive is interpolated between view prompts in prediction space (works for any prior, whose
    embeddings are opaque); threestudio interpolates the text embeddings and predicts once."""
    shape = (-1,) + (1,) * (eps_u.ndim - 1)
    p, w = p.to(eps_u), w.to(eps_u)
    delta_pos = sum(p[:, k].reshape(shape) * e for k, e in enumerate(eps_views)) - eps_u
    return delta_pos - sum(w[:, k].reshape(shape) * perpendicular(e - eps_u, delta_pos) for k, e in enumerate(eps_views))


class Conditioning:
    """A prompt and its negative, embedded once per distinct (view-dependent) text and cached; the
    view buckets' thresholds, and Perp-Neg's weights when it is on."""

    def __init__(self, prior: DiffusionPrior, prompt: str, negative: str = "", view_dependent: bool = True,
                 thresholds: ViewThresholds = DEFAULT_VIEW_THRESHOLDS, perp_neg: PerpNegWeights | None = None,
                 image: Any = None):
        """`image`: a reference view's embedding (prior.embed_image, image-to-3D); the conditional branch then
        uses it for every camera in place of the (view-dependent) prompt."""
        if perp_neg is not None and not view_dependent:
            raise ValueError("Perp-Neg needs view-dependent prompts: its negatives are the view prompts")
        if perp_neg is not None and image is not None:
            raise ValueError("Perp-Neg's negatives are view prompts; an image-conditioned run has none")
        self.prior, self.prompt, self.negative, self.view_dependent = prior, prompt, negative, view_dependent
        self.thresholds, self.perp_neg, self.image = thresholds, perp_neg, image
        self._cache: dict[str, Any] = {}
        self.embedding(prompt)  # validate early: a bad prompt fails before any work

    def embedding(self, text: str) -> Any:
        if text not in self._cache:
            self._cache[text] = self.prior.embed(text)
        return self._cache[text]

    def view_text(self, bucket: str) -> str:
        return f"{self.prompt}, {bucket} view"

    def view_prompt(self, elevation: float, azimuth: float) -> str:
        return self.view_text(view_bucket(elevation, azimuth, self.thresholds)) if self.view_dependent else self.prompt

    def cond(self, cameras: Cameras) -> list[Any]:
        if self.image is not None:
            return [self.image] * len(cameras)
        return [self.embedding(self.view_prompt(float(e), float(a))) for e, a in zip(cameras.elevation, cameras.azimuth)]

    def plain(self, cameras: Cameras) -> list[Any]:
        """The prompt without view suffixes, one per camera (a fake score conditions on the camera itself)."""
        return [self.embedding(self.prompt)] * len(cameras)

    def uncond(self, cameras: Cameras) -> list[Any]:
        """The CFG branch: the negative prompt when one is given, else the empty prompt."""
        return [self.embedding(self.negative)] * len(cameras)

    def empty(self, cameras: Cameras) -> list[Any]:
        """The empty prompt (DDIM inversion always uses it)."""
        return [self.embedding("")] * len(cameras)

    def perp_neg_views(self, cameras: Cameras) -> tuple[list[list[Any]], Tensor, Tensor]:
        """Perp-Neg's queries: the embeddings of the front, side and back view prompts (3 lists of B;
        the overhead prompt for overhead cameras) and the mix p, w [B,3] of `perp_neg_mix`."""
        overhead, p, w = perp_neg_mix(cameras.elevation, cameras.azimuth, self.perp_neg, self.thresholds)
        views = [[self.embedding(self.view_text("overhead" if up else v)) for up in overhead.tolist()] for v in PERP_NEG_VIEWS]
        return views, p, w


Query = tuple[Tensor, Tensor, list]  # (x_t [B,...], t [B], one embedding per element)


def predict_batched(prior: DiffusionPrior, queries: list[Query], cameras: Cameras) -> list[Tensor]:
    """Noise predictions for several (x_t, t, texts) queries over the same B cameras, from ONE
    prior call on their concatenation (k*B); returns k tensors [B,...]."""
    with torch.no_grad():
        if len(queries) == 1:
            x, t, texts = queries[0]
            return [prior.predict_eps(x, t, texts, cameras)]
        eps = prior.predict_eps(torch.cat([q[0] for q in queries]), torch.cat([q[1] for q in queries]),
                                [e for q in queries for e in q[2]], cameras.repeat(len(queries)))
        return list(eps.chunk(len(queries)))


def _perp_neg_predict(prior: DiffusionPrior, x_t: Tensor, t: Tensor, cond: Conditioning, cameras: Cameras,
                      extra: Sequence[Query]) -> tuple[Tensor, Tensor, list[Tensor]]:
    """(eps_u, Perp-Neg's direction, extra_eps) from ONE prior call on [front; side; back; uncond;
    extra queries] (4B + extra)."""
    views, p, w = cond.perp_neg_views(cameras)
    eps = predict_batched(prior, [*((x_t, t, v) for v in views), (x_t, t, cond.uncond(cameras)), *extra], cameras)
    eps_u = eps[len(views)]
    return eps_u, perp_neg_direction(eps[:len(views)], eps_u, p, w), eps[len(views) + 1:]


def predict_cond_uncond(prior: DiffusionPrior, x_t: Tensor, t: Tensor, cond: Conditioning, cameras: Cameras,
                        extra: Sequence[Query] = ()) -> list[Tensor]:
    """[eps_y, eps_u, *extra_eps], each [B,...], from ONE prior call on [cond; uncond; extra
    queries] (u: the negative prompt when one is given, else the empty prompt). With Perp-Neg
    (cond.perp_neg) eps_y is the effective conditional eps_u + Perp-Neg's direction, so every
    objective built on eps_y - eps_u (CFG, CSD, BSD) uses it; NFSD builds its own queries and refuses it)."""
    if cond.perp_neg is not None:
        eps_u, direction, rest = _perp_neg_predict(prior, x_t, t, cond, cameras, extra)
        return [eps_u + direction, eps_u, *rest]
    return predict_batched(prior, [(x_t, t, cond.cond(cameras)), (x_t, t, cond.uncond(cameras)), *extra], cameras)


def cfg_predict(prior: DiffusionPrior, x_t: Tensor, t: Tensor, cond: Conditioning, cameras: Cameras,
                scale: float, extra: Sequence[Query] = ()) -> tuple[Tensor, ...]:
    """(eps_w, eps_y, eps_u, *extra_eps) with eps_w = eps_u + scale (eps_y - eps_u), from ONE
    prior call on [cond; uncond; extra queries]. At scale 1 eps_w = eps_y exactly, the
    unconditional half is skipped and eps_u is None. With Perp-Neg (cond.perp_neg; at any scale):
    eps_w = eps_u + scale * perp_neg_direction, eps_y = eps_u + perp_neg_direction."""
    if cond.perp_neg is not None:
        eps_u, direction, rest = _perp_neg_predict(prior, x_t, t, cond, cameras, extra)
        return (eps_u + scale * direction, eps_u + direction, eps_u, *rest)
    if scale == 1.0:
        eps = predict_batched(prior, [(x_t, t, cond.cond(cameras)), *extra], cameras)
        return (eps[0], eps[0], None, *eps[1:])
    eps_y, eps_u, *rest = predict_cond_uncond(prior, x_t, t, cond, cameras, extra)
    return (eps_u + scale * (eps_y - eps_u), eps_y, eps_u, *rest)


def batch_stats(t: Tensor, **means: Tensor) -> dict[str, float]:
    """What a guidance logs: the mean timestep of t [B] and the batch mean of each named tensor."""
    return {"t": float(t.float().mean()), **{k: float(v.mean()) for k, v in means.items()}}


def clip_pixel_gradients(grad: Tensor, tau: float) -> Tensor:
    """Pixel-wise gradient clipping (Dreamer XL / TSM): scale each pixel's gradient vector of a
    render [B,C,H,W] by min_c min(1, tau / |g_c|), keeping its direction."""
    scale = (tau / grad.abs().clamp(min=1e-12)).clamp(max=1.0).amin(1, keepdim=True)
    return grad * scale


def inject_gradient(x: Tensor, grad: Tensor) -> Tensor:
    """loss = 0.5 |x - stopgrad(x - G)|^2 / B, so d loss / d x = G / B."""
    target = (x - grad).detach()
    return 0.5 * ((x - target) ** 2).sum() / x.shape[0]


@dataclass(frozen=True)
class RunContext:
    """What a guidance may know of the run it serves: its length (`train.steps`, for schedules written
    in shares of the run) and its camera distribution (f-div's teacher bank covers it)."""

    total_steps: int | None = None
    cameras: CameraSampler = field(default_factory=CameraSampler)


class ScoreDistillation(nn.Module):
    """Base of every guidance: encode renders, ask `gradient` for G, clean it, inject it."""

    def __init__(self, cfg: GuidanceConfig, prior: DiffusionPrior, run: RunContext | None = None):
        super().__init__()
        self.cfg = cfg
        self.run = run or RunContext()
        # not registered as a submodule: a frozen prior (e.g. a diffusers UNet) must not be
        # optimised with the guidance's own trainables nor saved in its checkpoints
        self.__dict__["prior"] = prior
        self.timesteps = TimestepSampler(cfg.t_min, cfg.t_max, prior.num_timesteps, self.run.total_steps)
        self.guidance_scale = self.schedule(cfg.guidance_scale, "guidance_scale")
        self.grad_clip = None if cfg.grad_clip is None else self.schedule(cfg.grad_clip, "grad_clip")

    def set_timestep_range(self, t_min: Any, t_max: Any) -> None:
        """Draw t from [t_min, t_max] (fractions of T, numbers or schedules) from now on: a later stage's own
        range (the trainer's mesh refinement, refine.t_min / t_max)."""
        self.timesteps = TimestepSampler(t_min, t_max, self.prior.num_timesteps, self.run.total_steps)

    def schedule(self, value: Any, name: str) -> Schedule:
        """A scheduled knob, its "N%" steps resolved against the run's length."""
        return Schedule.parse(value, name, self.run.total_steps)

    def embed(self, prompt: str, negative: str = "", image: Any = None) -> Conditioning:
        """The run's conditioning; `image`: a reference view's embedding (prior.embed_image) for image-to-3D."""
        return Conditioning(self.prior, prompt, negative, self.cfg.view_dependent_prompt, self.cfg.view_thresholds(),
                            self.cfg.perp_neg_weights(), image)

    def weight(self, t: Tensor, ndim: int) -> Tensor:
        """w(t) of the configured weighting, shaped [B,1,...] to broadcast over x."""
        return per_sample(weighting(self.cfg.weighting, self.prior.alphas_cumprod, t), ndim)

    def group_rand(self, batch: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """U[0,1) draws [B], one per group of the prior's joint views (for a guidance's own random
        timestep offsets, which a multi-view group shares like its timestep)."""
        n = self.prior.joint_views
        return draws.rand((batch // n,), generator, device).repeat_interleave(n)

    def sample_t(self, batch: int, step: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """Timesteps [B] from the timestep sampler, one per group of the prior's joint views (MVDream
        noises a group's views at one timestep)."""
        return self.timesteps.sample(batch, step, generator, device, self.prior.joint_views)

    def noised(self, x: Tensor, step: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        """(t [B], noise [B,...], x_t [B,...]) with t from `sample_t` and fresh Gaussian noise."""
        t = self.sample_t(x.shape[0], step, generator, x.device)
        noise = draws.randn(x.shape, generator, x.device)
        return t, noise, self.prior.add_noise(x, t, noise)

    def gradient(self, x: Tensor, cameras: Cameras, cond: Conditioning, step: int,
                 generator: torch.Generator | None) -> tuple[Tensor, dict[str, float]]:
        """G [B,...] with respect to x [B,...] (detached, prior space), and stats to log; the
        one method every guidance overrides."""
        raise NotImplementedError

    def forward(self, img: Tensor, cameras: Cameras, cond: Conditioning, step: int,
                generator: torch.Generator | None = None) -> GuidanceOutput:
        """Renders img [B,3,H,W] in [0,1] (with a graph) -> the injecting loss, aux losses and stats."""
        if self.cfg.pixel_grad_clip is not None and img.requires_grad:
            tau = float(self.cfg.pixel_grad_clip)
            img.register_hook(lambda g: clip_pixel_gradients(g, tau))
        x = self.prior.encode(img)
        grad, stats = self.gradient(x.detach(), cameras, cond, step, generator)
        grad = torch.nan_to_num(grad * self.cfg.loss_weight, nan=0.0, posinf=0.0, neginf=0.0)
        if self.grad_clip is not None:
            c = self.grad_clip(step)
            grad = grad.clamp(-c, c)
        stats["grad_norm"] = float(grad.norm())
        aux = self.aux_losses(x.detach(), cameras, cond, step, generator)
        stats.update({f"{k}_loss": float(v.detach()) for k, v in aux.items()})
        return GuidanceOutput(inject_gradient(x, grad), aux, stats)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Buffers registered empty are drawn lazily (their shape is known only then, e.g. CDS's
        fixed noise, f-div's teacher bank): adopt the checkpoint's tensor for them first."""
        for name, buf in self.named_buffers(recurse=False):
            if buf.numel() == 0 and name in state_dict:
                setattr(self, name, state_dict[name].to(buf.device, copy=True))
        return super().load_state_dict(state_dict, strict, assign)

    def aux_losses(self, x: Tensor, cameras: Cameras, cond: Conditioning, step: int,
                   generator: torch.Generator | None) -> dict[str, Tensor]:
        """Losses for the guidance's own trainables (e.g. a fake score) on detached x."""
        return {}

    def optimizer_groups(self) -> list[dict]:
        """Parameter groups (with learning rates) of the guidance's own trainables: none here; a
        guidance with trainables overrides it (VSD, f-div)."""
        if next(self.parameters(), None) is not None:
            raise NotImplementedError(f"{type(self).__name__} has trainables: it must override optimizer_groups")
        return []
