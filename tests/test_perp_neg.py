"""Perp-Neg (Armandpour et al. 2023) in the shared CFG path: SDS gradients recomputed by hand, with
one prior call per view prompt and sample and the weights written out as numbers, on ToyWorld and on
a tiny Stable Diffusion pipeline; Perp-Neg off is today's CFG bit for bit; configurable view buckets."""
import math

import pytest
import torch

from dream3d.kernel.cameras import Cameras, ViewThresholds, view_bucket
from dream3d.kernel.schema import ConfigError
from guidance import SDS, GuidanceConfig
from guidance.core import cfg_predict, inject_gradient, predict_batched
from guidance.priors import ToyWorldPrior, ToyWorldPriorConfig

PROMPT = "a blue cube with a yellow front"
# (elevation, azimuth): front-side (twice), side-back (twice, one across +-180), overhead
CAMERAS = Cameras.make([10.0, 30.0, 0.0, 20.0, 70.0], [20.0, -70.0, 120.0, 190.0, 100.0])


@pytest.fixture(scope="module")
def prior():
    return ToyWorldPrior(ToyWorldPriorConfig(num_views=64, dataset_resolution=16, resolution=8, view_conditioning="text",
                                             uncond_views_per_item=2))


def by_hand_mix(elevation: float, azimuth: float) -> tuple[dict, dict]:
    """(positive weights, negative weights) per view word for one camera, from the paper's / threestudio's
    defaults written out: f(r) = a exp(-b r) + c with f_fs = f_sf = (4, 0.5, -2.426), f_sb = (1, 0.5, -0.606),
    f_fsb = (1, 0.5, 0.967)."""
    if elevation > 60:
        return {"overhead": 1.0}, {}
    az = abs((azimuth + 180) % 360 - 180)
    if az < 90:
        r = 1 - az / 90
        return {"front": r, "side": 1 - r}, {"front": 4 * math.exp(-0.5 * r) - 2.426,
                                              "side": 4 * math.exp(-0.5 * (1 - r)) - 2.426}
    r = 2 - az / 90
    return {"side": r, "back": 1 - r}, {"side": math.exp(-0.5 * r) - 0.606, "front": math.exp(-0.5 * r) + 0.967}


def by_hand_eps_w(prior, prompt, x_t, t, cams, scale, negative=""):
    """eps_w per sample: eps_u + scale (d_pos - sum_i w_i perp(d_i, d_pos)), every prediction its own prior call."""
    out = []
    for b in range(x_t.shape[0]):
        xb, tb, cb = x_t[b:b + 1], t[b:b + 1], cams[b:b + 1]

        def eps(text):
            return prior.predict_eps(xb, tb, [prior.embed(text)], cb).double().flatten()

        pos, neg = by_hand_mix(float(cb.elevation), float(cb.azimuth))
        eps_u = eps(negative)
        d_pos = sum(p * eps(f"{prompt}, {v} view") for v, p in pos.items()) - eps_u
        direction = d_pos.clone()
        for v, w in neg.items():
            d = eps(f"{prompt}, {v} view") - eps_u
            direction -= w * (d - (d @ d_pos) / (d_pos @ d_pos) * d_pos)
        out.append((eps_u + scale * direction).reshape(x_t.shape[1:]))
    return torch.stack(out).float()


@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_sds_perp_neg_gradient_by_hand_toyworld(prior, scale):
    B = len(CAMERAS)
    sds = SDS(GuidanceConfig(guidance_scale=scale, perp_neg=True, t_min=0.2, t_max=0.6), prior)
    cond = sds.embed(PROMPT)
    img = torch.rand(B, 3, 8, 8, generator=torch.Generator().manual_seed(3), requires_grad=True)
    out = sds(img, CAMERAS, cond, step=0, generator=torch.Generator().manual_seed(5))
    out.loss.backward()
    g = torch.Generator().manual_seed(5)  # replay the draws: t, then the noise
    t = torch.randint(200, 601, (B,), generator=g)
    noise = torch.randn(B, 3, 8, 8, generator=g)
    abar = prior.alphas_cumprod[t][:, None, None, None]
    x_t = abar.sqrt() * (img.detach() * 2 - 1) + (1 - abar).sqrt() * noise
    G = (1 - abar) * (by_hand_eps_w(prior, PROMPT, x_t, t, CAMERAS, scale) - noise)
    assert torch.allclose(img.grad, 2 * G / B, atol=1e-5, rtol=1e-4)
    # the negatives matter here: plain view-dependent CFG is far from it
    eps_y = torch.cat([prior.predict_eps(x_t[b:b + 1], t[b:b + 1], cond.cond(CAMERAS[b:b + 1]), CAMERAS[b:b + 1])
                       for b in range(B)])
    eps_u = prior.predict_eps(x_t, t, cond.uncond(CAMERAS), CAMERAS)
    G_plain = (1 - abar) * (eps_u + scale * (eps_y - eps_u) - noise)
    assert ((G - G_plain).norm() / G.norm()) > 0.05


def test_sds_perp_neg_gradient_by_hand_tiny_stable_diffusion(tiny_sd):
    from guidance.priors.stable_diffusion import StableDiffusionPrior, StableDiffusionPriorConfig

    prior = StableDiffusionPrior(StableDiffusionPriorConfig(model=str(tiny_sd["eps"]), resolution=32))
    cams = CAMERAS[torch.tensor([0, 2, 4])]
    B, prompt, negative = 3, "a cube", "blur"  # short: the tiny tokenizer keeps 24 characters
    sds = SDS(GuidanceConfig(guidance_scale=7.5, perp_neg=True), prior)
    calls = []
    prior.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    img = torch.rand(B, 3, 32, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
    sds(img, cams, sds.embed(prompt, negative), step=0, generator=torch.Generator().manual_seed(7)).loss.backward()
    assert calls == [4 * B], "Perp-Neg must be one UNet call on [front; side; back; uncond] (4B)"
    g = torch.Generator().manual_seed(7)
    t = torch.randint(20, 981, (B,), generator=g)
    img2 = img.detach().clone().requires_grad_()
    x = prior.encode(img2)
    noise = torch.randn(x.shape, generator=g)
    abar = prior.alphas_cumprod[t][:, None, None, None]
    x_t = abar.sqrt() * x.detach() + (1 - abar).sqrt() * noise
    G = (1 - abar) * (by_hand_eps_w(prior, prompt, x_t, t, cams, 7.5, negative) - noise)
    inject_gradient(x, G).backward()
    assert torch.allclose(img.grad, img2.grad, atol=1e-6, rtol=1e-4)


def test_perp_neg_off_is_todays_cfg(prior):
    x_t = torch.randn(len(CAMERAS), 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([100, 300, 500, 700, 900])
    cond = SDS(GuidanceConfig(), prior).embed(PROMPT)
    assert cond.perp_neg is None
    old = [f"{PROMPT}, {view_bucket(float(e), float(a))} view" for e, a in zip(CAMERAS.elevation, CAMERAS.azimuth)]
    eps_y, eps_u = predict_batched(prior, [(x_t, t, [prior.embed(p) for p in old]),
                                           (x_t, t, [prior.embed("")] * len(CAMERAS))], CAMERAS)
    eps_w, *_ = cfg_predict(prior, x_t, t, cond, CAMERAS, 7.5)
    assert torch.equal(eps_w, eps_u + 7.5 * (eps_y - eps_u))
    assert torch.equal(cfg_predict(prior, x_t, t, cond, CAMERAS, 1.0)[0],
                       predict_batched(prior, [(x_t, t, [prior.embed(p) for p in old])], CAMERAS)[0])


def test_perp_neg_is_one_batched_call_with_extra_queries(prior):
    cond = SDS(GuidanceConfig(perp_neg=True), prior).embed(PROMPT)
    x_t, t = torch.randn(len(CAMERAS), 3, 8, 8), torch.full((len(CAMERAS),), 400)
    calls, orig = [], prior.predict_eps
    prior.predict_eps = lambda *a, **k: calls.append(a[0].shape[0]) or orig(*a, **k)
    try:
        eps_w, eps_y, eps_u, eps_e = cfg_predict(prior, x_t, t, cond, CAMERAS, 1.0, extra=[(x_t, t, cond.empty(CAMERAS))])
    finally:
        prior.predict_eps = orig
    assert calls == [5 * len(CAMERAS)] and torch.equal(eps_w, eps_y) and eps_u is not None


def test_view_thresholds_are_configurable(prior):
    # the defaults are the hard-coded DreamFusion buckets
    for el in (0.0, 59.0, 61.0):
        for az in range(-180, 181, 15):
            old = "overhead" if el > 60 else "front" if abs(az) < 45 else "back" if abs(az) > 135 else "side"
            assert view_bucket(el, az) == old == view_bucket(el, az, ViewThresholds())
    cfg = GuidanceConfig(view_front_azimuth=30.0, view_back_azimuth=150.0, view_overhead_elevation=40.0)
    cond = SDS(cfg, prior).embed("a red cube")
    assert [cond.view_prompt(10, a) for a in (20, 40, 140, 160)] == [
        "a red cube, front view", "a red cube, side view", "a red cube, side view", "a red cube, back view"]
    assert cond.view_prompt(45, 0) == "a red cube, overhead view"
    for bad in ({"view_front_azimuth": 140.0}, {"perp_neg": True, "view_dependent_prompt": False},
                {"perp_neg_f_sb": [1.0, 0.5]}):
        with pytest.raises(ConfigError):
            GuidanceConfig(**bad).validate()


def test_toyworld_text_conditioning_reads_the_prompts_view(prior):
    """`text` view conditioning: a prompt's view word picks the dataset bucket (else the camera's)."""
    x_t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([300, 300])
    front_cams, back_cams = Cameras.make([10.0, 10.0], [0.0, 10.0]), Cameras.make([10.0, 10.0], [180.0, 170.0])
    back = [prior.embed("a red cube, back view")] * 2
    plain = [prior.embed("a red cube")] * 2
    assert torch.equal(prior.predict_eps(x_t, t, back, front_cams), prior.predict_eps(x_t, t, plain, back_cams))
    assert not torch.allclose(prior.predict_eps(x_t, t, plain, front_cams), prior.predict_eps(x_t, t, plain, back_cams))


def test_bench_has_a_perp_neg_variant():
    from dream3d.bench import ALL_METHODS, preset

    assert "sds-perpneg" in ALL_METHODS and preset("sds-perpneg", "gaussians")[1] == ["guidance.perp_neg=true"]



def test_nfsd_refuses_perp_neg_it_would_ignore():
    from dream3d.config import load_config
    from dream3d.kernel.schema import ConfigError

    with pytest.raises(ConfigError, match="perp_neg=true does not apply to nfsd"):
        load_config("configs/toy/nfsd-nerf.yaml", ["guidance.perp_neg=true"])
