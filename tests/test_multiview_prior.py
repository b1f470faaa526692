"""ToyWorld's multi-view prior (prior.views > 1): the joint denoiser against brute force, MVDream's camera
groups, one timestep per group in the guidances, config errors, an end-to-end run."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_RUN

from dream3d.config import ConfigError, load_config
from dream3d.kernel.cameras import Cameras, CameraSampler
from dream3d.toyworld.catalogue import Item, all_items
from dream3d.toyworld.dataset import render_gt
from guidance import GuidanceConfig, build_guidance
from guidance.asd import ASDConfig
from guidance.priors.toyworld import ToyWorldPrior, ToyWorldPriorConfig

# a coarse grid keeps the candidate renders cheap: elevations -10, 17.5, 45; azimuths every 45 degrees
GRID = dict(grid_elevation_step=27.5, grid_azimuth_steps=8, dataset_resolution=16, resolution=8)


def mv_prior(conditioning: str, views: int = 4) -> ToyWorldPrior:
    return ToyWorldPrior(ToyWorldPriorConfig(views=views, view_conditioning=conditioning, **GRID))


def brute_force_denoise(objects, x_t, abar, elevation, azimuths, turns):
    """E[x_0 | x_t] of one group written out: every candidate (object, turn) rendered by ray casting at its
    own cameras (the query's elevation, the query azimuths turned by `turn` degrees), its log-likelihood
    summed over views from the explicit difference, in float64."""
    logl, imgs = [], []
    for item in objects:
        for turn in turns:
            cams = Cameras.make([elevation] * len(azimuths), [a + turn for a in azimuths])
            img, _ = render_gt(item, cams, 16)
            img = F.interpolate(img, size=(8, 8), mode="area").double() * 2 - 1  # the prior's resolution
            ll = sum(-((x_t[k].double() - math.sqrt(abar[k]) * img[k]) ** 2).sum() / (2 * (1 - abar[k]))
                     for k in range(len(azimuths)))
            logl.append(ll)
            imgs.append(img)
    w = torch.softmax(torch.stack(logl), 0)
    return sum(wi * im for wi, im in zip(w, imgs)), w


def noisy_group(item, cams, t, seed=0):
    gen = torch.Generator().manual_seed(seed)
    img, _ = render_gt(item, cams, 16)
    x = F.interpolate(img, size=(8, 8), mode="area") * 2 - 1
    prior = mv_prior("camera")
    return prior.add_noise(x, t, torch.randn(x.shape, generator=gen))


@pytest.mark.parametrize("conditioning", ["camera", "none"])
@pytest.mark.parametrize("prompt", ["a cube", "a blue cube with a yellow front", ""])
def test_joint_denoiser_matches_brute_force(conditioning, prompt):
    prior = mv_prior(conditioning)
    emb = prior.embed(prompt)
    # one group on the grid (elevation 17.5, azimuths 45 + 90k), each view at its own timestep; the query
    # cameras are off the grid by less than half a step, so they snap to it
    azimuths = [45.0, 135.0, -135.0, -45.0]
    cams = Cameras.make([17.5 + 3.0] * 4, [a - 10.0 for a in azimuths])
    t = torch.tensor([300, 420, 520, 650])
    x_t = noisy_group(Item("cube", ("green",), "yellow" if "front" in prompt else None), cams, t)
    abar = prior.alphas_cumprod[t].double()

    eps = prior.predict_eps(x_t, t, [emb] * 4, cams)
    d = prior.x0_from_eps(x_t, t, eps)

    objects = ([Item(it.shape, it.colours) for it in all_items()] if not prompt else
               [Item(emb.item.shape, (c,), emb.item.marker) for c in emb.item.colours])
    turns = [0.0] if conditioning == "camera" else [k * 45.0 - 45.0 for k in range(8)]  # relative to view 1 (45)
    expected, w = brute_force_denoise(objects, x_t, abar, 17.5, azimuths, turns)
    # the grid stores its layers in float16 (the dataset cache): agreement to 2e-3 of a [-1,1] range
    assert float((d.double() - expected).abs().max()) < 2e-3
    if conditioning == "none" or prompt != "a blue cube with a yellow front":
        assert float(w.max()) < 0.999  # several candidates share the posterior: the mixture is really tested


def test_a_janus_group_is_denoised_to_one_front():
    """Two views 180 degrees apart both showing the front marker fit no joint sample: at low noise the joint
    prior (relative cameras only) keeps the marker on one side; the single-view prior paints both."""
    item = Item("cube", ("blue",), "yellow")
    cams = Cameras.make([17.5] * 4, [0.0, 90.0, 180.0, -90.0])
    front, _ = render_gt(item, Cameras.make([17.5], [0.0]), 16)
    img, _ = render_gt(item, cams, 16)
    img[2] = front[0]  # the back view shows the front
    x = F.interpolate(img, size=(8, 8), mode="area") * 2 - 1
    prior = mv_prior("none")
    t = torch.full((4,), 200)
    d = prior.x0_from_eps(x, t, prior.predict_eps(x, t, [prior.embed("a blue cube with a yellow front")] * 4, cams))
    back, _ = render_gt(item, cams[2:3], 16)  # what the back view should show
    front_img, back_img = x[0], F.interpolate(back, size=(8, 8), mode="area")[0] * 2 - 1

    def shows_front(v):
        return float((d[v] - front_img).abs().mean()) < float((d[v] - back_img).abs().mean())

    assert shows_front(0) != shows_front(2)  # one of the two opposite views, not both


def test_camera_groups_follow_mvdream():
    cams = CameraSampler().sample_groups(3, 4, torch.Generator().manual_seed(0))
    assert len(cams) == 12
    el, az = cams.elevation.reshape(3, 4), cams.azimuth.reshape(3, 4)
    assert (el == el[:, :1]).all() and ((el >= -10) & (el <= 45)).all()
    step = (az - az[:, :1]) % 360
    assert torch.allclose(step, torch.tensor([0.0, 90.0, 180.0, 270.0]).expand(3, 4), atol=1e-3)
    assert len(set(az[:, 0].tolist())) == 3  # a random offset per group


class Recorder(ToyWorldPrior):
    """The multi-view prior, recording the timesteps of every prediction."""

    seen: list

    def predict_eps(self, x_t, t, text, cameras=None):
        self.seen.append(t.clone())
        return super().predict_eps(x_t, t, text, cameras)


@pytest.mark.parametrize("cfg", [GuidanceConfig(), ASDConfig(rho=0.5)], ids=["sds", "asd"])
def test_guidances_draw_one_timestep_per_group(cfg):
    prior = Recorder(ToyWorldPriorConfig(views=4, view_conditioning="camera", **GRID))
    prior.seen = []
    guidance = build_guidance(cfg, prior)
    cams = CameraSampler().sample_groups(2, 4, torch.Generator().manual_seed(1))
    img = torch.rand(8, 3, 8, 8, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    for step in range(3):
        guidance(img, cams, guidance.embed("a red cube"), step, gen).loss.backward()
    t = torch.cat(prior.seen).reshape(-1, 4)  # every group of 4 consecutive predictions
    assert (t == t[:, :1]).all()
    assert len(set(t[:, 0].tolist())) > 2  # but the groups differ


def test_single_view_draws_are_unchanged():
    """Group size 1 draws exactly what the sampler drew before groups existed (runs stay reproducible)."""
    from guidance.core import TimestepSampler

    s = TimestepSampler(0.02, 0.98, 1000)
    assert torch.equal(s.sample(5, 0, torch.Generator().manual_seed(3)),
                       torch.randint(20, 981, (5,), generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("overrides, message", [
    (["train.batch_size=6"], "multiple of 4"),
    (["prior.view_conditioning=text"], "camera or none"),
    (["prior.num_views=512"], "single-view dataset"),
    (["prior.grid_azimuth_steps=30"], "multiple of prior.views"),
])
def test_config_errors_say_what_to_change(overrides, message):
    base = ["prior.grid_elevation_step=5"]
    with pytest.raises(ConfigError, match=message):
        load_config("configs/toy/sds-nerf-multiview.yaml", base + overrides)


def test_run_renders_groups_and_learns(tmp_path):
    """A tiny multi-view run trains on camera groups and is deterministic."""
    from dream3d.lifecycle import start_run
    from dream3d.trainer import Trainer

    tiny = [o for o in TINY_RUN if o not in ("prior.num_views=64", "train.batch_size=2")]
    overrides = tiny + ["train.batch_size=4", "prior.grid_elevation_step=27.5", "prior.grid_azimuth_steps=8",
                        f"output.out_dir={tmp_path}", "output.turntable_frames=0", "output.export.formats=[glb]"]
    seen = []
    original = CameraSampler.sample_groups

    def spy(self, groups, views, generator):
        cams = original(self, groups, views, generator)
        seen.append(cams)
        return cams

    CameraSampler.sample_groups = spy
    try:
        a = start_run(load_config("configs/toy/sds-nerf-multiview.yaml", overrides + ["output.name=a"]))
        b = start_run(load_config("configs/toy/sds-nerf-multiview.yaml", overrides + ["output.name=b"]))
    finally:
        CameraSampler.sample_groups = original
    assert a["status"] == b["status"] == "finished"
    assert len(seen) == 12 and all(len(c) == 4 for c in seen)  # 6 steps x 2 runs, one group of 4 each
    from dream3d.lifecycle import load_run

    ta, _ = load_run(a["run_dir"])
    tb, _ = load_run(b["run_dir"])
    assert isinstance(ta, Trainer)
    for k, v in ta.scene.state_dict().items():
        assert torch.equal(v, tb.scene.state_dict()[k]), k
