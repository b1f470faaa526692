import math

import pytest
import torch

from dream3d.kernel.cameras import Cameras, CameraSampler
from guidance.core import Conditioning, cfg_predict
from guidance.ddim import ddim_sample
from guidance.priors import ToyWorldPrior, ToyWorldPriorConfig


@pytest.fixture(scope="module")
def prior():
    return ToyWorldPrior(ToyWorldPriorConfig(num_views=48, dataset_resolution=16, resolution=8,
                                             view_conditioning="none", uncond_views_per_item=4))


def test_denoiser_equals_brute_force(prior):
    emb = prior.embed("a red cube")
    data = prior.view_set(emb).x.double()  # [N,D]
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(3, 3, 8, 8, generator=g)
    t = torch.tensor([50, 400, 900])
    got = prior.denoise(x_t, t, emb)
    for b in range(3):
        abar = prior.alphas_cumprod[t[b]].double()
        logp = torch.stack([-((x_t[b].double().flatten() - abar.sqrt() * xi) ** 2).sum() / (2 * (1 - abar)) for xi in data])
        expected = (torch.softmax(logp, 0)[:, None] * data).sum(0)
        assert torch.allclose(got[b].flatten().double(), expected, atol=2e-4)


def test_eps_is_minus_sigma_times_score(prior):
    emb = prior.embed("a blue sphere")
    x_t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64).requires_grad_()
    t = torch.tensor([300, 700])
    prior.view_set(emb).x = prior.view_set(emb).x.double()
    try:
        score = torch.autograd.grad(prior.log_prob(x_t, t, emb).sum(), x_t)[0]
        eps = prior.predict_eps(x_t.detach(), t, [emb, emb])
    finally:
        prior._sets.pop(emb.key)
    s = (1 - prior.alphas_cumprod[t].double()).sqrt()[:, None, None, None]
    assert torch.allclose(eps, -s * score, atol=1e-6)


def test_ddim_sampling_lands_on_a_dataset_image(prior):
    emb = prior.embed("a yellow cone")
    x0 = ddim_sample(prior, (2, 3, 8, 8), [emb, emb], steps=50, generator=torch.Generator().manual_seed(0))
    data = prior.view_set(emb).x
    d = torch.cdist(x0.reshape(2, -1), data).min(-1).values / math.sqrt(data.shape[1])
    assert (d < 1e-3).all(), d


def test_cfg_scale_one_equals_conditional_and_batching_is_one_call(prior):
    cams = CameraSampler().sample(2, torch.Generator().manual_seed(0))
    cond = Conditioning(prior, "a red cube", "", view_dependent=False)
    x_t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([500, 800])
    calls = []
    orig = prior.predict_eps
    prior.predict_eps = lambda *a, **k: calls.append(a[0].shape[0]) or orig(*a, **k)
    try:
        eps_w, eps_y, eps_u = cfg_predict(prior, x_t, t, cond, cams, 7.5)
        assert calls == [4]  # one call on [cond; uncond]
        assert torch.allclose(eps_w, eps_u + 7.5 * (eps_y - eps_u))
        assert torch.allclose(eps_y, orig(x_t, t, cond.cond(cams), cams), atol=1e-5)
        assert torch.allclose(eps_u + 1.0 * (eps_y - eps_u), eps_y, atol=1e-6)  # w = 1 is the conditional
        eps_1, eps_y1, _ = cfg_predict(prior, x_t, t, cond, cams, 1.0)
        assert torch.equal(eps_1, eps_y1) and calls[-1] == 2  # no unconditional pass at w = 1
    finally:
        prior.predict_eps = orig


def test_camera_conditioning_keeps_only_nearby_views():
    p = ToyWorldPrior(ToyWorldPriorConfig(num_views=256, dataset_resolution=16, resolution=8, view_conditioning="camera"))
    emb = p.embed("a red cube")
    vs = p.view_set(emb)
    cams = Cameras.make([20.0], [90.0])
    logits = p.logits(torch.zeros(1, 3, 8, 8), torch.tensor([999]), vs, p.view_log_weights(vs, cams, 1))
    kept = torch.isfinite(logits[0])
    d_az = ((vs.azimuth[kept] - 90 + 180) % 360 - 180).abs()
    assert kept.sum() >= p.cfg.min_views and (d_az < 15).all() and ((vs.elevation[kept] - 20).abs() < 10).all()


def test_text_conditioning_uses_the_view_bucket():
    p = ToyWorldPrior(ToyWorldPriorConfig(num_views=128, dataset_resolution=16, resolution=8, view_conditioning="text"))
    vs = p.view_set(p.embed("a red cube"))
    keep = torch.isfinite(p.view_log_weights(vs, Cameras.make([10.0], [180.0]), 1))[0]
    assert ((vs.azimuth[keep].abs()) > 135).all() and keep.any()
