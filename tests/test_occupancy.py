"""Empty-space skipping for the NeRF on the CPU: the occupancy grid keeps every sample that
matters, and the skipping sampler renders the dense sampler's image."""
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dream3d.config import load_config
from dream3d.kernel.cameras import CameraSampler
from dream3d.toyworld import parse_prompt, render_gt
from dream3d.toyworld.geometry import inside
from dream3d.toyworld.metrics import psnr, silhouette_iou
from renderers.nerf.occupancy import OccupancyGrid
from renderers.nerf.scene import NeRFConfig, NeRFScene
from renderers.nerf.volume_rendering import render_rays

BOUND = 0.6


def sphere_field(points):
    """An opaque sphere of radius 0.5 (density 200 inside, 0 outside), coloured by position."""
    return inside("sphere", points).float() * 200.0, (points + BOUND) / (2 * BOUND)


def render(field, cams, res, grid, perturb=False):
    o, d = (v.reshape(-1, 3) for v in cams.rays(res, res))
    rgb, alpha, depth = render_rays(field, o, d, BOUND, 128, perturb, torch.Generator().manual_seed(0), grid)[:3]
    return rgb.reshape(len(cams), res, res, 3), alpha.reshape(len(cams), 1, res, res)


def test_analytic_density_renders_the_analytic_silhouette_with_either_sampler():
    cams = CameraSampler().held_out(4)
    _, mask = render_gt(parse_prompt("a sphere"), cams, 48)
    grid = OccupancyGrid(BOUND, 32, threshold=0.5)
    grid.update(lambda p: sphere_field(p)[0], torch.Generator().manual_seed(0))
    assert 0.3 < grid.occupied_fraction < 0.7  # the sphere fills 0.30 of the box; dilation adds a shell
    dense_rgb, dense_alpha = render(sphere_field, cams, 48, None)
    skip_rgb, skip_alpha = render(sphere_field, cams, 48, grid)
    assert silhouette_iou(dense_alpha, mask) > 0.97 and silhouette_iou(skip_alpha, mask) > 0.97
    assert psnr(dense_rgb, skip_rgb) > 40 and psnr(dense_alpha, skip_alpha) > 40


def test_skipping_sampler_evaluates_far_fewer_samples_for_the_same_gradient():
    cams = CameraSampler().held_out(2)
    grid = OccupancyGrid(BOUND, 32, threshold=0.5)
    grid.update(lambda p: sphere_field(p)[0])
    calls = {"n": 0}
    scale = torch.ones(1, requires_grad=True)

    def counted(points):
        calls["n"] += len(points)
        sigma, rgb = sphere_field(points)
        return sigma * scale, rgb * scale

    grads, counts = [], []
    for g in (None, grid):
        calls["n"] = 0
        scale.grad = None
        rgb, alpha = render(counted, cams, 32, g, perturb=True)
        (rgb.sum() + alpha.sum()).backward()
        grads.append(scale.grad.clone())
        counts.append(calls["n"])
    assert counts[1] < counts[0] / 4  # empty space and samples behind the surface are skipped
    assert torch.allclose(grads[0], grads[1], rtol=1e-3)


@settings(max_examples=25, deadline=None)
@given(centres=st.lists(st.tuples(*[st.floats(-0.45, 0.45)] * 3), min_size=1, max_size=4),
       width=st.floats(0.02, 0.15), peak=st.floats(1.0, 500.0), seed=st.integers(0, 2**16))
def test_occupancy_grid_never_drops_a_sample_above_the_threshold(centres, width, peak, seed):
    """Fields of Gaussian blobs at least a cell wide (a 64^3 grid: 1.2 / 64 = 0.019):
    after one update, every point whose density exceeds the threshold is in an occupied cell."""
    c = torch.tensor(centres)

    def density(p):
        return peak * torch.exp(-((p[:, None] - c[None]) ** 2).sum(-1) / (2 * width ** 2)).sum(-1)

    grid = OccupancyGrid(BOUND, 64)
    grid.update(density, torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + 1)
    points = torch.cat([torch.rand(20000, 3, generator=gen) * 2 * BOUND - BOUND,  # anywhere, and near the blobs
                        c[torch.randint(len(c), (4000,), generator=gen)] + torch.randn(4000, 3, generator=gen) * width])
    points = points.clamp(-BOUND, BOUND)
    above = density(points) > grid.threshold
    assert grid(points)[above].all()


def test_occupancy_state_is_checkpointed_and_old_checkpoints_still_load():
    scene = NeRFScene(NeRFConfig())
    scene.post_backward(0, None)
    state = scene.state_dict()
    assert "occupancy.density" in state and "occupancy.occupied" in state
    fresh = NeRFScene(NeRFConfig())
    fresh.load_state_dict(state)
    assert torch.equal(fresh.occupancy.occupied, scene.occupancy.occupied)
    old = {k: v for k, v in state.items() if not k.startswith("occupancy.")}  # saved before occupancy grids
    fresh = NeRFScene(NeRFConfig())
    fresh.load_state_dict(old)
    assert fresh.occupancy.occupied.all()
    assert NeRFScene(load_config("configs/toy/sds-nerf.yaml", ["scene.sampler=dense"]).scene).occupancy is None


def test_the_initial_blob_stops_holding_cells_soon():
    """The capped moving maximum forgets a density of e^10 within a few updates."""
    grid = OccupancyGrid(BOUND, 64)
    grid.update(lambda p: torch.full((len(p),), 22026.0))
    assert grid.occupied.all()
    for _ in range(8):
        grid.update(lambda p: torch.zeros(len(p)))
    assert not grid.occupied.any()


def test_grid_cells_match_their_points():
    grid = OccupancyGrid(BOUND, 4)
    pts = torch.tensor([[-0.6, -0.6, -0.6], [0.6, 0.6, 0.6], [-0.01, 0.01, 0.29], [0.31, -0.31, 0.0]])
    ijk = np.array([[0, 0, 0], [3, 3, 3], [1, 2, 2], [3, 0, 2]])
    assert grid.cell_index(pts).tolist() == [(i * 4 + j) * 4 + k for i, j, k in ijk]
