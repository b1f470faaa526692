"""The mesh stages' surface regularisers (renderers/mesh/regularizers.py) against closed forms and trimesh's
own measurements."""
import torch
import trimesh

from renderers.mesh.regularizers import enclosed_volume, laplacian_loss, normal_consistency


def tensors(mesh: trimesh.Trimesh):
    return torch.tensor(mesh.vertices, dtype=torch.float64), torch.tensor(mesh.faces, dtype=torch.long)


def test_enclosed_volume_is_the_meshs_volume_and_its_sign_is_the_winding():
    box = trimesh.creation.box(extents=[0.8, 0.5, 0.4])
    box.apply_translation([0.3, -0.2, 0.1])  # the divergence theorem does not depend on where the origin is
    v, f = tensors(box)
    assert torch.isclose(enclosed_volume(v, f), torch.tensor(0.8 * 0.5 * 0.4, dtype=torch.float64))
    assert torch.isclose(enclosed_volume(v, f.flip(1)), torch.tensor(-0.16, dtype=torch.float64))  # inward winding
    ball = trimesh.creation.icosphere(subdivisions=3, radius=0.45)
    v, f = tensors(ball)
    assert abs(float(enclosed_volume(v, f)) - ball.volume) < 1e-9
    v.requires_grad_(True)
    grad, = torch.autograd.grad(enclosed_volume(v, f), v)  # dV/dv points outward: the penalty shrinks the shape
    assert ((grad * v).sum(1) > 0).all()


def test_normal_consistency_of_a_plane_and_a_cube():
    cube = trimesh.creation.box(extents=[1, 1, 1]).subdivide().subdivide()
    v, f = tensors(cube)
    # of the edges shared by two faces, those along the cube's 12 edges join perpendicular faces (1 - cos = 1), the
    # others lie inside a flat side (0); two subdivisions split each cube edge in 4
    edges = trimesh.Trimesh(v.numpy(), f.numpy()).face_adjacency_angles
    expected = float((1 - torch.cos(torch.tensor(edges))).mean())
    assert abs(float(normal_consistency(v, f)) - expected) < 1e-9
    assert abs(expected - 12 * 4 / len(edges)) < 1e-9
    flat = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]])
    assert float(normal_consistency(*tensors(flat))) < 1e-12


def test_laplacian_of_an_octahedron():
    """Each vertex of the unit octahedron has the four others but its opposite as neighbours, whose mean is the
    origin: every vertex is 1 from it, so the loss is 1; scaled by s it is s^2."""
    octa = trimesh.Trimesh([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
                           [[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    v, f = tensors(octa)
    assert abs(float(laplacian_loss(v, f)) - 1.0) < 1e-12
    assert abs(float(laplacian_loss(0.5 * v, f)) - 0.25) < 1e-12
