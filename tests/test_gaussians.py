"""Gaussian splats: the torch rasterizer against an independent brute-force reference, gradients,
camera conventions, densification (including the opacity reset gsplat 1.5.3 never fires),
checkpoints that change size, PLY and mesh export."""
import math

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from dream3d.kernel.cameras import Cameras, CameraSampler
from dream3d.kernel.schema import ConfigError
from renderers import build_scene
from renderers.gaussians.model import knn_scales
from renderers.gaussians.rasterize import rasterize, view_colours
from renderers.gaussians.rasterize_torch import ALPHA_MAX, ALPHA_MIN, T_MIN, Projected, project, rasterize_torch
from renderers.gaussians.scene import GaussianConfig

GAUSSIAN_RUN = tiny_overrides("configs/toy/sds-gaussians.yaml") + ["output.export.formats=[glb,splat]"]


def brute_force(p: Projected, colors, opacities, width, height):
    """Every pixel x every Gaussian, depth-sorted, a sequential loop per Gaussian, no tiles:
    (colour [C,H,W,D], alpha [C,H,W,1], sum(w z) [C,H,W,1])."""
    C, _ = p.depths.shape
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys], -1).reshape(-1, 2).to(colors.dtype)
    images = []
    for c in range(C):
        vis = ((p.radii[c] > 0).all(-1) & (p.depths[c] > 0)).nonzero().squeeze(1)
        order = vis[torch.argsort(p.depths[c, vis], stable=True)].tolist()
        n = pix.shape[0]
        acc = torch.zeros(n, colors.shape[-1] + 2, dtype=colors.dtype)
        trans = torch.ones(n, dtype=colors.dtype)
        done = torch.zeros(n, dtype=torch.bool)
        for g in order:
            d = pix - p.means2d[c, g]
            a, b, cc = p.conics[c, g]
            sigma = 0.5 * (a * d[:, 0] ** 2 + cc * d[:, 1] ** 2) + b * d[:, 0] * d[:, 1]
            alpha = torch.clamp(opacities[g] * torch.exp(-sigma), max=ALPHA_MAX)
            skip = (sigma < 0) | (alpha < ALPHA_MIN)
            nxt = trans * (1 - alpha)
            stop = ~skip & (nxt <= T_MIN) & ~done
            use = ~skip & ~done & ~stop
            done = done | stop
            w = torch.where(use, alpha * trans, torch.zeros_like(alpha))
            acc = acc + w[:, None] * torch.cat([colors[c, g], p.depths[c, g].reshape(1), torch.ones(1, dtype=colors.dtype)])
            trans = torch.where(use, nxt, trans)
        images.append(acc.reshape(height, width, -1))
    out = torch.stack(images)
    D = colors.shape[-1]
    return out[..., :D], out[..., D + 1:], out[..., D:D + 1]


def random_scene(seed, n=200, sh_degree=0, opacity=0.6):
    torch.manual_seed(seed)
    scene = build_scene(GaussianConfig(num_points=n, init_radius=0.5, init_opacity=opacity, sh_degree=sh_degree))
    with torch.no_grad():
        g = scene.gaussians.params
        g["sh0"].normal_()
        g["shN"].normal_(std=0.3)
        g["scales"].add_(torch.randn_like(g["scales"]) * 0.5)
        g["quats"].normal_()
        g["opacities"].normal_(std=2.0)
    return scene


@pytest.mark.parametrize("seed,size,sh", [(0, (32, 32), 0), (1, (40, 24), 1), (2, (17, 48), 3)])
def test_torch_rasterizer_matches_brute_force(seed, size, sh):
    scene = random_scene(seed, sh_degree=sh)
    g = scene.gaussians
    cams = CameraSampler().sample(2, torch.Generator().manual_seed(seed))
    h, w = size
    viewmats, Ks = cams.viewmats(), cams.intrinsics(h, w)
    p = project(g.means, g.quats, g.scales, viewmats, Ks, w, h)
    colors = view_colours(g, viewmats)
    got = rasterize_torch(p, colors, g.opacities, w, h, tile=16, chunk=32)
    want = brute_force(p, colors, g.opacities, w, h)
    assert want[1].max() > 0.5  # the scene covers pixels
    for a, b, name in zip(got, want, ("colour", "alpha", "depth")):
        assert a.shape == b.shape, name
        assert (a - b).abs().max() < 1e-4, (name, float((a - b).abs().max()))


def test_early_termination_is_exercised_and_exact():
    """Opaque, dense Gaussians: pixels stop long before the last Gaussian, tiles drop out."""
    scene = random_scene(5, n=400, opacity=0.95)
    with torch.no_grad():
        scene.gaussians.params["opacities"].fill_(4.0)
    g = scene.gaussians
    cams = Cameras.make([10.0], [30.0])
    viewmats, Ks = cams.viewmats(), cams.intrinsics(32, 32)
    p = project(g.means, g.quats, g.scales, viewmats, Ks, 32, 32)
    colors = view_colours(g, viewmats)
    got = rasterize_torch(p, colors, g.opacities, 32, 32, chunk=8)
    want = brute_force(p, colors, g.opacities, 32, 32)
    assert (got[1] > 0.999).float().mean() > 0.2  # many pixels terminated
    assert (got[0] - want[0]).abs().max() < 1e-4 and (got[1] - want[1]).abs().max() < 1e-4


def test_gradients_by_gradcheck_on_a_tiny_case():
    torch.manual_seed(0)
    n, h, w = 4, 6, 6
    means2d = (torch.rand(1, n, 2, dtype=torch.float64) * 4 + 1).requires_grad_()
    conics = torch.tensor([[0.6, 0.1, 0.5]], dtype=torch.float64).repeat(1, n, 1).requires_grad_()
    colors = torch.rand(1, n, 3, dtype=torch.float64, requires_grad=True)
    opac = (torch.rand(n, dtype=torch.float64) * 0.5 + 0.3).requires_grad_()
    depths = torch.arange(1.0, n + 1, dtype=torch.float64)[None]
    radii = torch.full((1, n, 2), 4, dtype=torch.int32)

    def f(m2, con, col, op):
        rgb, alpha, depth = rasterize_torch(Projected(m2, con, depths, radii), col, op, w, h, tile=4, chunk=2)
        return rgb, alpha, depth

    assert torch.autograd.gradcheck(f, (means2d, conics, colors, opac), eps=1e-6, atol=1e-5)


def test_projection_agrees_with_the_nerf_rays():
    """A point on the ray through pixel (i, j) projects to that pixel's centre (j + 0.5, i + 0.5)."""
    cams = CameraSampler().sample(3, torch.Generator().manual_seed(1))
    h, w = 20, 30
    origins, dirs = cams.rays(h, w)
    i, j = 7, 23
    pts = origins[:, i, j] + 2.0 * dirs[:, i, j]  # [3 cams, 3]
    for c in range(3):
        p = project(pts[c:c + 1], torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.01),
                    cams.viewmats()[c:c + 1], cams.intrinsics(h, w)[c:c + 1], w, h)
        assert torch.allclose(p.means2d[0, 0], torch.tensor([j + 0.5, i + 0.5]), atol=1e-3)


def test_knn_scales_on_a_grid():
    pts = torch.stack(torch.meshgrid(*[torch.arange(5.0)] * 3, indexing="ij"), -1).reshape(-1, 3) * 0.1
    s = knn_scales(pts, k=3, chunk=16)
    assert torch.allclose(s[62], torch.tensor(0.1))  # an inner point: its 3 nearest are 0.1 away


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for gsplat's kernels")
def test_torch_rasterizer_matches_gsplat_on_cuda():
    scene = random_scene(3, n=500)
    cams = CameraSampler().sample(2, torch.Generator().manual_seed(0))
    cpu = rasterize(scene.gaussians, cams, 32, 32)
    scene.cuda()
    gpu = rasterize(scene.gaussians, cams, 32, 32)
    for a, b in zip(cpu[:3], gpu[:3]):
        assert (a - b.cpu()).abs().max() < 1e-3


def _fake_backward(scene, cams, res=32):
    out = scene.render(cams, res, res)
    (out.rgb.sum() * 10).backward()
    return out


def test_densification_grows_and_keeps_the_optimiser_in_step():
    from dream3d.trainer import make_optimizer
    from guidance import build_guidance
    from guidance.core import GuidanceConfig
    from guidance.priors import ToyWorldPrior

    scene = build_scene(GaussianConfig(num_points=200, densify_from=0, densify_every=2, densify_grad_threshold=1e-6,
                                       max_gaussians=300))
    opt = make_optimizer(scene, build_guidance(GuidanceConfig(), ToyWorldPrior()))
    cams = CameraSampler().sample(2, torch.Generator().manual_seed(0))
    for step in range(6):  # densifies at steps 2 and 4; the last step is a plain optimiser step
        opt.zero_grad()
        out = _fake_backward(scene, cams)
        scene.post_backward(step, out, opt)
        opt.step()
    n = len(scene.gaussians)
    assert 200 < n <= 300  # grew, and the cap held
    for group in opt.param_groups:
        for p in group["params"]:
            assert p is scene.gaussians.params[group["name"]]
            if p.numel():  # (shN is empty at SH degree 0)
                assert opt.state[p]["exp_avg"].shape == p.shape


def test_render_output_carries_typed_densify_info_and_the_config_maps_to_the_densifier():
    from renderers.base import DensifyInfo

    cfg = GaussianConfig(num_points=50, densify=False, densify_from=3, densify_until=9, max_gaussians=70)
    scene = build_scene(cfg)
    out = scene.render(CameraSampler().sample(2, torch.Generator().manual_seed(0)), 12, 16)
    info = out.densify
    assert isinstance(info, DensifyInfo) and (info.width, info.height, info.n_cameras) == (16, 12, 2)
    assert info.means2d.shape == (2, 50, 2) and info.radii.shape == (2, 50, 2)
    out.rgb.sum().backward()
    assert info.means2d.grad is not None  # kept for densification (a non-leaf tensor)
    d = scene.densifier.config
    assert (d.grow_grad2d, d.every, d.max_gaussians, d.scene_scale) == (0.01, 100, 70, cfg.bound)
    assert (scene.densifier.config.start, scene.densifier.config.stop) == (3, 0)  # densify=false: never refines
    assert out.orientation is None and out.normal is None


def test_scene_capabilities_are_declared(tmp_path):
    from renderers import NeRFConfig

    gaussians, nerf = build_scene(GaussianConfig(num_points=20)), build_scene(NeRFConfig())
    assert gaussians.supports_splats() and not nerf.supports_splats()
    with pytest.raises(NotImplementedError, match="only Gaussian scenes"):
        nerf.write_splats(tmp_path / "x.ply")
    assert nerf.surface_maps(CameraSampler().held_out(1), 8) is None  # export marches the density instead
    assert (gaussians.isosurface_method(), nerf.isosurface_method()) == ("hull", "visibility")  # export method "auto"
    opaque, dist = gaussians.surface_maps(CameraSampler().held_out(1), 8)
    assert opaque.shape == dist.shape == (1, 1, 8, 8)
    from dream3d.export import export_scene
    from dream3d.export.config import ExportConfig

    with pytest.raises(ValueError, match="'splat' needs a Gaussian scene, not NeRFScene"):
        export_scene(nerf, tmp_path / "model", ExportConfig(formats=["splat"]))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("elevation,pixel", [(0.0, (16, 16)), (30.0, (16, 16)), (30.0, (4, 28))])
def test_carving_depth_is_where_the_ray_enters_the_splats_outline(elevation, pixel):
    """surface_maps' depth of one opaque, anisotropic Gaussian at the pixel whose ray passes through its centre:
    the entry of that ray into the ellipsoid where the Gaussian's own alpha is 1/2 (Mahalanobis radius
    sqrt(2 ln 2o)), not its centre, so that carving agrees with the outline (alpha 1/2 at the same radius).
    Off the camera's axis (pixel (4, 28), 20.5 degrees) the z-depth and the distance along the ray differ."""
    scene = build_scene(GaussianConfig(num_points=1))
    sigma, opacity = np.array([0.05, 0.08, 0.12]), 0.99
    cams = CameraSampler().orbit(1, elevation=elevation, offset=20.0)
    origins, dirs = cams.rays(33, 33)  # odd size: pixel (16, 16) looks along the camera's axis
    o, d = origins[0, pixel[0], pixel[1]].double().numpy(), dirs[0, pixel[0], pixel[1]].double().numpy()
    t_centre = 2.0  # the Gaussian's centre lies on that pixel's ray, this far along it
    with torch.no_grad():
        p = scene.gaussians.params
        p["means"].copy_(torch.tensor(o + t_centre * d, dtype=torch.float32)[None])
        p["scales"].copy_(torch.tensor(np.log(sigma), dtype=torch.float32)[None])
        p["quats"].copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))  # axis-aligned
        p["opacities"].fill_(math.log(opacity / (1 - opacity)))
    opaque, dist = scene.surface_maps(cams, 33)
    along = 1 / np.sqrt((d ** 2 / sigma ** 2).sum())  # the Gaussian's standard deviation along the ray
    expected = t_centre - np.sqrt(2 * np.log(2 * opacity)) * along
    assert opaque[0, 0, pixel[0], pixel[1]] == 1
    assert float(dist[0, 0, pixel[0], pixel[1]]) == pytest.approx(expected, abs=1e-4)
    assert t_centre - expected > 0.05  # far from the centre's depth: the test can tell them apart


def test_opacity_reset_fires():
    """gsplat 1.5.3's own reset is dead code; ours runs at every `opacity_reset_every` steps."""
    from dream3d.trainer import make_optimizer
    from guidance import build_guidance
    from guidance.core import GuidanceConfig
    from guidance.priors import ToyWorldPrior

    scene = build_scene(GaussianConfig(num_points=100, init_opacity=0.9, densify_from=1000, densify_until=100,
                                       opacity_reset_every=5, prune_opacity=0.01))
    opt = make_optimizer(scene, build_guidance(GuidanceConfig(), ToyWorldPrior()))
    cams = CameraSampler().sample(1, torch.Generator().manual_seed(0))
    out = _fake_backward(scene, cams)
    scene.post_backward(4, out, opt)
    assert scene.gaussians.opacities.max() > 0.85  # not a reset step
    out = _fake_backward(scene, cams)
    scene.post_backward(5, out, opt)
    assert scene.gaussians.opacities.max() <= 0.02 + 1e-6


def test_density_and_colour_fields_match_the_dense_sums():
    scene = random_scene(4, n=150)
    g = scene.gaussians
    pts = torch.rand(3000, 3) - 0.5
    from renderers.gaussians.gsplat_torch import quat_scale_to_covar_preci

    _, preci = quat_scale_to_covar_preci(g.quats.detach(), g.scales.detach(), compute_covar=False)
    d = pts[:, None] - g.means.detach()[None]
    w = g.opacities.detach()[None] * torch.exp(-0.5 * torch.einsum("ngi,gij,ngj->ng", d, preci, d))
    dense = w.sum(1)
    assert (scene.density(pts) - dense).abs().max() < 0.02 * dense.max()
    colour = (w @ g.albedo.detach()) / w.sum(1, keepdim=True)
    keep = dense > 0.05
    assert (scene.color(pts)[keep] - colour[keep]).abs().max() < 0.02


def test_run_resume_is_exact_through_densification(tmp_path):
    """Densification changes N mid-run; a resumed run matches an uninterrupted one exactly."""
    from dream3d.config import load_config
    from dream3d.lifecycle import load_run, resume_run, start_run

    common = GAUSSIAN_RUN + [f"output.out_dir={tmp_path}", "output.turntable_frames=0", "scene.densify_grad_threshold=1e-5"]
    full = start_run(load_config("configs/toy/sds-gaussians.yaml", common + ["output.name=full"]))
    half = start_run(load_config("configs/toy/sds-gaussians.yaml", common + ["output.name=half", "train.steps=3"]))
    resume_run(half["run_dir"], ("train.steps=6",), progress=False)
    a, _ = load_run(full["run_dir"])
    b, _ = load_run(half["run_dir"])
    assert len(a.scene.gaussians) != 300  # densification changed the count
    from test_presets import assert_same_state

    assert_same_state(a.scene.state_dict(), b.scene.state_dict())


def test_splat_ply_has_the_3dgs_layout(tmp_path):
    from plyfile import PlyData

    from dream3d.config import load_config
    from dream3d.lifecycle import start_run

    result = start_run(load_config("configs/toy/sds-gaussians.yaml", GAUSSIAN_RUN + [f"output.out_dir={tmp_path}",
                                                                                    "scene.sh_degree=1"]))
    files = result["export"]["files"]
    names = [p.name for p in PlyData.read(files["splat"])["vertex"].properties]
    assert names == (["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(9)]
                     + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    from dream3d.lifecycle import load_run
    from renderers.gaussians.splat_files import read_splat_file

    ply = read_splat_file(files["splat"], "ply")
    trainer, _ = load_run(result["run_dir"])
    g = trainer.scene.gaussians
    assert len(ply["means"]) == len(g)
    np.testing.assert_allclose(ply["means"] * [-1, -1, 1], g.means.detach().numpy(), atol=1e-6)  # viewers' frame
    np.testing.assert_allclose(ply["opacities"], g.params["opacities"].detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(ply["scales"], g.params["scales"].detach().numpy(), atol=1e-6)
    from dream3d.export import load_mesh

    mesh = load_mesh(files["glb"])
    assert len(mesh.faces) > 0 and np.isfinite(mesh.vertices).all()
    assert np.abs(mesh.vertices).max() <= trainer.scene.bound + 0.05


def test_splat_format_needs_a_gaussian_scene():
    from dream3d.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="'splat' needs scene.name=gaussians"):
        load_config("configs/toy/sds-nerf.yaml", ["output.export.formats=[glb,splat]"])


def test_bad_init_options_are_config_errors(tmp_path):
    from dream3d.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="init_shape"):
        load_config("configs/toy/sds-gaussians.yaml", ["scene.init=shape", "scene.init_shape=dragon"])
    with pytest.raises(ConfigError, match="init_points"):
        load_config("configs/toy/sds-gaussians.yaml", ["scene.init=points"])


def test_init_from_a_point_file_and_a_shape(tmp_path):
    import trimesh

    pts = np.random.default_rng(0).uniform(-0.3, 0.3, (500, 3))
    cloud = trimesh.PointCloud(pts, colors=np.tile([255, 0, 0, 255], (500, 1)))
    cloud.export(tmp_path / "pts.ply")
    scene = build_scene(GaussianConfig(init="points", init_points=str(tmp_path / "pts.ply")))
    assert len(scene.gaussians) == 500
    assert torch.allclose(scene.gaussians.albedo, torch.tensor([1.0, 0, 0]).expand(500, 3), atol=1e-5)
    from dream3d.scenes import build_run_scene

    cube = build_run_scene(GaussianConfig(init="shape", init_shape="cube", num_points=1000), seed=3)
    assert cube.gaussians.means.abs().max() <= 0.5 and math.isclose(len(cube.gaussians), 1000)
    again = build_run_scene(GaussianConfig(init="shape", init_shape="cube", num_points=1000), seed=3)
    other = build_run_scene(GaussianConfig(init="shape", init_shape="cube", num_points=1000), seed=4)
    assert torch.equal(cube.gaussians.means, again.gaussians.means)  # the init follows the run's seed
    assert not torch.equal(cube.gaussians.means, other.gaussians.means)
    with pytest.raises(ConfigError, match="init=shape needs"):
        build_scene(GaussianConfig(init="shape", init_shape="cube"))
