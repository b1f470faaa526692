"""The pure-torch mesh rasteriser (renderers/mesh/rasterize_torch.py) against an independent
reference: brute-force ray casting of every pixel against every triangle, solved as a 3x3 linear
system (not Moller-Trumbore), and silhouette areas from the shoelace formula on a projection
written out here (not `project`)."""
import math

import pytest
import torch
import trimesh

from dream3d.kernel.cameras import Cameras
from renderers.mesh.rasterize_torch import antialias, interpolate, rasterize


def two_objects():
    """A sphere in front of a box (occlusion, two pieces), float64."""
    ball = trimesh.creation.icosphere(subdivisions=1, radius=0.3)
    ball.apply_translation([0.1, 0.05, 0.35])
    box = trimesh.creation.box(extents=[0.8, 0.5, 0.4])
    mesh = trimesh.util.concatenate([ball, box])
    return torch.tensor(mesh.vertices, dtype=torch.float64), torch.tensor(mesh.faces, dtype=torch.long)


def ray_cast(verts, faces, cameras, height, width):
    """For every pixel: the nearest triangle (-1 none), its ray distance and barycentrics, by solving
    [v1-v0, v2-v0, -d] (u, v, t) = o - v0 for every (pixel, triangle) pair."""
    o, d = cameras.rays(height, width)
    o, d = o.reshape(-1, 3).double(), d.reshape(-1, 3).double()
    tri = verts[faces]  # [F,3,3]
    A = torch.stack([(tri[:, 1] - tri[:, 0])[None].expand(o.shape[0], -1, -1),
                     (tri[:, 2] - tri[:, 0])[None].expand(o.shape[0], -1, -1),
                     -d[:, None].expand(-1, faces.shape[0], -1)], -1)  # [P,F,3,3]
    rhs = o[:, None] - tri[None, :, 0]
    ok = torch.linalg.det(A).abs() > 1e-12
    sol = torch.linalg.solve(torch.where(ok[..., None, None], A, torch.eye(3, dtype=A.dtype)), rhs)
    u, v, t = sol.unbind(-1)
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    t = torch.where(hit, t, torch.full_like(t, math.inf))
    best, face = t.min(1)
    face = torch.where(best.isfinite(), face, torch.full_like(face, -1))
    pick = lambda x: x.gather(1, face.clamp(min=0)[:, None]).squeeze(1)  # noqa: E731
    bary = torch.stack([1 - pick(u) - pick(v), pick(u), pick(v)], -1)
    B = len(cameras)
    return face.reshape(B, height, width), best.reshape(B, height, width), bary.reshape(B, height, width, 3)


def test_coverage_depth_and_attributes_match_ray_casting():
    verts, faces = two_objects()
    cams = Cameras.make([10.0, -5.0, 60.0], [0.0, 130.0, -70.0], distance=2.0)
    H, W = 24, 20  # not square: catches swapped axes
    rast = rasterize(verts, faces, cams, H, W)
    face, dist, bary = ray_cast(verts, faces, cams, H, W)
    assert torch.equal(rast.mask, face >= 0)
    assert rast.mask.float().mean() > 0.2
    m = rast.mask
    assert torch.allclose(rast.distance[m], dist[m], atol=1e-9)
    assert (rast.face[m] == face[m]).float().mean() > 0.99  # ties on shared edges may pick either triangle
    colours = torch.rand(verts.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    same = m & (rast.face == face)
    expected = (bary[..., None] * colours[faces[face.clamp(min=0)]]).sum(-2)
    assert torch.allclose(interpolate(colours, faces, rast)[same], expected[same], atol=1e-9)
    assert interpolate(colours, faces, rast)[~m].abs().max() == 0
    # the interpolated position is the hit point o + t d
    o, d = cams.rays(H, W)
    hit = o.double() + dist[..., None] * d.double()
    assert torch.allclose(interpolate(verts, faces, rast)[m], hit[m], atol=1e-9)


def test_chunked_candidates_give_the_same_image(monkeypatch):
    import renderers.mesh.rasterize_torch as rt

    verts, faces = two_objects()
    cams = Cameras.make([20.0], [30.0], distance=2.0)
    whole = rasterize(verts, faces, cams, 16, 16)
    monkeypatch.setattr(rt, "MAX_CANDIDATES", 7)
    chunked = rasterize(verts, faces, cams, 16, 16)
    assert torch.equal(whole.face, chunked.face)


def pixel_coords(verts, cam: Cameras, height, width):
    """Pixel coordinates [V,2] from the camera's basis (right, up, back) and vertical fov."""
    c2w = cam.c2w()[0].double()
    rel = verts - c2w[:3, 3]
    x, y, z = rel @ c2w[:3, 0], rel @ c2w[:3, 1], rel @ c2w[:3, 2]
    f = 0.5 * height / math.tan(math.radians(float(cam.fovy[0])) / 2)
    return torch.stack([width / 2 + f * x / -z, height / 2 - f * y / -z], -1)


def shoelace(p):
    return 0.5 * abs((p[1, 0] - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[2, 0] - p[0, 0]) * (p[1, 1] - p[0, 1]))


@pytest.mark.parametrize("corners", [
    [[-0.3, -0.25, 0.0], [0.35, -0.1, 0.05], [0.0, 0.3, -0.1]],
    [[-0.4, 0.0, 0.1], [0.2, -0.35, 0.0], [0.3, 0.33, -0.2]],
])
def test_antialiased_coverage_is_the_area_and_moves_with_the_vertices(corners):
    """Summed antialiased coverage of one triangle = its projected area in pixels (to ~1%), and its
    gradient with respect to the 3D vertices = the area's gradient (to ~5%)."""
    verts = torch.tensor(corners, dtype=torch.float64, requires_grad=True)
    faces = torch.tensor([[0, 1, 2]])
    cam = Cameras.make([15.0], [25.0], distance=2.0)
    H = W = 48
    rast = rasterize(verts, faces, cam, H, W)
    alpha = antialias(rast.mask[..., None].to(verts.dtype), faces, rast)
    covered = alpha.sum()
    area = shoelace(pixel_coords(verts, cam, H, W))
    assert float(covered.detach()) == pytest.approx(float(area.detach()), rel=0.01)
    g_cov, = torch.autograd.grad(covered, verts)
    g_area, = torch.autograd.grad(shoelace(pixel_coords(verts, cam, H, W)), verts)
    assert torch.allclose(g_cov, g_area, atol=0.05 * float(g_area.abs().max()))


def test_gradcheck_on_a_tiny_mesh():
    """Interpolated attributes, ray distances and antialiased colours are differentiable in the
    vertices (torch.autograd.gradcheck, float64; the visible triangles do not change under its steps)."""
    verts0 = torch.tensor([[-0.3, -0.3, 0.1], [0.3, -0.25, 0.0], [0.0, 0.35, 0.05], [0.1, 0.0, 0.4]],
                          dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 1, 3], [1, 2, 3], [2, 0, 3]])
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]], dtype=torch.float64)
    cam = Cameras.make([20.0], [10.0], distance=2.0)

    def render(verts):
        rast = rasterize(verts, faces, cam, 9, 11)
        img = interpolate(colours, faces, rast)
        aa = antialias(torch.cat([img, rast.mask[..., None].to(img.dtype)], -1), faces, rast)
        return torch.cat([img, rast.distance[..., None], aa], -1)  # one output: none can drop out of the check

    assert torch.autograd.gradcheck(render, (verts0.clone().requires_grad_(),), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("subdivisions", [1, 4])
def test_a_closed_mesh_covers_its_projected_area(subdivisions):
    """A sphere made of triangles larger than pixels (1) or smaller (4): the summed antialiased coverage
    is the area of its projected outline (pixels inside the outline polygon, counted on a 16x
    supersampled grid), within 1.5%. The silhouette is found across small triangles, not taken to be
    the first edge leaving the triangle a pixel sees (which undercounts the outline)."""
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.45)
    verts, faces = torch.tensor(sphere.vertices, dtype=torch.float64), torch.tensor(sphere.faces)
    cam = Cameras.make([20.0], [30.0], distance=2.0)
    H = W = 40
    rast = rasterize(verts, faces, cam, H, W)
    covered = float(antialias(rast.mask[..., None].double(), faces, rast).sum())
    fine = rasterize(verts, faces, cam, 16 * H, 16 * W)  # same camera, 16x16 samples per pixel
    area = float(fine.mask.double().sum()) / 256
    assert covered == pytest.approx(area, rel=0.015)


# -- the nvdiffrast path (renderers/mesh/rasterize_nvdiffrast.py) -----------------------------------------------

def test_clip_positions_put_vertices_on_the_pixels_the_torch_path_uses():
    """nvdiffrast's pixel centres are ours: the clip positions, divided by w, land each vertex on its pixel
    coordinates from pixel_coords (written out above, not `project`), with OpenGL's depth mapping."""
    from renderers.mesh.rasterize_nvdiffrast import FAR, NEAR, clip_positions

    verts, _ = two_objects()
    cam = Cameras.make([20.0], [-35.0], distance=2.0)
    cam0 = Cameras.make([0.0], [0.0], distance=2.0)
    H, W = 24, 20
    clip = clip_positions(verts, cam, H, W)[0]
    ndc = clip[:, :3] / clip[:, 3:]
    pix = torch.stack([(ndc[:, 0] + 1) * W / 2, (ndc[:, 1] + 1) * H / 2], -1)
    assert torch.allclose(pix, pixel_coords(verts, cam, H, W), atol=1e-9)
    depth = (verts - cam.positions[0].double()) @ -cam.c2w()[0, :3, 2].double()  # along the viewing axis
    assert torch.allclose(clip[:, 3], depth, atol=1e-9)
    # OpenGL's depth: z_ndc = A + B / depth with -1 at NEAR and 1 at FAR, so A = (F + N) / (F - N), B = -2FN / (F - N)
    near_far = torch.stack([clip_positions(torch.tensor([[0.0, 0.0, r]], dtype=torch.float64), cam0, H, W)[0, 0]
                            for r in (2.0 - NEAR, 2.0 - FAR)])  # on the axis of a camera 2 from the origin along +z
    assert torch.allclose(near_far[:, 2] / near_far[:, 3], torch.tensor([-1.0, 1.0], dtype=torch.float64), atol=1e-9)
    A, B = (FAR + NEAR) / (FAR - NEAR), -2 * FAR * NEAR / (FAR - NEAR)
    assert torch.allclose(ndc[:, 2], A + B / depth, atol=1e-9)


def test_the_rasterizer_setting_is_checked_and_a_cpu_mesh_uses_the_torch_path(tmp_path, monkeypatch):
    from conftest import tiny_config

    from dream3d.config import ConfigError, build_config
    from renderers.mesh import rasterize as entry
    from renderers.mesh import rasterize_nvdiffrast as nv

    verts, faces = two_objects()
    cam = Cameras.make([10.0], [0.0], distance=2.0)
    for name in ("auto", "torch"):
        rast = entry.rasterize(verts, faces, cam, 8, 8, name)
        assert type(rast) is not nv.NvdiffrastRasterized and rast.mask.any()
    with pytest.raises(RuntimeError, match="nvdiffrast rasterises on a CUDA device; the mesh is on cpu"):
        entry.rasterize(verts, faces, cam, 8, 8, "nvdiffrast")
    monkeypatch.setattr(nv, "available", lambda: False)  # as on a machine without nvdiffrast
    with pytest.raises(ConfigError, match="refine.mesh.rasterizer=nvdiffrast needs nvdiffrast, which is not installed"):
        tiny_config(tmp_path, "refine.geometry_steps=2", "refine.mesh.rasterizer=nvdiffrast")
    with pytest.raises(ConfigError, match="scene.rasterizer=nvdiffrast needs nvdiffrast"):
        build_config({"scene": {"name": "mesh", "rasterizer": "nvdiffrast"}})
    tiny_config(tmp_path, "refine.geometry_steps=2", "refine.mesh.rasterizer=torch")


def _needs_nvdiffrast():
    from renderers.mesh.rasterize_nvdiffrast import available

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if not available():
        pytest.skip("nvdiffrast is not installed (pip install git+https://github.com/NVlabs/nvdiffrast)")


@pytest.mark.cuda
def test_nvdiffrast_coverage_depth_and_attributes_match_ray_casting():
    _needs_nvdiffrast()
    from renderers.mesh import rasterize as entry
    from renderers.mesh.rasterize_nvdiffrast import NvdiffrastRasterized

    verts, faces = two_objects()
    cams = Cameras.make([10.0, -5.0, 60.0], [0.0, 130.0, -70.0], distance=2.0)
    H, W = 24, 16  # not square; multiples of 8 for nvdiffrast before 0.3.2
    rast = entry.rasterize(verts.float().cuda(), faces.cuda(), cams, H, W)
    assert isinstance(rast, NvdiffrastRasterized)
    face, dist, bary = ray_cast(verts, faces, cams, H, W)
    got_face, got_dist, got_bary = rast.face.cpu(), rast.distance.cpu().double(), rast.bary.cpu().double()
    assert ((got_face >= 0) == (face >= 0)).float().mean() > 0.995  # float32 edge ties
    same = (got_face == face) & (face >= 0)
    assert same.float().sum() > 0.98 * (face >= 0).float().sum()
    assert torch.allclose(got_dist[same], dist[same], atol=1e-4)
    assert torch.allclose(got_bary[same], bary[same], atol=1e-4)


@pytest.mark.cuda
def test_nvdiffrast_antialiased_coverage_is_the_area_and_moves_with_the_vertices():
    _needs_nvdiffrast()
    from renderers.mesh import rasterize as entry

    corners = [[-0.3, -0.25, 0.0], [0.35, -0.1, 0.05], [0.0, 0.3, -0.1]]
    verts = torch.tensor(corners, dtype=torch.float32, device="cuda", requires_grad=True)
    faces = torch.tensor([[0, 1, 2]], device="cuda")
    cam = Cameras.make([15.0], [25.0], distance=2.0)
    H = W = 48
    rast = entry.rasterize(verts, faces, cam, H, W)
    covered = entry.antialias(rast.mask[..., None].float(), faces, rast).sum()
    area = shoelace(pixel_coords(verts.detach().cpu().double().requires_grad_(), cam, H, W))
    assert float(covered) == pytest.approx(float(area), rel=0.03)
    g_cov, = torch.autograd.grad(covered, verts)
    cpu = verts.detach().cpu().double().requires_grad_()
    g_area, = torch.autograd.grad(shoelace(pixel_coords(cpu, cam, H, W)), cpu)
    assert torch.nn.functional.cosine_similarity(g_cov.cpu().double().flatten(), g_area.flatten(), dim=0) > 0.9
