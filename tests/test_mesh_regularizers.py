"""The mesh stages' surface regularisers (renderers/mesh/regularizers.py) against closed forms and trimesh's
own measurements."""
import torch
import trimesh

from renderers.mesh.regularizers import (
    enclosed_volume,
    hidden_area,
    hidden_faces,
    hidden_volume,
    laplacian_loss,
    normal_consistency,
)


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


def test_hidden_faces_are_those_no_camera_elevation_sees_within_the_angle():
    """A box's faces have normals at elevation -90 (bottom), +90 (top) and 0 (sides). Cameras from -10 to 45
    degrees: the bottom is 80 degrees from the nearest view, the top 45, the sides 0."""
    v, f = tensors(trimesh.creation.box(extents=[0.8, 0.5, 0.4]))
    normal_y = torch.tensor(trimesh.Trimesh(v.numpy(), f.numpy()).face_normals[:, 1])
    bottom, top = normal_y < -0.99, normal_y > 0.99
    assert bottom.sum() == 2 and top.sum() == 2
    assert torch.equal(hidden_faces(v, f, (-10.0, 45.0), 60.0), bottom)
    assert torch.equal(hidden_faces(v, f, (-10.0, 45.0), 40.0), bottom | top)  # 45 > 40
    assert not hidden_faces(v, f, (-10.0, 45.0), 85.0).any()  # 80 < 85
    assert torch.equal(hidden_faces(v, f, (-90.0, 45.0), 40.0), top)  # cameras straight below see the bottom


def test_hidden_volume_pulls_only_the_hidden_faces_in_as_the_volume_would():
    """Raising a box's bottom face by d takes extents_x * extents_z * d off its volume (the directional derivative
    -0.32); the loss has that derivative along the bottom's displacement and none along the top's or a sideways
    one, where the enclosed volume changes (top) or does not (sideways)."""
    box = trimesh.creation.box(extents=[0.8, 0.5, 0.4])
    box.apply_translation([0.3, -0.2, 0.1])
    v, f = tensors(box)
    bottom = torch.tensor(trimesh.Trimesh(v.numpy(), f.numpy()).face_normals[:, 1] < -0.99)
    v.requires_grad_(True)
    grad, = torch.autograd.grad(hidden_volume(v, f, bottom), v)
    low = (v[:, 1] < v[:, 1].mean()).detach()  # the bottom face's four corners
    up = torch.zeros_like(v)
    up[low, 1] = 1.0
    assert abs(float((grad * up).sum()) - (-0.8 * 0.4)) < 1e-9
    top = torch.zeros_like(v)
    top[~low, 1] = 1.0
    assert abs(float((grad * top).sum())) < 1e-12
    sideways = torch.zeros_like(v)
    sideways[low, 0] = 1.0
    assert abs(float((grad * sideways).sum())) < 1e-12
    # with every face hidden it is the enclosed volume's gradient
    everything, = torch.autograd.grad(hidden_volume(v, f, torch.ones_like(bottom)), v)
    full, = torch.autograd.grad(enclosed_volume(v, f), v)
    assert torch.allclose(everything, full, atol=1e-12)


def test_hidden_area_is_the_hidden_faces_area_and_flattens_a_bulge():
    """A box's bottom (0.8 x 0.4) has area 0.32: raising it changes nothing, widening it by d on both sides in x adds
    2 * 0.4 * d. A square pyramid of half-width R hanging h below its rim has area 4 R sqrt(R^2 + h^2), whose
    derivative in h, 4 R h / sqrt(R^2 + h^2), pulls the apex up to the flat rim."""
    v, f = tensors(trimesh.creation.box(extents=[0.8, 0.5, 0.4]))
    bottom = torch.tensor(trimesh.Trimesh(v.numpy(), f.numpy()).face_normals[:, 1] < -0.99)
    assert abs(float(hidden_area(v, f, bottom)) - 0.32) < 1e-12
    v.requires_grad_(True)
    grad, = torch.autograd.grad(hidden_area(v, f, bottom), v)
    low = (v[:, 1] < 0).detach()
    up = torch.zeros_like(v)
    up[low, 1] = 1.0
    assert abs(float((grad * up).sum())) < 1e-12
    wider = torch.zeros_like(v)
    wider[low, 0] = torch.sign(v[low, 0].detach())
    assert abs(float((grad * wider).sum()) - 2 * 0.4) < 1e-9
    R, h = 0.45, 0.07
    pyramid = torch.tensor([[-R, 0, -R], [R, 0, -R], [R, 0, R], [-R, 0, R], [0, -h, 0]], dtype=torch.float64,
                           requires_grad=True)
    sides = torch.tensor([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
    every = torch.ones(4, dtype=torch.bool)
    area = hidden_area(pyramid, sides, every)
    assert abs(float(area.detach()) - 4 * R * (R**2 + h**2) ** 0.5) < 1e-12
    grad, = torch.autograd.grad(area, pyramid)
    assert abs(float(-grad[4, 1]) - 4 * R * h / (R**2 + h**2) ** 0.5) < 1e-12  # d area / d h, h = -apex y
    assert float(hidden_area(pyramid.detach(), sides, torch.tensor([True, False, False, False]))) < float(area.detach()) / 3
