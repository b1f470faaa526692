"""DMTet geometry (renderers/mesh/dmtet.py): the tetrahedral grid, marching tetrahedra and the
SDF regulariser, checked against trimesh's measurements and closed forms."""
import math

import torch
import trimesh

from renderers.mesh.dmtet import TET_EDGES, grid_edges, marching_tets, sdf_sign_loss, tet_grid


def test_tet_grid_fills_the_cube_exactly():
    verts, tets = tet_grid(3)
    assert verts.shape == (64, 3) and tets.shape == (6 * 27, 4)
    p = verts[tets]
    vol = torch.linalg.det(p[:, 1:] - p[:, :1]).abs() / 6
    assert torch.allclose(vol.sum(), torch.tensor(8.0))  # no overlaps or gaps: volumes add up to the cube's
    assert (vol > 1e-6).all()
    # every interior triangle is shared by exactly two tetrahedra (a conforming grid)
    faces = torch.cat([tets[:, [0, 1, 2]], tets[:, [0, 1, 3]], tets[:, [0, 2, 3]], tets[:, [1, 2, 3]]]).sort(1).values
    _, counts = torch.unique(faces, dim=0, return_counts=True)
    assert set(counts.tolist()) == {1, 2}
    assert (counts == 1).sum() == 6 * 9 * 2  # the boundary: 2 triangles per cell face on the cube's 6 sides


def test_sphere_is_watertight_outward_and_the_right_size():
    verts, tets = tet_grid(20)
    r = 0.6  # six grid vertices lie exactly on the sphere: degenerate triangles must still be wound right
    sdf = verts.norm(dim=1) - r
    points, faces = marching_tets(verts, sdf, tets)
    mesh = trimesh.Trimesh(points.numpy(), faces.numpy(), process=False)  # topology as built
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert len(mesh.split(only_watertight=False)) == 1
    assert mesh.volume > 0  # outward normals give a positive volume
    assert abs(mesh.volume - 4 / 3 * math.pi * r ** 3) / (4 / 3 * math.pi * r ** 3) < 0.05
    assert torch.allclose(points.norm(dim=1), torch.tensor(r), atol=0.02)


def test_vertices_move_with_the_sdf_and_the_grid():
    """A vertex on edge (a, b) sits at a + (b - a) s_a / (s_a - s_b): check the gradient by hand."""
    verts, tets = tet_grid(4)
    sdf = (verts.norm(dim=1) - 0.55).requires_grad_()
    v = verts.clone().requires_grad_()
    points, _ = marching_tets(v, sdf, tets)
    points[0].sum().backward()
    ends = torch.nonzero(sdf.grad).squeeze(1)
    assert ends.numel() == 2
    a, b = ends.tolist() if sdf[ends[0]] < 0 else ends.flip(0).tolist()
    sa, sb = float(sdf[a].detach()), float(sdf[b].detach())
    d = (verts[b] - verts[a]).sum()
    # d/ds_a of a + (b-a) s_a/(s_a-s_b) = (b-a) * (-s_b)/(s_a-s_b)^2; d/ds_b = (b-a) * s_a/(s_a-s_b)^2
    assert math.isclose(float(sdf.grad[a]), float(d) * -sb / (sa - sb) ** 2, rel_tol=1e-5)
    assert math.isclose(float(sdf.grad[b]), float(d) * sa / (sa - sb) ** 2, rel_tol=1e-5)
    assert math.isclose(float(v.grad[a].sum()), 3 * sb / (sb - sa), rel_tol=1e-5)


def test_empty_and_full_grids_give_no_surface():
    verts, tets = tet_grid(2)
    for sdf in (torch.ones(len(verts)), -torch.ones(len(verts))):
        points, faces = marching_tets(verts, sdf, tets)
        assert points.shape == (0, 3) and faces.shape == (0, 3)


def test_grid_edges_are_the_tetrahedra_edges():
    _, tets = tet_grid(3)
    from_tets = {tuple(e) for e in tets[:, torch.tensor(TET_EDGES)].reshape(-1, 2).sort(1).values.tolist()}
    edges = grid_edges(3)
    assert len(edges) == len(from_tets) and {tuple(e) for e in edges.sort(1).values.tolist()} == from_tets


def test_sign_loss_is_dmtets_cross_entropy():
    """On every grid edge whose ends differ in sign: BCE(sigmoid(s_a), [s_b > 0]) + BCE(sigmoid(s_b), [s_a > 0]),
    averaged over those edges, recomputed here from the tetrahedra."""
    verts, tets = tet_grid(4)
    smooth = verts.norm(dim=1) - 0.5
    noisy = smooth + 0.3 * torch.randn(len(verts), generator=torch.Generator().manual_seed(0))
    edges = grid_edges(4)
    pairs = {tuple(e) for e in tets[:, torch.tensor(TET_EDGES)].reshape(-1, 2).sort(1).values.tolist()}
    terms = []
    for a, b in pairs:
        sa, sb = float(noisy[a]), float(noisy[b])
        if (sa > 0) != (sb > 0):
            bce = lambda s, y: -(y * math.log(1 / (1 + math.exp(-s))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-s))))  # noqa: E731
            terms.append((bce(sa, float(sb > 0)), bce(sb, float(sa > 0))))
    expected = sum(x for x, _ in terms) / len(terms) + sum(y for _, y in terms) / len(terms)
    assert math.isclose(float(sdf_sign_loss(noisy, edges)), expected, rel_tol=1e-5)
    assert sdf_sign_loss(noisy, edges) > sdf_sign_loss(smooth, edges) > 0
    assert sdf_sign_loss(torch.ones(len(verts)), edges) == 0
