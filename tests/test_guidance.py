import pytest
import torch

from dream3d.kernel.cameras import CameraSampler
from dream3d.kernel.schedules import Schedule
from guidance import SDS, GuidanceConfig
from guidance.core import TimestepSampler, inject_gradient, weighting
from guidance.priors import ToyWorldPrior, ToyWorldPriorConfig


@pytest.fixture(scope="module")
def prior():
    return ToyWorldPrior(ToyWorldPriorConfig(num_views=32, dataset_resolution=16, resolution=8, uncond_views_per_item=2))


@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_sds_gradient_through_injection(prior, scale):
    cfg = GuidanceConfig(guidance_scale=scale, view_dependent_prompt=False)
    sds = SDS(cfg, prior)
    cams = CameraSampler().sample(3, torch.Generator().manual_seed(0))
    cond = sds.embed("a red cube")
    img = torch.rand(3, 3, 8, 8, requires_grad=True)
    out = sds(img, cams, cond, step=0, generator=torch.Generator().manual_seed(5))
    out.loss.backward()
    # replay the same random draws by hand
    g = torch.Generator().manual_seed(5)
    t = torch.randint(20, 981, (3,), generator=g)
    noise = torch.randn(3, 3, 8, 8, generator=g)
    x = img.detach() * 2 - 1
    abar = prior.alphas_cumprod[t][:, None, None, None]
    x_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
    eps_y = prior.predict_eps(x_t, t, cond.cond(cams), cams)
    if scale == 1.0:
        eps_hat = eps_y
    else:
        eps_u = prior.predict_eps(x_t, t, cond.uncond(cams), cams)
        eps_hat = eps_u + scale * (eps_y - eps_u)
    G = (1 - abar) * (eps_hat - noise)
    assert torch.allclose(img.grad, 2 * G / 3, atol=1e-5)  # d x / d img = 2, d loss / d x = G / B
    assert out.stats["grad_norm"] == pytest.approx(float(G.norm()), rel=1e-5)


def test_injection_gradient_is_G_over_B():
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    G = torch.randn(4, 3, 5, 5)
    inject_gradient(x, G).backward()
    assert torch.allclose(x.grad, G / 4)


def test_non_finite_gradient_is_zeroed_and_clipped(prior):
    sds = SDS(GuidanceConfig(grad_clip=0.01, view_dependent_prompt=False), prior)
    sds.gradient = lambda x, *a: (torch.full_like(x, float("nan")).index_fill_(0, torch.tensor([0]), 5.0), {})
    img = torch.rand(2, 3, 8, 8, requires_grad=True)
    sds(img, CameraSampler().sample(2, torch.Generator()), sds.embed("a cube"), 0).loss.backward()
    assert torch.isfinite(img.grad).all() and img.grad.abs().max() <= 2 * 0.01 / 2 + 1e-6


def test_weightings():
    abar = torch.tensor([0.81, 0.25])
    t = torch.tensor([0, 1])
    assert torch.allclose(weighting("sds", abar, t), 1 - abar)
    assert torch.allclose(weighting("uniform", abar, t), torch.ones(2))
    assert torch.allclose(weighting("fantasia3d", abar, t), abar.sqrt() * (1 - abar))
    assert torch.allclose(weighting("ism", abar, t), (1 - abar).sqrt() / abar.sqrt())
    assert torch.allclose(weighting("a_t", abar, t), torch.tensor([0.9, 0.5]))
    with pytest.raises(ValueError, match="valid: sds"):
        weighting("nope", abar, t)


def test_timestep_sampler_anneals():
    s = TimestepSampler(0.02, [0, 0.98, 0.5, 100], 1000)
    assert s.range(0) == (20, 980) and s.range(100) == (20, 500) and s.range(50) == (20, 740)
    t = s.sample(1000, 100, torch.Generator().manual_seed(0))
    assert t.min() >= 20 and t.max() <= 500


def test_schedule_syntax():
    s = Schedule.parse([10, 1.0, 3.0, 20])
    assert (s(0), s(10), s(15), s(20), s(99)) == (1.0, 1.0, 2.0, 3.0, 3.0)
    assert Schedule.parse(2)(5) == 2.0
    for bad in ("x", [1, 2, 3], [20, 1, 2, 10]):
        with pytest.raises(ValueError, match="start_step"):
            Schedule.parse(bad)


def test_a_module_prior_is_not_a_trainable_of_the_guidance(prior):
    class ModulePrior(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))
            self.alphas_cumprod = prior.alphas_cumprod

        num_timesteps = 1000

    sds = SDS(GuidanceConfig(), ModulePrior())
    assert list(sds.parameters()) == [] and sds.state_dict() == {}
