"""The NeRF's CUDA path (nerfacc's packed marching over the scene's occupancy grid) against the
torch reference. Needs a CUDA device; skips cleanly without one."""
import pytest
import torch

from dream3d.kernel.cameras import CameraSampler
from dream3d.toyworld.metrics import psnr, silhouette_iou
from renderers.nerf.scene import NeRFConfig, NeRFScene

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for nerfacc's kernels")]


def test_nerfacc_path_matches_the_torch_path():
    torch.manual_seed(0)
    scene = NeRFScene(NeRFConfig(eval_samples_per_ray=256))
    scene.occupancy.update(scene.density, torch.Generator().manual_seed(0))
    cams = CameraSampler().held_out(4)
    with torch.no_grad():
        ref = scene.render(cams, 48, 48, train=False)
        scene.cuda()
        out = scene.render(cams, 48, 48, train=False)
    assert out.rgb.is_cuda
    assert silhouette_iou(out.alpha.cpu(), ref.alpha) > 0.97
    assert psnr(out.rgb.cpu(), ref.rgb) > 30  # sample positions differ (fixed step vs per-ray spacing)


def test_nerfacc_path_trains_with_normals():
    scene = NeRFScene(NeRFConfig(orientation_weight=1.0, shading="diffuse", ambient_only_steps=0)).cuda()
    scene.occupancy.update(scene.density, torch.Generator().manual_seed(0))
    out = scene.render(CameraSampler().held_out(2), 16, 16, torch.Generator().manual_seed(0))
    loss = out.rgb.mean() + scene.regularizers(out, 0)["orientation"]
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in scene.field.parameters() if p.grad is not None)
