"""NeRF geometry tools: normals from the density gradient, DreamFusion shading, the orientation
and opacity losses, progressive grid levels."""
import math

import pytest
import torch

from dream3d.kernel.cameras import Cameras, CameraSampler
from dream3d.lifecycle import load_run
from dream3d.runs import RunDir
from dream3d.trainer import Trainer
from renderers.nerf.normals import with_normals
from renderers.nerf.scene import NeRFConfig, NeRFScene
from renderers.nerf.shading import ALBEDO, LAMBERTIAN, TEXTURELESS, Lighting, sample_lighting, shade
from renderers.nerf.volume_rendering import render_rays
from tests.conftest import tiny_config

RADIUS = 0.4


def soft_sphere(points):
    """A sphere of radius 0.4 with a smooth (differentiable) surface, coloured grey."""
    sigma = 300.0 * torch.sigmoid((RADIUS - points.norm(dim=-1)) / 0.01)
    return sigma, torch.full_like(points, 0.5)


def angle_deg(a, b):
    cos = (torch.nn.functional.normalize(a, dim=-1) * torch.nn.functional.normalize(b, dim=-1)).sum(-1)
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))


@pytest.mark.parametrize("method", ["analytic", "finite_difference"])
def test_sphere_normals_point_outward(method):
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(2000, 3, generator=g), dim=-1)
    radii = RADIUS + (torch.rand(2000, 1, generator=g) - 0.5) * 0.04  # within the surface's soft shell
    points = dirs * radii
    sigma, albedo, normals = with_normals(soft_sphere, method, eps=1e-3)(points)
    assert angle_deg(normals, dirs).max() < 5.0
    assert torch.allclose(normals.norm(dim=-1), torch.ones(2000), atol=1e-4)
    assert sigma.shape == (2000,) and albedo.shape == (2000, 3)


@pytest.mark.parametrize("method", ["analytic", "finite_difference"])
def test_rendered_normal_map_of_a_sphere(method):
    """The composited normal of each pixel is the sphere's normal where its ray hits it."""
    cams = Cameras.make([20.0], [30.0])
    o, d = (v.reshape(-1, 3) for v in cams.rays(32, 32))
    out = render_rays(with_normals(soft_sphere, method, eps=1e-3), o, d, 0.6, 256, perturb=False)
    hit = out.opacity[:, 0] > 0.99
    # analytic first hit of each ray with the sphere
    b = (o * d).sum(-1)
    t = -b - (b**2 - (o * o).sum(-1) + RADIUS**2).clamp(min=0).sqrt()
    truth = o + t[:, None] * d
    facing = hit & (angle_deg(-d, truth) < 60)  # grazing rays average normals over a long path in the shell
    assert facing.sum() > 100
    assert angle_deg(out.normal[facing], truth[facing]).max() < 5.0
    assert out.orientation[hit].max() < 1e-3  # every visible normal faces the camera


def test_orientation_penalty_catches_normals_facing_away_and_trains_the_field():
    cams = Cameras.make([0.0], [0.0])
    o, d = (v.reshape(-1, 3) for v in cams.rays(16, 16))
    outward = with_normals(soft_sphere)

    def inward(p):
        sigma, albedo, n = outward(p)
        return sigma, albedo, -n

    hit = render_rays(outward, o, d, 0.6, 128, perturb=False).opacity[:, 0] > 0.99
    good = render_rays(outward, o, d, 0.6, 128, perturb=False).orientation[hit]
    bad = render_rays(inward, o, d, 0.6, 128, perturb=False).orientation[hit]
    assert good.mean() < 1e-3 and bad.mean() > 0.4  # E[cos^2] over a sphere's disk is 1/2

    scene = NeRFScene(NeRFConfig(orientation_weight=1.0, samples_per_ray=32))
    out = scene.render(cams, 8, 8, torch.Generator().manual_seed(0))
    assert out.normal.shape == (1, 3, 8, 8)
    loss = scene.regularizers(out, 0)["orientation"]
    loss.backward()  # second-order autograd through the grid encoding and the MLP
    grads = [p.grad for p in scene.field.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_shading_modes():
    albedo = torch.tensor([[[0.8, 0.2, 0.1], [0.8, 0.2, 0.1]]]).expand(3, 2, 3)
    normal = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]]).expand(3, 2, 3)  # facing, away from the light
    light = torch.tensor([[0.0, 0.0, 1.0]]).expand(3, 3)
    out = shade(albedo, normal, torch.ones(3, 2, 1), Lighting(torch.tensor([ALBEDO, LAMBERTIAN, TEXTURELESS]), light),
                ambient=0.1, diffuse=0.9)
    assert torch.allclose(out[0], albedo[0])  # albedo: untouched
    assert torch.allclose(out[1, 0], albedo[0, 0]) and torch.allclose(out[1, 1], 0.1 * albedo[0, 1])
    assert torch.allclose(out[2, 0], torch.ones(3)) and torch.allclose(out[2, 1], torch.full((3,), 0.1))

    pos = torch.tensor([[0.0, 0.0, 2.5]]).expand(2000, 3)
    g = torch.Generator().manual_seed(0)
    mix = sample_lighting(pos, g, albedo_ratio=0.2, textureless_ratio=0.5, light_jitter=0.0)
    shares = [float((mix.mode == m).float().mean()) for m in (ALBEDO, LAMBERTIAN, TEXTURELESS)]
    assert shares == pytest.approx([0.2, 0.4, 0.4], abs=0.04)
    assert torch.allclose(mix.light_dir, torch.tensor([0.0, 0.0, 1.0]).expand(2000, 3))  # from the camera's side


def test_diffuse_scene_warms_up_on_albedo_then_shades():
    cfg = NeRFConfig(shading="diffuse", ambient_only_steps=10, albedo_ratio=0.0, textureless_ratio=1.0, blob_density=10.0,
                     samples_per_ray=32, sampler="dense")
    scene = NeRFScene(cfg)
    with torch.no_grad():
        scene.field.mlp[-1].bias[1:] = torch.tensor([3.0, -3.0, -3.0])  # a red field
    cams = CameraSampler().held_out(2)
    scene.begin_step(0)
    warm = scene.render(cams, 8, 8, torch.Generator().manual_seed(0))
    assert warm.normal is None and (warm.rgb[:, 0] - warm.rgb[:, 1]).max() > 0.5  # albedo: red
    scene.begin_step(10)
    lit = scene.render(cams, 8, 8, torch.Generator().manual_seed(0))
    assert lit.normal is not None
    assert torch.allclose(lit.rgb[:, 0], lit.rgb[:, 1], atol=1e-5)  # textureless: grey
    fg = lit.alpha[:, 0] > 0.99
    assert (lit.rgb[:, 0][fg] < 0.999).any()  # lit, not flat white
    evaluation = scene.render(cams, 8, 8, train=False)
    assert evaluation.normal is None and (evaluation.rgb[:, 0] - evaluation.rgb[:, 1]).max() > 0.5


def test_opacity_entropy_pushes_opacity_to_zero_or_one():
    scene = NeRFScene(NeRFConfig(opacity_entropy_weight=1.0))
    alpha = torch.tensor([0.5, 0.2, 0.9, 1.0]).reshape(1, 1, 2, 2).requires_grad_(True)
    from renderers.base import RenderOutput

    loss = scene.regularizers(RenderOutput(alpha.expand(1, 3, 2, 2), alpha, alpha), 0)["opacity_entropy"]
    loss.backward()
    g = alpha.grad.flatten()
    assert g[0].abs() < 1e-6 and g[1] > 0 and g[2] < 0  # descent moves 0.2 down and 0.9 up
    assert float(loss.detach()) < math.log(2)


def test_progressive_levels_enable_finer_grids_over_steps(tmp_path):
    scene = NeRFScene(NeRFConfig(num_levels=4, levels_start=1, levels_every=5))
    enc = scene.field.encoding
    x = torch.rand(64, 3, generator=torch.Generator().manual_seed(0))
    feats = enc(x)
    assert enc.active_levels == 1 and feats[:, enc.features:].abs().max() == 0
    feats.sum().backward()
    grads = [p.grad for p in enc.parameters()]
    assert grads[0].abs().sum() > 0 and all(g is None or g.abs().sum() == 0 for g in grads[1:])
    scene.begin_step(12)
    assert enc.active_levels == 3 and enc(x)[:, :3 * enc.features].abs().min() > 0
    scene.begin_step(100)
    assert enc.active_levels == 4

    cfg = tiny_config(tmp_path, "scene.levels_start=1", "scene.levels_every=2", "scene.num_levels=4")
    trainer = Trainer(cfg, RunDir.create(str(tmp_path), cfg.prompt, "levels", cfg.seed))
    trainer.fit()
    restored, _ = load_run(trainer.run_dir.path)
    assert restored.scene.field.encoding.active_levels == 4  # step 6 -> 1 + 6 // 2, capped at 4


def test_shaded_training_with_geometry_losses_is_deterministic(tmp_path):
    extra = ("scene.shading=diffuse", "scene.ambient_only_steps=2", "scene.orientation_weight=[0, 0.1, 1.0, 6]",
             "scene.opacity_entropy_weight=0.01", "scene.levels_start=2", "scene.levels_every=3", "output.export.formats=[ply]")
    results = []
    for name in ("a", "b"):
        cfg = tiny_config(tmp_path / name, *extra)
        trainer = Trainer(cfg, RunDir.create(str(tmp_path / name), cfg.prompt, name, cfg.seed))
        trainer.fit()
        results.append(torch.cat([p.detach().flatten() for p in trainer.scene.parameters()]))
    assert torch.isfinite(results[0]).all() and torch.equal(results[0], results[1])
