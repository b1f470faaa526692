"""Known answers for every guidance, recomputed independently of the code under test: DDIM
inversion against the closed-form probability-flow ODE of a Gaussian prior, each objective's
gradient rebuilt by hand from the replayed generator (DDIM written out, not called), fixed points
of the classifier-score family derived in closed form, and the knobs a method would ignore refused.
`benchmarks/mutants.py` breaks the formulas on purpose and checks that these tests notice."""
import math

import pytest
import torch

from dream3d.kernel.cameras import Cameras
from dream3d.kernel.schema import ConfigError
from guidance.ddim import ddim_invert
from guidance.particles import make_guidance, optimise_particles
from guidance.priors.gaussian_mixture import GaussianMixturePrior

D = 2
MU = torch.tensor([1.0, -0.5])
SIGMA_Y, SIGMA_NEG, SIGMA_NEG2 = 0.5, 0.7, 0.6
NEG_MEAN, NEG2_MEAN = -MU, torch.tensor([0.3, 0.8])


@pytest.fixture(scope="module")
def prior():
    return GaussianMixturePrior({
        "y": (MU[None], torch.tensor([SIGMA_Y]), torch.tensor([1.0])),
        "": (torch.zeros(1, D), torch.tensor([1.0]), torch.tensor([1.0])),
        "neg": (NEG_MEAN[None], torch.tensor([SIGMA_NEG]), torch.tensor([1.0])),
        "neg2": (NEG2_MEAN[None], torch.tensor([SIGMA_NEG2]), torch.tensor([1.0])),
    })


def cams(n, spread=False):
    if spread:
        return Cameras.make(torch.linspace(-10, 45, n), torch.linspace(-180, 180, n + 1)[:-1])
    return Cameras.make(torch.zeros(n), torch.zeros(n))


def grad_of(guidance, x, step=0, seed=0, negative="", cameras=None):
    """G (x's gradient times B: the injection divides by B) of one guidance call."""
    x = x.clone().requires_grad_()
    c = cams(len(x)) if cameras is None else cameras
    guidance(x, c, guidance.embed("y", negative), step, torch.Generator().manual_seed(seed)).loss.backward()
    return x.grad * len(x)


def abar(prior, t):
    return prior.alphas_cumprod.double()[t][:, None]


def eps(prior, z, t, text):
    return prior.predict_eps(z, t, [text] * len(z)).double()


def ddim_by_hand(prior, z, u, v, e):
    """One deterministic DDIM step u -> v written out: a_v (z - s_u e) / a_u + s_v e."""
    au, av = abar(prior, u), abar(prior, v)
    return (av.sqrt() * (z.double() - (1 - au).sqrt() * e) / au.sqrt() + (1 - av).sqrt() * e).float()


def invert_by_hand(prior, x, target, stride=200, max_steps=5):
    """DDIM inversion of x to `target` with the empty prompt: n = min(max_steps, ceil(max target / stride))
    steps through round(target * i / n) (shared/docs/guidance.md, ISM step 1)."""
    n = max(1, min(max_steps, math.ceil(int(target.max()) / stride)))
    z, u = x.clone(), torch.zeros_like(target)
    for i in range(1, n + 1):
        v = torch.round(target.float() * i / n).long()
        z, u = ddim_by_hand(prior, z, u, v, eps(prior, z, u, "")), v
    return z


def cfg(prior, z, t, scale, uncond=""):
    e_u = eps(prior, z, t, uncond)
    return e_u + scale * (eps(prior, z, t, "y") - e_u)


# -- DDIM against the probability-flow ODE ------------------------------------------------------------
def test_ddim_inversion_follows_the_probability_flow_ode(prior):
    """For p_0 = N(mu, sigma^2 I) the PF-ODE keeps each point's standardised position:
    x_t = a_t mu + (x_u - a_u mu) sqrt(v_t / v_u), v = a^2 sigma^2 + s^2. DDIM is its first-order
    discretisation: one-timestep strides land within 0.01, and halving the steps doubles the error."""
    torch.manual_seed(0)
    x = (torch.randn(64, D) * SIGMA_Y + MU).double()
    target = torch.randint(100, 950, (64,))
    a0, at = abar(prior, torch.zeros_like(target)), abar(prior, target)
    v0, vt = a0 * SIGMA_Y**2 + 1 - a0, at * SIGMA_Y**2 + 1 - at
    exact = at.sqrt() * MU.double() + (x - a0.sqrt() * MU.double()) * (vt / v0).sqrt()
    err = {}
    for stride in (1, 2):  # under y's own density
        z, _ = ddim_invert(prior, x, target, ["y"] * 64, cams(64), stride=stride, max_steps=1000)
        err[stride] = float((z - exact).abs().max())
    assert err[1] < 0.01 and 1.5 < err[2] / err[1] < 2.5, err  # measured 0.0065, 0.0114
    assert float((at.sqrt() * x - exact).abs().max()) > 1.0  # plain scaling is far off: the test can tell


# -- each objective rebuilt by hand --------------------------------------------------------------------
def replay_t(n, lo, hi, g):
    return torch.randint(lo, hi + 1, (n,), generator=g)


def noised_by_hand(prior, x, t, g):
    """a_t x + s_t noise with the next noise of the replayed generator."""
    ab = abar(prior, t)
    return (ab.sqrt() * x.double() + (1 - ab).sqrt() * torch.randn(x.shape, generator=g)).float()


def test_ism_matches_its_formula_with_inversion_written_out(prior):
    """x_s = DDIM inversion of x to s = t - delta (empty prompt), x_t one more step s -> t,
    G = lambda w_ism(t) (eps_w(x_t, t) - eps(x_s, s, empty)); at step 300 of the schedules."""
    x = torch.randn(16, D)
    got = grad_of(make_guidance("ism", prior, guidance_scale=3.0, loss_weight=0.3), x, step=300)
    g = torch.Generator().manual_seed(0)
    t = replay_t(16, 20, 884, g)  # t_max [0, 0.98, 0.5, 1500] at 300 = 0.884
    s = (t - 96).clamp(min=0)  # delta_t [0, 100, 80, 1500] at 300 = 96
    x_s = invert_by_hand(prior, x, s)
    e_s = eps(prior, x_s, s, "")
    x_t = ddim_by_hand(prior, x_s, s, t, e_s)
    w = ((1 - abar(prior, t)) / abar(prior, t)).sqrt()
    want = 0.3 * w * (cfg(prior, x_t, t, 3.0) - e_s)
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-5)


def test_tsm_matches_its_formula_with_both_paths_written_out(prior):
    """As ISM to x_s; path B s -> mu -> t with mu = s + round((t - s) sqrt(1 - gamma^2)); the target is
    the empty-prompt prediction at x_mu."""
    x = torch.randn(16, D)
    tsm = make_guidance("tsm", prior, guidance_scale=2.0, loss_weight=0.5, gamma=0.6, pixel_grad_clip=None, delta_t=150,
                        t_max=0.9)
    got = grad_of(tsm, x, step=10)
    g = torch.Generator().manual_seed(0)
    t = replay_t(16, 20, 900, g)
    s = (t - 150).clamp(min=0)
    x_s = invert_by_hand(prior, x, s)
    e_s = eps(prior, x_s, s, "")
    x_t = ddim_by_hand(prior, x_s, s, t, e_s)
    mu = s + torch.round((t - s).float() * math.sqrt(1 - 0.6**2)).long()
    assert ((mu > s) & (mu < t)).any()
    x_mu = ddim_by_hand(prior, x_s, s, mu, e_s)
    w = ((1 - abar(prior, t)) / abar(prior, t)).sqrt()
    want = 0.5 * w * (cfg(prior, x_t, t, 2.0) - eps(prior, x_mu, mu, ""))
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-5)


def test_csm_matches_its_formula(prior):
    """x_t by DDIM inversion of x to t (no fresh noise), G = w(t) w (eps_y(x_t) - eps_u(x_t))."""
    x = torch.randn(16, D)
    got = grad_of(make_guidance("csm", prior, guidance_scale=4.0, weighting="fantasia3d", t_max=0.9), x)
    t = replay_t(16, 20, 900, torch.Generator().manual_seed(0))
    x_t = invert_by_hand(prior, x, t)
    ab = abar(prior, t)
    want = ab.sqrt() * (1 - ab) * 4.0 * (eps(prior, x_t, t, "y") - eps(prior, x_t, t, ""))
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-5)


def test_bsd_matches_its_formula(prior):
    """d_c = lam (eps_y - eps_u), d_s = eps_u, alpha = clip(<d_s - d_c, d_s> / |d_s - d_c|^2, 0, 1) per
    sample, G = a_t (alpha d_c + (1 - alpha) d_s)."""
    x = torch.randn(64, D) * 2
    got = grad_of(make_guidance("bsd", prior, guidance_scale=0.8), x)
    g = torch.Generator().manual_seed(0)
    t = replay_t(64, 20, 980, g)
    x_t = noised_by_hand(prior, x, t, g)
    e_y, e_u = eps(prior, x_t, t, "y"), eps(prior, x_t, t, "")
    want = torch.empty(64, D, dtype=torch.float64)
    alphas = []
    for i in range(64):
        d_c, d_s = 0.8 * (e_y[i] - e_u[i]), e_u[i]
        diff = d_s - d_c
        alpha = min(1.0, max(0.0, float(diff @ d_s) / float(diff @ diff)))
        alphas.append(alpha)
        want[i] = math.sqrt(float(abar(prior, t[i:i + 1]))) * (alpha * d_c + (1 - alpha) * d_s)
    assert any(0 < a < 1 for a in alphas) and any(a in (0.0, 1.0) for a in alphas)  # both regimes exercised
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-6)


def test_bsd_weighting_is_a_knob_it_reads(prior):
    x = torch.randn(8, D)
    alpha = grad_of(make_guidance("bsd", prior), x)
    uniform = grad_of(make_guidance("bsd", prior, weighting="uniform"), x)
    t = replay_t(8, 20, 980, torch.Generator().manual_seed(0))
    assert torch.allclose(alpha.double(), uniform.double() * abar(prior, t).sqrt(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name,lam", [("vsd", 0.0), ("esd", 0.3), ("esd", 1.0)])
def test_vsd_and_esd_match_their_formula(prior, name, lam):
    """G = w(t) (eps_w(x_t) - [eps_phi(empty c) + (1 - lambda)(eps_phi(c) - eps_phi(empty c))]), the fake
    score queried directly (two calls) on x_t from the replayed draws."""
    torch.manual_seed(1)
    kw = {} if name == "vsd" else {"entropy_weight": lam}
    guidance = make_guidance(name, prior, guidance_scale=2.0, t_max=0.9, **kw)
    x, c = torch.randn(12, D), cams(12, spread=True)
    got = grad_of(guidance, x, cameras=c)
    g = torch.Generator().manual_seed(0)
    t = replay_t(12, 20, 900, g)
    x_t = noised_by_hand(prior, x, t, g)
    with torch.no_grad():
        e_c, e_0 = guidance.fake(x_t, t, c).double(), guidance.fake(x_t, t, c, drop_camera=True).double()
    assert (e_c - e_0).abs().max() > 1e-3  # the camera matters to this fake score
    want = (1 - abar(prior, t)) * (cfg(prior, x_t, t, 2.0) - (e_0 + (1 - lam) * (e_c - e_0)))
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("negative,a_neg,want_terms", [
    ("", None, {"y": 1.0, "": -1.0}),
    ("neg", None, {"y": 1.0, "neg": -1.0}),  # unset with a negative prompt: -1
    ("neg", -0.5, {"y": 1.0, "neg": -0.5, "": -0.5}),
    ("neg", -2.0, {"y": 1.0, "neg": -2.0, "": 1.0}),
    ("neg", -1e-6, {"y": 1.0, "neg": -1e-6, "": -1 + 1e-6}),  # continuous as a_neg -> 0
])
def test_csd_matches_its_formula(prior, negative, a_neg, want_terms):
    x = torch.randn(16, D)
    got = grad_of(make_guidance("csd", prior, negative_weight=a_neg), x, negative=negative)
    g = torch.Generator().manual_seed(0)
    t = replay_t(16, 20, 500, g)
    x_t = noised_by_hand(prior, x, t, g)
    want = (1 - abar(prior, t)) * sum(k * eps(prior, x_t, t, text) for text, k in want_terms.items())
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-6)


def test_csd_refuses_weights_it_cannot_apply(prior):
    with pytest.raises(ConfigError, match="would ignore negative_prompt"):
        make_guidance("csd", prior, negative_weight=0.0).embed("y", "neg")
    with pytest.raises(ConfigError, match="set negative_prompt"):
        make_guidance("csd", prior, negative_weight=-0.5).embed("y", "")
    with pytest.raises(ConfigError, match="guidance_scale .* has no effect on csd"):
        make_guidance("csd", prior, guidance_scale=7.5)


@pytest.mark.parametrize("run_negative,realism,neg_text", [("", "neg", "neg"), ("neg2", "neg", "neg2"), ("", "", "")])
def test_nfsd_matches_its_formula(prior, run_negative, realism, neg_text):
    """delta_D = eps_empty (t < small_t) or eps_empty - eps_neg, neg = the run's negative prompt, else the
    realism prompt; none at all: delta_D = 0 for t >= small_t. G = w(t)(delta_D + w (eps_y - eps_empty))."""
    x = torch.randn(32, D)
    got = grad_of(make_guidance("nfsd", prior, guidance_scale=5.0, small_t=300, realism_negative=realism), x,
                  negative=run_negative)
    g = torch.Generator().manual_seed(0)
    t = replay_t(32, 20, 980, g)
    x_t = noised_by_hand(prior, x, t, g)
    e_y, e_e = eps(prior, x_t, t, "y"), eps(prior, x_t, t, "")
    e_n = eps(prior, x_t, t, neg_text) if neg_text else e_e
    delta = torch.where((t < 300)[:, None], e_e, e_e - e_n)
    want = (1 - abar(prior, t)) * (delta + 5.0 * (e_y - e_e))
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-6)


def test_nfsd_says_when_the_prior_cannot_read_its_negative(prior):
    with pytest.raises(ConfigError, match="realism_negative=''"):
        make_guidance("nfsd", prior).embed("y")  # the paper's text is not one of this prior's prompts


# -- fixed points in closed form -----------------------------------------------------------------------
def expected_eps(prior, t, mean, std):
    """E_noise eps(a_t x + s_t noise) for p_0 = N(mean, std^2 I) is s a (x - mean) / v: returns the
    coefficients (of x, of the constant) per timestep, v = a^2 std^2 + s^2."""
    ab = prior.alphas_cumprod.double()[t]
    a, s = ab.sqrt(), (1 - ab).sqrt()
    v = ab * std**2 + 1 - ab
    return (s * a / v)[:, None], (-s * a / v)[:, None] * mean.double()


def fixed_point(prior, t, terms):
    """x* with sum_t w(t) sum_k c_k E[eps_k] = 0 for terms [(weight [T,1], c_k, mean_k, std_k)]."""
    coef_x, const = 0.0, 0.0
    for w, c, mean, std in terms:
        cx, c0 = expected_eps(prior, t, mean, std)
        coef_x, const = coef_x + (w * c * cx).sum(0), const + (w * c * c0).sum(0)
    return -const / coef_x


def settle(guidance, steps=700, n=512, lr=0.1):
    """n particles from N(0, I) (seed 0) after `steps` gradient steps (guidance/particles.py)."""
    torch.manual_seed(0)
    return optimise_particles(guidance, torch.randn(n, D), cams(n), steps, lr=lr)


def test_csd_particles_settle_at_the_implicit_classifiers_fixed_point(prior):
    """E[eps_y - eps_empty] is linear in x for Gaussians, so CSD's fixed point is closed-form:
    x* = mu sum w s a / v_y / sum w s a (1 / v_y - 1) over t in [20, 500] (here 2.44 mu: past the
    mode, where the implicit classifier log p(y|x) peaks)."""
    t = torch.arange(20, 501)
    w = (1 - prior.alphas_cumprod.double()[t])[:, None]
    want = fixed_point(prior, t, [(w, 1.0, MU, SIGMA_Y), (w, -1.0, torch.zeros(D), 1.0)])
    assert (want - MU.double()).norm() > 0.3  # not the mode: a wrong objective landing on mu fails
    x = settle(make_guidance("csd", prior))
    assert (x.mean(0).double() - want).norm() < 0.05 * want.norm(), (x.mean(0), want)


def test_nfsd_particles_settle_at_their_closed_form_fixed_point(prior):
    """delta_D + w (eps_y - eps_empty): eps_empty below small_t, eps_empty - eps_neg above; each term's
    expectation is linear in x, so the fixed point is closed-form."""
    t = torch.arange(20, 981)
    w = (1 - prior.alphas_cumprod.double()[t])[:, None]
    small = (t < 200).double()[:, None]
    zero = torch.zeros(D)
    want = fixed_point(prior, t, [(w, 1.0, zero, 1.0), (w * (1 - small), -1.0, NEG_MEAN, SIGMA_NEG),
                                  (w, 2.0, MU, SIGMA_Y), (w, -2.0, zero, 1.0)])
    x = settle(make_guidance("nfsd", prior, guidance_scale=2.0, realism_negative="neg"), lr=0.05, steps=900)
    assert (x.mean(0).double() - want).norm() < 0.05 * want.norm(), (x.mean(0), want)


def inversion_angle(prior, u):
    """theta_u with a_u = cos theta, s_u = sin theta: for p_0 = N(0, I) every DDIM step u -> v with the exact eps
    (= s_u z) rotates by theta_v - theta_u, so it multiplies z by cos(theta_v - theta_u)."""
    ab = prior.alphas_cumprod.double()[u]
    return torch.atan2((1 - ab).sqrt(), ab.sqrt())


@pytest.mark.parametrize("name", ["ism", "tsm"])
def test_ism_and_tsm_particles_settle_at_their_closed_form_fixed_point(prior, name):
    """With the empty prompt N(0, I), the inversion to s is x_s = c(s) x, c(s) = prod_i cos(theta_{u_i} -
    theta_{u_(i-1)}) over ISM's 5 steps u_i = round(s i / 5); x_t = cos(theta_t - theta_s) x_s and eps(x_s, s,
    empty) = s_s x_s. So G is linear in x for each t and the particles' fixed point is closed-form: an
    independent check of the inversion, the interval and (TSM) the target at mu."""
    w, delta, gamma = 2.0, 50, 0.5
    t = torch.arange(20, 901)
    s = (t - delta).clamp(min=0)
    theta = lambda u: inversion_angle(prior, u)  # noqa: E731
    c = torch.ones(len(t), dtype=torch.float64)
    for i in range(1, 6):
        c = c * torch.cos(theta(torch.round(s.float() * i / 5).long()) - theta(torch.round(s.float() * (i - 1) / 5).long()))
    ab = prior.alphas_cumprod.double()[t]
    a_t, s_t = ab.sqrt(), (1 - ab).sqrt()
    v_t = ab * SIGMA_Y**2 + 1 - ab
    s_s = (1 - prior.alphas_cumprod.double()[s]).sqrt()
    eps_w_coef = ((1 - w) * s_t + w * s_t / v_t) * torch.cos(theta(t) - theta(s)) * c  # of x, in eps_w(x_t)
    if name == "ism":
        target = s_s * c
    else:
        mu = s + torch.round((t - s).float() * math.sqrt(1 - gamma**2)).long()
        target = (1 - prior.alphas_cumprod.double()[mu]).sqrt() * torch.cos(theta(mu) - theta(s)) * c
    weight = s_t / a_t
    alpha = (weight * (eps_w_coef - target)).sum()
    beta = (weight * (-w * s_t * a_t / v_t)).sum()
    want = -beta / alpha * MU.double()
    kw = {"gamma": gamma, "pixel_grad_clip": None} if name == "tsm" else {}
    guidance = make_guidance(name, prior, guidance_scale=w, t_max=0.9, delta_t=delta, loss_weight=1.0, **kw)
    x = settle(guidance, steps=300, n=256, lr=0.1)  # x* = 2.72 mu (ISM), 2.93 mu (TSM): the two differ
    assert (x.mean(0).double() - want).norm() < 0.03 * want.norm(), (x.mean(0), want)


# -- knobs a method does not read, and schedules in shares of the run ------------------------------
def test_cds_refuses_the_shared_timestep_range(prior):
    with pytest.raises(ConfigError, match="t_min = 0.1 has no effect on cds"):
        make_guidance("cds", prior, t_min=0.1)
    with pytest.raises(ConfigError, match="t_max"):
        make_guidance("cds", prior, t_max=0.5)
    make_guidance("cds", prior)  # the defaults are not "set"


def test_esd_needs_camera_dropout_to_train_its_camera_free_branch(prior):
    with pytest.raises(ConfigError, match="camera_dropout > 0"):
        make_guidance("esd", prior, camera_dropout=0.0)
    make_guidance("esd", prior, camera_dropout=0.0, entropy_weight=0.0)  # VSD: no camera-free branch used


@pytest.mark.parametrize("total", [500, 1000, 10000])
def test_vsd_drops_t_max_after_the_first_fifth_of_any_run(prior, total):
    vsd = make_guidance("vsd", prior, total_steps=total)
    drop = round(0.2 * total)
    assert vsd.timesteps.range(drop) == (20, 980) and vsd.timesteps.range(drop + 1) == (20, 500)


def test_a_share_of_the_run_needs_the_runs_length(prior):
    from guidance import RunContext, build_guidance
    from guidance.vsd import VSDConfig

    with pytest.raises(ValueError, match="needs the run's length"):
        build_guidance(VSDConfig(), prior)
    assert build_guidance(VSDConfig(), prior, RunContext(300)).timesteps.range(61) == (20, 500)


# -- f-divergence: the batch it needs, the exact ratio, the teacher bank ------------------------------
def test_fdiv_with_one_view_per_step_is_refused_unless_it_is_vsd():
    from dream3d.config import load_config

    with pytest.raises(ConfigError, match=r"train.batch_size >= 2 \(got 1\)"):
        load_config("configs/toy/fdiv-nerf.yaml", ["train.batch_size=1"])
    load_config("configs/toy/fdiv-nerf.yaml", ["train.batch_size=1", "guidance.divergence=reverse_kl"])
    assert load_config("configs/sd/fdiv-nerf.yaml").train.batch_size >= 2


def test_fdiv_exact_ratio_refuses_a_cfg_sharpened_teacher(prior):
    with pytest.raises(ConfigError, match="guidance_scale=1"):
        make_guidance("fdiv", prior, ratio="exact", guidance_scale=7.5)
    make_guidance("fdiv", prior, ratio="exact", guidance_scale=7.5, divergence="reverse_kl")  # h = 1: r unused


def test_fdiv_exact_ratio_is_p_over_the_renders_at_the_same_camera(prior):
    """log r_b = log p_t(x_t,b | y) - log mean_{j at b's camera} N(x_t,b; a_t x_j, s_t^2 I), by hand."""
    fdiv = make_guidance("fdiv", prior, ratio="exact", guidance_scale=1.0)
    torch.manual_seed(0)
    x, x_t = torch.randn(5, D), torch.randn(5, D)
    t = torch.tensor([50, 300, 300, 700, 900])
    c = Cameras.make(torch.tensor([0.0, 0.0, 10.0, 0.0, 10.0]), torch.tensor([0.0, 0.0, 90.0, 0.0, 90.0]))
    got = fdiv.log_ratio(x_t, t, fdiv.embed("y"), c, x, c)
    want = []
    for b in range(5):
        ab = float(prior.alphas_cumprod.double()[t[b]])
        var_p, var_q = ab * SIGMA_Y**2 + 1 - ab, 1 - ab
        log_p = -((x_t[b].double() - math.sqrt(ab) * MU) ** 2).sum() / (2 * var_p) - D / 2 * math.log(2 * math.pi * var_p)
        group = [j for j in range(5) if (c.elevation[j], c.azimuth[j]) == (c.elevation[b], c.azimuth[b])]
        dens = sum(math.exp(-float(((x_t[b].double() - math.sqrt(ab) * x[j]) ** 2).sum()) / (2 * var_q)) for j in group)
        log_q = math.log(dens / len(group)) - D / 2 * math.log(2 * math.pi * var_q)
        want.append(float(log_p) - log_q)
    assert torch.allclose(got.double(), torch.tensor(want, dtype=torch.float64), rtol=1e-5, atol=1e-5)


def test_fdiv_discriminator_draws_t_from_the_steps_range(prior):
    fdiv = make_guidance("fdiv", prior, total_steps=100)  # t_max drops to 0.5 after step 20
    seen = []
    fdiv.discriminator.forward = lambda x_t, t: seen.append(t) or x_t.sum(-1)
    fdiv.discriminator_loss(torch.randn(256, D), torch.randn(256, D), 50, torch.Generator().manual_seed(0))
    assert max(int(s.max()) for s in seen) <= 500
    seen.clear()
    fdiv.discriminator_loss(torch.randn(256, D), torch.randn(256, D), 0, torch.Generator().manual_seed(0))
    assert max(int(s.max()) for s in seen) > 500


def toyworld_fdiv(azimuth_range=(-180.0, 180.0), bank_size=256):
    from dream3d.kernel.cameras import CameraSampler
    from guidance import RunContext, build_guidance
    from guidance.fdiv import FDivConfig
    from guidance.priors import ToyWorldPrior, ToyWorldPriorConfig

    prior = ToyWorldPrior(ToyWorldPriorConfig(resolution=8, num_views=256, dataset_resolution=16, view_conditioning="camera",
                                              window_azimuth=30.0))
    cfg = FDivConfig(guidance_scale=1.0, t_min=0.05, t_max=0.4, bank_size=bank_size, bank_sampler_steps=20,
                     view_dependent_prompt=False, discriminator_lr=3e-3)
    return build_guidance(cfg, prior, RunContext(1000, CameraSampler(azimuth_range=azimuth_range)))


def test_fdiv_bank_covers_the_runs_cameras_not_the_first_batch():
    fdiv = toyworld_fdiv(bank_size=64)
    front = Cameras.make(torch.full((4,), 10.0), torch.tensor([-5.0, 0.0, 5.0, 10.0]))
    cond = fdiv.embed("a blue cube with a yellow front")
    fdiv.aux_losses(torch.rand(4, 3, 8, 8) * 2 - 1, front, cond, 0, torch.Generator().manual_seed(0))
    az, el = fdiv.bank_views[:, 1], fdiv.bank_views[:, 0]
    assert az.min() < -135 and az.max() > 135 and el.min() < 0 and el.max() > 35


def separability(fdiv, real: torch.Tensor, fake: torch.Tensor, gen) -> float:
    """Held-out accuracy of the discriminator trained on half of each set (0.5 = cannot tell)."""
    train_r, test_r, train_f, test_f = real[:256], real[256:], fake[:256], fake[256:]
    opt = torch.optim.Adam(fdiv.discriminator.parameters(), 3e-3)
    for _ in range(300):
        idx = torch.randint(0, 256, (64,), generator=gen)
        loss = fdiv.discriminator_loss(train_f[idx], train_r[idx], 0, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    t = fdiv.timesteps.sample(512, 0, gen)
    x_t = fdiv.prior.add_noise(torch.cat([test_r, test_f]), t, torch.randn(512, 3, 8, 8, generator=gen))
    with torch.no_grad():
        logits = fdiv.discriminator(x_t, t)
    return float(((logits[:256] > 0).float().sum() + (logits[256:] <= 0).float().sum()) / 512)


def test_fdiv_discriminator_cannot_tell_bank_from_renders_by_the_view():
    """Renders that are teacher samples at the run's cameras (a perfect scene) against the bank: the
    discriminator stays at chance. Against a bank drawn at front cameras only (the old bank: the first
    batch's views) it separates them by the view alone. Measured (three seeds): 0.506 / 0.508 / 0.521
    against 0.820 / 0.828 / 0.813."""
    torch.manual_seed(0)
    prompt = "a blue cube with a yellow front"
    full, narrow = toyworld_fdiv(bank_size=512), toyworld_fdiv((-20.0, 20.0), bank_size=512)
    renders = toyworld_fdiv(bank_size=512)
    bank = full.teacher_bank(full.embed(prompt), 0, torch.Generator().manual_seed(1))
    old_bank = narrow.teacher_bank(narrow.embed(prompt), 0, torch.Generator().manual_seed(2))
    fake = renders.teacher_bank(renders.embed(prompt), 0, torch.Generator().manual_seed(3))
    acc_full = separability(full, bank, fake, torch.Generator().manual_seed(4))
    acc_narrow = separability(narrow, old_bank, fake, torch.Generator().manual_seed(4))
    assert acc_full < 0.6 and acc_narrow > 0.75, (acc_full, acc_narrow)



def test_the_toy_priors_schedule_is_stable_diffusions():
    """ToyWorld and the Gaussian mixture use SD's scaled-linear schedule: diffusers' own DDPMScheduler is the
    reference."""
    from diffusers import DDPMScheduler

    from guidance.priors.base import scaled_linear_alphas_cumprod

    ref = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod
    assert torch.allclose(scaled_linear_alphas_cumprod(), ref.float(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("divergence,h", [("jensen_shannon", lambda r: r / (1 + r)), ("forward_kl", lambda r: r)])
def test_fdiv_matches_its_formula(prior, divergence, h):
    """G = w(t) h(r) / mean(h) (eps_y - eps_phi(c)), r = exp(log p_t / q_t) clipped to [0.1, 20], with r, h
    and the fake score's prediction computed here (the exact ratio over renders at one camera)."""
    torch.manual_seed(2)
    fdiv = make_guidance("fdiv", prior, ratio="exact", guidance_scale=1.0, divergence=divergence, t_max=0.9)
    x = torch.randn(24, D) * 0.7
    got = grad_of(fdiv, x)
    g = torch.Generator().manual_seed(0)
    t = replay_t(24, 20, 900, g)
    ab = abar(prior, t)
    x_t = noised_by_hand(prior, x, t, g)
    log_p = -((x_t.double() - ab.sqrt() * MU) ** 2).sum(-1) / (2 * (ab[:, 0] * SIGMA_Y**2 + 1 - ab[:, 0])) \
        - D / 2 * torch.log(2 * math.pi * (ab[:, 0] * SIGMA_Y**2 + 1 - ab[:, 0]))
    d2 = ((x_t.double()[:, None] - ab.sqrt()[:, :, None] * x.double()[None]) ** 2).sum(-1)  # all 24 renders at one camera
    log_q = torch.logsumexp(-d2 / (2 * (1 - ab)), -1) - math.log(24) - D / 2 * torch.log(2 * math.pi * (1 - ab[:, 0]))
    r = (log_p - log_q).exp().clamp(0.1, 20)
    weight = h(r) / h(r).mean()
    assert weight.std() > 0.05  # the weights differ across the batch
    with torch.no_grad():
        e_fake = fdiv.fake(x_t, t, cams(24)).double()
    want = (1 - ab) * weight[:, None] * (eps(prior, x_t, t, "y") - e_fake)
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-5)


def test_mixed_absolute_and_share_schedules_are_checked_at_the_runs_length():
    from dream3d.config import load_config

    mix = ["guidance.t_min=[0,0.02,0.6,5]", "guidance.t_max=[20%,0.98,0.5,20%]"]
    with pytest.raises(ConfigError, match=r"must be < guidance.t_max .*of a 5-step run"):
        load_config("configs/toy/sds-nerf.yaml", ["train.steps=5", *mix])
    load_config("configs/toy/sds-nerf.yaml", ["train.steps=5", "guidance.t_min=[0,0.02,0.4,5]", mix[1]])


def test_a_schedule_that_jumps_is_checked_after_its_jump():
    """[s, a, b, s] holds a up to step s and b after it: t_min < t_max is checked just after s too."""
    from dream3d.config import load_config

    jump = "guidance.t_max=[2,0.98,0.5,2]"
    with pytest.raises(ConfigError, match=r"guidance.t_min \(0.6\) must be < guidance.t_max \(0.5\) at step 3"):
        load_config("configs/toy/sds-nerf.yaml", ["train.steps=5", "guidance.t_min=0.6", jump])
    load_config("configs/toy/sds-nerf.yaml", ["train.steps=5", "guidance.t_min=0.4", jump])
