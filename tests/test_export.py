import numpy as np
import pytest
import torch
import trimesh

from dream3d.export import EmptySceneError, export_scene, load_mesh
from dream3d.toyworld.geometry import inside, volume
from dream3d.toyworld.metrics import mesh_occupancy, volumetric_iou
from renderers.base import Scene


class AnalyticScene(Scene):
    """A ToyWorld shape as a density field (sharp, smoothed over ~1 voxel), coloured by position."""

    def __init__(self, shape: str | None):
        super().__init__()
        self.shape = shape

    @property
    def bound(self):
        return 0.6

    def density(self, p):
        if self.shape is None:
            return torch.zeros(p.shape[0])
        return inside(self.shape, p).float() * 1000.0

    def color(self, p):
        return (p + 0.6) / 1.2


@pytest.mark.parametrize("method", ["visibility", "density"])
@pytest.mark.parametrize("shape", ["sphere", "cube", "torus"])
def test_export_of_analytic_shapes(tmp_path, method, shape):
    scene = AnalyticScene(shape)
    info = export_scene(scene, tmp_path / "model", ["glb", "obj"], resolution=64, method=method)
    mesh = load_mesh(tmp_path / "model.glb")
    assert isinstance(mesh, trimesh.Trimesh) and len(mesh.faces) == info["faces"]
    assert np.isfinite(mesh.vertices).all()
    assert mesh.visual.kind == "vertex" and mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
    # vertex colours come from the field at the vertices
    expected = np.round((mesh.vertices + 0.6) / 1.2 * 255).clip(0, 255)
    assert np.abs(mesh.visual.vertex_colors[:, :3].astype(float) - expected).max() <= 1.0
    iou = volumetric_iou(mesh.vertices, mesh.faces, shape, 64)
    # the torus hole is only partly seen through from the training elevations (<= 45 deg)
    assert iou > (0.9 if method == "density" or shape != "torus" else 0.6), iou
    if method == "density":
        assert abs(mesh.volume - volume(shape)) / volume(shape) < 0.08
    assert mesh.volume > 0  # faces point outward
    obj = load_mesh(tmp_path / "model.obj")
    assert len(obj.faces) == len(mesh.faces)


def test_glb_frame_front_is_plus_z(tmp_path):
    class Wedge(AnalyticScene):  # a box that extends further towards +Z than -Z, and up to +Y
        def density(self, p):
            ok = (p[:, 0].abs() < 0.2) & (p[:, 1] > -0.1) & (p[:, 1] < 0.4) & (p[:, 2] > -0.1) & (p[:, 2] < 0.5)
            return ok.float() * 1000

    export_scene(Wedge(None), tmp_path / "m", ["glb"], resolution=48, method="density")
    lo, hi = load_mesh(tmp_path / "m.glb").bounds
    assert hi[2] > 0.45 and lo[2] > -0.15 and hi[1] > 0.35 and lo[1] > -0.15


@pytest.mark.parametrize("method", ["visibility", "density"])
def test_empty_scene_is_a_clear_error_and_writes_nothing(tmp_path, method):
    with pytest.raises(EmptySceneError, match="nothing to export"):
        export_scene(AnalyticScene(None), tmp_path / "model", ["glb"], resolution=32, method=method)
    assert list(tmp_path.iterdir()) == []


def test_mesh_occupancy_of_a_box():
    box = trimesh.creation.box(extents=(0.5, 0.3, 0.7))
    xs = np.linspace(-0.6, 0.6, 25) + 1e-3
    ys, zs = xs + 2e-3, np.linspace(-0.6, 0.6, 31) + 3e-3
    occ = mesh_occupancy(box.vertices, box.faces, xs, ys, zs)
    g = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), -1)
    truth = (np.abs(g) < np.array([0.25, 0.15, 0.35])).all(-1)
    assert (occ == truth).all()
