import numpy as np
import pytest
import torch

from dream3d.kernel.cameras import Cameras
from dream3d.toyworld import COLOURS, SHAPES, PromptError, load_shape_views, parse_prompt, render_gt
from dream3d.toyworld.dataset import render_layers, tint
from dream3d.toyworld.geometry import inside, intersect, signed_distance


@pytest.mark.parametrize("prompt,shape,colours,marker", [
    ("a red cube", "cube", ("red",), None),
    ("A Blue BALL, side view", "sphere", ("blue",), None),
    ("donut", "torus", tuple(COLOURS), None),
    ("a green box with a yellow front", "cube", ("green",), "yellow"),
    ("the orange cone, front view", "cone", ("orange",), None),
])
def test_prompt_grammar(prompt, shape, colours, marker):
    item = parse_prompt(prompt)
    assert (item.shape, item.colours, item.marker) == (shape, colours, marker)


@pytest.mark.parametrize("prompt,word", [("a red dragon", "dragon"), ("", "empty"), ("a red blue cube", "one shape"),
                                         ("a cube with a pink front", "with a pink front")])
def test_prompt_errors_name_the_problem_and_vocabulary(prompt, word):
    with pytest.raises(PromptError) as e:
        parse_prompt(prompt)
    assert word in str(e.value) and "sphere" in str(e.value) and "red" in str(e.value)


@pytest.mark.parametrize("shape", SHAPES)
def test_ray_hits_lie_on_the_boundary(shape):
    cams = Cameras.make([5.0, 30.0, -8.0], [0.0, 100.0, 220.0])
    o, d = cams.rays(24, 24)
    t, n = intersect(shape, o, d)
    hit = torch.isfinite(t)
    assert hit.float().mean() > 0.05
    p = o[hit] + d[hit] * t[hit][:, None]
    assert inside(shape, p - 2e-3 * n[hit]).float().mean() > 0.98  # just inside along the normal
    assert (~inside(shape, p + 2e-3 * n[hit])).float().mean() > 0.98  # just outside
    assert ((n[hit] * d[hit]).sum(-1) < 1e-4).all()  # outward normals face the camera


@pytest.mark.parametrize("shape", SHAPES)
def test_signed_distance_is_the_distance_to_the_ray_cast_surface(shape):
    """Its sign is the inside test's; a step of 0.02 out along the outward normal of a ray-cast surface point is
    exactly 0.02 from the surface (on the torus's inner side too: 0.02 is short of the axis, 0.2 away); and the
    origin's distance is worked out by hand (the cone's: to its slant, 0.45 * 0.45 / sqrt(0.45^2 + 0.9^2))."""
    points = torch.rand(20000, 3, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.6
    d = signed_distance(shape, points)
    assert ((d <= 0) == inside(shape, points))[d.abs() > 1e-5].all()
    cams = Cameras.make([5.0, 30.0, -35.0, 60.0], [0.0, 100.0, 220.0, 300.0])  # undersides and tops too
    o, dirs = cams.rays(24, 24)
    t, n = intersect(shape, o, dirs)
    hit = torch.isfinite(t)
    p = o[hit] + dirs[hit] * t[hit][:, None]
    assert signed_distance(shape, p).abs().max() < 1e-4
    assert signed_distance(shape, p + 0.02 * n[hit]) == pytest.approx(torch.full((len(p),), 0.02), abs=1e-4)
    origin = {"sphere": -0.5, "cube": -0.4, "cylinder": -0.4, "cone": -0.45 * 0.45 / (0.45**2 + 0.9**2) ** 0.5,
              "torus": 0.35 - 0.15}[shape]
    assert float(signed_distance(shape, torch.zeros(3))) == pytest.approx(origin, abs=1e-6)


def test_front_marker_is_seen_from_the_front_only():
    item = parse_prompt("a blue cube with a yellow front")
    img, mask = render_gt(item, Cameras.make([10.0, 10.0], [0.0, 180.0]), 32)
    yellow = torch.nn.functional.normalize(torch.tensor(COLOURS["yellow"]), dim=0)[None, :, None, None]
    hue_match = (torch.nn.functional.normalize(img, dim=1) * yellow).sum(1) > 0.999  # shading scales, hue stays
    is_yellow = hue_match & (mask[:, 0] > 0.5)
    assert is_yellow[0].float().mean() > 0.2 and is_yellow[1].float().mean() == 0


def test_tint_is_exact_on_layers():
    layers = render_layers("sphere", Cameras.make([20.0], [30.0]), 16)
    img = tint(layers, "red")
    bg = layers[:, 0] < 1e-6
    assert torch.allclose(img[:, :, bg[0]], torch.ones(1, 3, int(bg.sum())))


def test_dataset_is_deterministic_and_cached():
    a = load_shape_views("cone", num_views=16, resolution=16, seed=3)
    b = load_shape_views("cone", num_views=16, resolution=16, seed=3)
    c = load_shape_views("cone", num_views=16, resolution=16, seed=4)
    assert torch.equal(a.layers, b.layers) and torch.equal(a.azimuth, b.azimuth)
    assert not torch.equal(a.azimuth, c.azimuth)
    assert a.images("red", None, 8).shape == (16, 3, 8, 8)


def test_corrupt_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("DREAM3D_CACHE", str(tmp_path))
    a = load_shape_views("sphere", num_views=8, resolution=8, seed=0)
    (f,) = list(tmp_path.rglob("*.pt"))
    f.write_bytes(b"garbage")
    b = load_shape_views("sphere", num_views=8, resolution=8, seed=0)
    assert torch.equal(a.layers, b.layers)


def test_front_biased_cameras_favour_the_front():
    from dream3d.toyworld.dataset import sample_dataset_cameras

    uni = sample_dataset_cameras(4000, 0, "uniform")
    fb = sample_dataset_cameras(4000, 0, "front_biased", kappa=2.0)
    front = lambda c: (c.azimuth.abs() < 45).float().mean()  # noqa: E731
    assert abs(front(uni) - 0.25) < 0.03 and front(fb) > 0.5
    assert ((uni.elevation >= -10) & (uni.elevation <= 45)).all()
    with pytest.raises(ValueError, match="uniform, front_biased"):
        sample_dataset_cameras(4, 0, "sideways")


def test_colour_free_prompt_is_the_mixture_over_colours():
    from guidance.priors import ToyWorldPrior, ToyWorldPriorConfig

    p = ToyWorldPrior(ToyWorldPriorConfig(num_views=8, dataset_resolution=8, resolution=8, view_conditioning="none"))
    assert p.view_set(p.embed("a cube")).x.shape[0] == 8 * len(COLOURS)
    assert p.view_set(p.embed("")).x.shape[0] == len(SHAPES) * len(COLOURS) * 8  # unconditional union


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_text_parses_or_raises_a_prompt_error(text):
    try:
        item = parse_prompt(text)
    except PromptError as e:
        assert "grammar: 'a [<colour>] <shape>" in str(e)  # every rejection teaches the grammar
    else:
        assert item.shape in SHAPES and set(item.colours) <= set(COLOURS)


# -- the camera- and text-conditioned denoiser against brute force ---------------------------------
def brute_force_eps(prior, x_t, t, keep):
    """eps = (x_t - a D) / s with D the posterior mean over the kept dataset views, one query and one
    view at a time in float64; keep(b, elevation, azimuth) says whether query b may use a view."""
    vs = prior.view_set(prior.embed("a red cube"))
    out = torch.empty(x_t.shape, dtype=torch.float64)
    for b in range(x_t.shape[0]):
        ab = float(prior.alphas_cumprod.double()[t[b]])
        logs, imgs = [], []
        for i in range(vs.x.shape[0]):
            if keep(b, float(vs.elevation[i]), float(vs.azimuth[i]), i):
                d2 = float(((x_t[b].reshape(-1).double() - ab**0.5 * vs.x[i].double()) ** 2).sum())
                logs.append(-d2 / (2 * (1 - ab)))
                imgs.append(vs.x[i].double())
        w = torch.softmax(torch.tensor(logs, dtype=torch.float64), 0)
        denoised = (w[:, None] * torch.stack(imgs)).sum(0).reshape(x_t.shape[1:])
        out[b] = (x_t[b].double() - ab**0.5 * denoised) / (1 - ab) ** 0.5
    return out


def angle(a):
    return (a + 180.0) % 360.0 - 180.0


def test_camera_conditioned_denoiser_matches_brute_force():
    """Camera conditioning: the views within +-window of the query camera (azimuth wrapped), or, when
    fewer than min_views are, those plus the min_views nearest."""
    from guidance.priors import ToyWorldPrior, ToyWorldPriorConfig

    prior = ToyWorldPrior(ToyWorldPriorConfig(num_views=48, dataset_resolution=16, resolution=8, window_azimuth=40.0,
                                              window_elevation=20.0, min_views=5))
    vs = prior.view_set(prior.embed("a red cube"))
    cams = Cameras.make([10.0, 40.0, 0.0, 30.0], [175.0, -60.0, 10.0, 90.0])
    gen = torch.Generator().manual_seed(0)
    x_t = torch.randn(4, 3, 8, 8, generator=gen)
    t = torch.tensor([100, 400, 700, 950])

    def dist(b, el, az):
        return abs(angle(az - float(cams.azimuth[b]))), abs(el - float(cams.elevation[b]))

    def keep(b, el, az, i):
        d_az, d_el = dist(b, el, az)
        inside = [j for j in range(len(vs.x)) if dist(b, float(vs.elevation[j]), float(vs.azimuth[j]))[0] < 40
                  and dist(b, float(vs.elevation[j]), float(vs.azimuth[j]))[1] < 20]
        if len(inside) >= 5:
            return d_az < 40 and d_el < 20
        sq = sorted(range(len(vs.x)), key=lambda j: sum(v * v for v in dist(b, float(vs.elevation[j]), float(vs.azimuth[j]))))
        return (d_az < 40 and d_el < 20) or i in sq[:5]

    windows = [sum(keep(b, float(vs.elevation[i]), float(vs.azimuth[i]), i) for i in range(len(vs.x))) for b in range(4)]
    assert min(windows) >= 5 and max(windows) < len(vs.x)  # a window, not everything
    want = brute_force_eps(prior, x_t, t, keep)
    got = prior.predict_eps(x_t, t, [prior.embed("a red cube")] * 4, cams)
    assert torch.allclose(got.double(), want, atol=1e-4)


def test_text_conditioned_denoiser_matches_brute_force():
    """Text conditioning: the views in the bucket the prompt's suffix names (front |az| < 45, back |az| >
    135, side between, overhead above 60 degrees), else the query camera's bucket."""
    from guidance.priors import ToyWorldPrior, ToyWorldPriorConfig

    prior = ToyWorldPrior(ToyWorldPriorConfig(num_views=48, dataset_resolution=16, resolution=8, view_conditioning="text"))

    def bucket(el, az):
        az = abs(angle(az))
        return "overhead" if el > 60 else "front" if az < 45 else "back" if az > 135 else "side"

    cams = Cameras.make([10.0, 20.0, 5.0], [0.0, 100.0, 170.0])
    texts = ["a red cube, back view", "a red cube", "a red cube, front view"]
    wanted = ["back", bucket(20.0, 100.0), "front"]
    x_t = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([200, 500, 800])
    want = brute_force_eps(prior, x_t, t, lambda b, el, az, i: bucket(el, az) == wanted[b])
    got = prior.predict_eps(x_t, t, [prior.embed(p) for p in texts], cams)
    assert torch.allclose(got.double(), want, atol=1e-4)
    unconditioned = brute_force_eps(prior, x_t, t, lambda b, el, az, i: True)
    assert (got.double() - unconditioned).abs().max() > 1e-2  # the buckets matter at these points


def test_chamfer_distance_to_the_true_surface():
    """Exact meshes of the true shapes (built by trimesh, not from the SDF) score ~0, with no floor: the former
    truth, marching cubes of an occupancy grid, scored the exact sphere 0.001. A sphere of radius 0.55 is 0.05
    from the true one (radius 0.5) everywhere."""
    import trimesh

    from dream3d.toyworld.geometry import CONE_HALF_HEIGHT, CONE_RADIUS, CUBE_HALF
    from dream3d.toyworld.metrics import chamfer_distance

    exact = trimesh.creation.icosphere(subdivisions=6, radius=0.5)
    assert chamfer_distance(exact.vertices, exact.faces, "sphere", n=5000) < 1e-4
    big = trimesh.creation.icosphere(subdivisions=5, radius=0.55)
    assert abs(chamfer_distance(big.vertices, big.faces, "sphere", n=5000) - 0.05) < 5e-4
    cone = trimesh.creation.cone(radius=CONE_RADIUS, height=2 * CONE_HALF_HEIGHT, sections=512)  # apex on +z
    cone.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))  # apex on +y
    cone.apply_translation([0, -CONE_HALF_HEIGHT, 0])
    assert chamfer_distance(cone.vertices, cone.faces, "cone", n=5000) < 1e-4  # its tip and rim included
    box = trimesh.creation.box(extents=[2 * CUBE_HALF] * 3)
    with torch.no_grad():  # as dream3d eval calls it
        assert chamfer_distance(box.vertices, box.faces, "cube", n=5000) < 1e-6
    shifted = box.copy()
    shifted.apply_translation([0.1, 0, 0])
    assert chamfer_distance(shifted.vertices, shifted.faces, "cube", n=5000) > 0.03
