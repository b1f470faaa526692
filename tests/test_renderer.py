import torch

from dream3d.kernel.cameras import Cameras, CameraSampler, view_bucket
from dream3d.kernel.rays import ray_aabb
from renderers import NeRFConfig, NeRFScene
from renderers.nerf.encoding import GridEncoding, dense_lookup, grid_sample_lookup, hash_index
from renderers.nerf.volume_rendering import render_rays


def test_camera_frame_conventions():
    cams = Cameras.make([0.0, 0.0, 90.0 - 1e-3], [0.0, 90.0, 0.0], distance=2.0)
    pos = cams.positions
    assert torch.allclose(pos[0], torch.tensor([0.0, 0.0, 2.0]), atol=1e-5)  # azimuth 0 on +Z
    assert torch.allclose(pos[1], torch.tensor([2.0, 0.0, 0.0]), atol=1e-5)  # azimuth 90 on +X
    o, d = cams[:1].rays(3, 3)
    assert torch.allclose(d[0, 1, 1], torch.tensor([0.0, 0.0, -1.0]), atol=1e-5)  # centre ray looks at the origin
    assert d[0, 0, 1, 1] > d[0, 2, 1, 1]  # top image row looks up (+Y)
    assert d[0, 1, 2, 0] > d[0, 1, 0, 0]  # right image column looks to +X from the front
    assert [view_bucket(10, a) for a in (0, 90, 180, -170)] == ["front", "side", "back", "back"]
    assert view_bucket(70, 0) == "overhead"


def test_ray_box_and_analytic_sphere_silhouette():
    radius = 0.4

    def field(p):
        return torch.where(p.norm(dim=-1) < radius, 1e4, 0.0), torch.ones_like(p) * 0.5

    cams = Cameras.make([0.0], [0.0])
    o, d = cams.rays(48, 48)
    rgb, opacity, depth = render_rays(field, o.reshape(-1, 3), d.reshape(-1, 3), 0.6, 256, perturb=False)[:3]
    # analytic: rays whose closest approach to the origin is < radius
    closest = torch.linalg.cross(o.reshape(-1, 3), d.reshape(-1, 3)).norm(dim=-1)
    truth = closest < radius
    pred = opacity[:, 0] > 0.5
    assert (pred == truth).float().mean() > 0.99
    c2 = closest[truth & pred] ** 2
    assert torch.allclose(depth[truth & pred, 0], (2.5**2 - c2).sqrt() - (radius**2 - c2).sqrt(), atol=0.02)
    near, far, hit = ray_aabb(torch.tensor([[0.0, 0.0, 2.0]]), torch.tensor([[0.0, 0.0, -1.0]]), 0.5)
    assert hit.all() and torch.allclose(near, torch.tensor([1.5])) and torch.allclose(far, torch.tensor([2.5]))


def test_grid_encoding_dense_and_hashed_levels():
    enc = GridEncoding(num_levels=3, base_resolution=8, max_resolution=64, features=2, log2_hashmap_size=12)
    assert len(enc.dense) == 1 and len(enc.hashed) == 2  # 8^3 fits 2^12 rows, 22^3 and 64^3 do not
    x = torch.rand(100, 3)
    out = enc(x)
    assert out.shape == (100, 6)
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    idx = hash_index(torch.randint(0, 64, (1000, 3)), 4096)
    assert idx.min() >= 0 and idx.max() < 4096


def test_dense_level_interpolates_trilinearly():
    enc = GridEncoding(num_levels=1, base_resolution=2, max_resolution=2, features=1)
    with torch.no_grad():
        enc.dense[0].copy_(torch.arange(8.0).reshape(1, 1, 2, 2, 2))  # value = 4 z + 2 y + x
    p = torch.tensor([[0.25, 0.5, 1.0]])
    assert torch.allclose(enc(p), torch.tensor([[4 * 1.0 + 2 * 0.5 + 0.25]]))


def test_dense_lookup_matches_3d_grid_sample():
    """The stacked-slices lookup against PyTorch's 3D trilinear sampler on a grid with D, H, W all
    different (a swapped axis or a wrong slice stride fails): values, gradients to the grid and to
    the points, and the second derivative analytic normals need."""
    torch.manual_seed(0)
    grid = torch.randn(1, 3, 5, 7, 9, dtype=torch.float64, requires_grad=True)
    x = torch.rand(500, 3, dtype=torch.float64).requires_grad_(True)
    x_edges = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.3, 1.0, 0.0]], dtype=torch.float64)

    assert torch.allclose(dense_lookup(grid, x_edges), grid_sample_lookup(grid, x_edges), atol=1e-9)
    x_out = torch.tensor([[0.5, 1.2, 0.5], [-0.1, 0.3, 1.3]], dtype=torch.float64)  # outside: the border's value
    assert torch.allclose(dense_lookup(grid, x_out), grid_sample_lookup(grid, x_out.clamp(0, 1)), atol=1e-9)
    mine, ref = dense_lookup(grid, x), grid_sample_lookup(grid, x)
    assert torch.allclose(mine, ref, atol=1e-9)
    w = torch.randn_like(ref)
    g_mine = torch.autograd.grad((mine * w).sum(), (grid, x), create_graph=True)
    g_ref = torch.autograd.grad((ref * w).sum(), (grid, x), create_graph=True)
    for a, b in zip(g_mine, g_ref):
        assert torch.allclose(a, b, atol=1e-9)
    (gg_mine,) = torch.autograd.grad(g_mine[1].square().sum(), grid)
    (gg_ref,) = torch.autograd.grad(g_ref[1].square().sum(), grid)
    assert torch.allclose(gg_mine, gg_ref, atol=1e-8)


def test_nerf_renders_blob_and_backpropagates():
    torch.manual_seed(0)
    scene = NeRFScene(NeRFConfig(samples_per_ray=32, max_resolution=32))
    cams = CameraSampler().sample(2, torch.Generator().manual_seed(0))
    out = scene.render(cams, 16, 16, torch.Generator().manual_seed(0))
    assert out.rgb.shape == (2, 3, 16, 16) and out.alpha.shape == (2, 1, 16, 16)
    assert out.alpha[:, :, 8, 8].min() > 0.99 and out.alpha[:, :, 0, 0].max() < 0.01  # blob in the middle
    assert torch.allclose(out.rgb[:, :, 0, 0], torch.ones(2, 3), atol=1e-3)  # white background
    out.rgb.mean().backward()
    assert all(p.grad is not None for g in scene.optimizer_groups() for p in g["params"])


def test_render_without_grad_is_chunked_identically():
    torch.manual_seed(0)
    scene = NeRFScene(NeRFConfig(max_resolution=32, chunk_rays=100))
    cams = Cameras.make([10.0], [30.0])
    with torch.no_grad():
        a = scene.render(cams, 16, 16, train=False).rgb
        scene.cfg.chunk_rays = 10_000
        b = scene.render(cams, 16, 16, train=False).rgb
    assert torch.allclose(a, b, atol=1e-6)
