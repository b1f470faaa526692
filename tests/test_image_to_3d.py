"""Image-to-3D: reading reference images, ToyWorld's image-conditioned prior against brute force, the trainer's
reference loss and its run folder copy."""
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_RUN

from dream3d.config import ConfigError, load_config
from dream3d.kernel.cameras import Cameras
from dream3d.reference import ReferenceImageError, load_reference
from dream3d.toyworld.catalogue import Item
from dream3d.toyworld.dataset import render_gt
from guidance.priors.toyworld import ToyWorldPrior, ToyWorldPriorConfig

GRID = dict(grid_elevation_step=27.5, grid_azimuth_steps=8, dataset_resolution=16, resolution=8)
REF_CAMERA = Cameras.make([17.5], [0.0])


def write_png(path, pixels):
    iio.imwrite(path, pixels)
    return path


def test_alpha_is_the_mask_and_the_object_lands_on_white(tmp_path):
    rgba = np.zeros((40, 20, 4), np.uint8)  # tall: padded to a square around the centre
    rgba[10:30, 5:15] = (200, 40, 40, 255)
    rgb, mask = load_reference(write_png(tmp_path / "a.png", rgba), 40)
    assert rgb.shape == (3, 40, 40) and mask.shape == (1, 40, 40)
    assert torch.allclose(rgb[:, 0, 0], torch.ones(3)) and mask[0, 0, 0] == 0  # background: white, outside the mask
    assert mask[0, 10:30, 15:25].min() == 1 and mask.sum() == 200  # the object, centred (20 px wide in 40)
    assert torch.allclose(rgb[:, 20, 20], torch.tensor([200, 40, 40]) / 255.0)


def test_a_plain_background_is_cut_out_and_16_bit_grey_reads(tmp_path):
    img = np.full((32, 32), 30000, np.uint16)  # a grey backdrop, 16 bit
    img[8:24, 8:24] = 6000
    rgb, mask = load_reference(write_png(tmp_path / "b.png", img), 32)
    assert mask.sum() == 256 and torch.allclose(rgb[:, 0, 0], torch.ones(3))  # the backdrop became white
    assert torch.allclose(rgb[:, 16, 16], torch.full((3,), 6000 / 65535))
    rgb8 = np.full((32, 32, 3), (40, 90, 200), np.uint8)  # a blue backdrop, RGB
    rgb8[8:24, 8:24] = (250, 250, 20)
    rgb, mask = load_reference(write_png(tmp_path / "c.png", rgb8), 32)
    assert mask.sum() == 256 and torch.allclose(rgb[:, 0, 0], torch.ones(3))
    opaque = np.concatenate([rgb8, np.full((32, 32, 1), 255, np.uint8)], -1)  # a photo saved as RGBA: alpha cuts nothing
    rgb, mask = load_reference(write_png(tmp_path / "d.png", opaque), 32)
    assert mask.sum() == 256 and torch.allclose(rgb[:, 0, 0], torch.ones(3))


@pytest.mark.parametrize("make, message", [
    (lambda p: write_png(p, np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)), "no plain background"),
    (lambda p: write_png(p, np.zeros((16, 16, 4), np.uint8)), "no object found"),
    (lambda p: (p.write_bytes(b"not an image"), p)[1], "cannot read"),
    (lambda p: p, "cannot read"),  # missing
])
def test_bad_images_are_refused_with_what_to_do(tmp_path, make, message):
    with pytest.raises(ReferenceImageError, match=message):
        load_reference(make(tmp_path / "bad.png"), 16)


def render8(item, cams):
    img, _ = render_gt(item, cams, 16)
    return F.interpolate(img, size=(8, 8), mode="area")


def test_image_conditioned_denoiser_matches_brute_force():
    """The posterior over (catalogue object, turn) given a clean reference view, then over a noisy novel view,
    written out: every candidate ray-cast at its own camera (turned by its turn), weights in float64."""
    prior = ToyWorldPrior(ToyWorldPriorConfig(**GRID, image_sigma=0.3))
    true = Item("cube", ("blue",), "yellow")
    ref = render8(true, REF_CAMERA)[0]
    post = prior.embed_image(ref, REF_CAMERA)
    objects = [post.objects[i] for i in post.object_index.tolist()]
    assert ("cube", "blue", "yellow") in objects and len(set(objects)) > 1  # a real mixture (sigma 0.3)
    # the reference weights, recomputed: turn k sees the object from azimuth 45k at the reference camera
    logl = torch.stack([-(((render8(Item(o[0], (o[1],), o[2]), Cameras.make([17.5], [45.0 * float(k)]))[0].double() * 2 - 1)
                          - (ref.double() * 2 - 1)) ** 2).sum() / (2 * 0.3**2) for o, k in zip(objects, post.turns.tolist())])
    assert torch.allclose(post.log_w.double(), torch.log_softmax(logl, 0), atol=0.02)  # float16 grid layers, / 2 sigma^2

    cams = Cameras.make([17.5 + 2.0, 45.0], [170.0, -95.0])  # off the grid: they snap to (17.5, 180), (45, -90)
    snapped = [(17.5, 180.0), (45.0, -90.0)]
    t = torch.tensor([400, 650])
    x = render8(true, cams) * 2 - 1
    x_t = prior.add_noise(x, t, torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
    d = prior.x0_from_eps(x_t, t, prior.predict_eps(x_t, t, [post, post], cams))
    for v, (el, az) in enumerate(snapped):
        abar = float(prior.alphas_cumprod[t[v]])
        imgs = torch.stack([render8(Item(o[0], (o[1],), o[2]), Cameras.make([el], [az + 45.0 * float(k)]))[0]
                            for o, k in zip(objects, post.turns.tolist())]).double() * 2 - 1
        ll = post.log_w.double() - ((x_t[v].double() - math.sqrt(abar) * imgs) ** 2).flatten(1).sum(1) / (2 * (1 - abar))
        expected = (torch.softmax(ll, 0)[:, None, None, None] * imgs).sum(0)
        assert float((d[v].double() - expected).abs().max()) < 2e-3  # float16 grid layers


def test_a_sharp_reference_picks_the_object_its_turn_and_its_back():
    """With the default sigma a view of the marked cube from its front-right (object azimuth 45) leaves that cube
    turned by 45 degrees only; the run's back view (azimuth 180), denoised from pure noise, is the object seen
    from 225 degrees: its blue back, not the yellow front."""
    prior = ToyWorldPrior(ToyWorldPriorConfig(**GRID))
    true = Item("cube", ("blue",), "yellow")
    post = prior.embed_image(render8(true, Cameras.make([17.5], [45.0]))[0], REF_CAMERA)
    assert {post.objects[i] for i in post.object_index.tolist()} == {("cube", "blue", "yellow")}
    assert post.turns.tolist() == [1]
    x_t = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([999])
    d = prior.x0_from_eps(x_t, t, prior.predict_eps(x_t, t, [post], Cameras.make([17.5], [180.0])))
    assert float((d - (render8(true, Cameras.make([17.5], [225.0])) * 2 - 1)).abs().max()) < 2e-3


def test_the_front_is_where_the_reference_says():
    """A front view of a plain cube is also the back view of the same cube turned round, with any coloured front
    hidden behind it; with the reference taken to show the front (turns up to 45 degrees) only the plain cube is left."""
    true = Item("cube", ("orange",))
    ref = render8(true, REF_CAMERA)[0]
    front = ToyWorldPrior(ToyWorldPriorConfig(**GRID)).embed_image(ref, REF_CAMERA)
    assert {front.objects[i] for i in front.object_index.tolist()} == {("cube", "orange", None)}
    anywhere = ToyWorldPrior(ToyWorldPriorConfig(**GRID, image_max_turn=180)).embed_image(ref, REF_CAMERA)
    hidden = {anywhere.objects[i] for i, k in zip(anywhere.object_index.tolist(), anywhere.turns.tolist()) if k == 4}
    assert ("cube", "orange", "yellow") in hidden  # turned round: its yellow front faces away


def tiny_image_run(tmp_path, image, *extra):
    tiny = [o for o in TINY_RUN if o != "prior.num_views=64"]
    return load_config("configs/toy/sds-nerf-image.yaml", tiny + [
        f"image={image}", "prompt=a green cylinder", "prior.grid_elevation_step=27.5", "prior.grid_azimuth_steps=8",
        "reference.elevation=17.5", "reference.resolution=16", f"output.out_dir={tmp_path}", "output.turntable_frames=0",
        "output.export.formats=[glb]", *extra])


def test_image_run_trains_on_the_reference_and_resumes_from_its_copy(tmp_path):
    from dream3d.lifecycle import load_run, resume_run, start_run

    img, mask = render_gt(Item("cylinder", ("green",)), REF_CAMERA, 64)
    ref = write_png(tmp_path / "ref.png", (torch.cat([img[0], mask[0]]).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    full = start_run(tiny_image_run(tmp_path, ref, "output.name=full"))
    half = start_run(tiny_image_run(tmp_path, ref, "output.name=half", "train.steps=3"))
    ref.unlink()  # the run folder keeps its own copy
    resume_run(half["run_dir"], ("train.steps=6",), progress=False)
    a, _ = load_run(full["run_dir"])
    b, _ = load_run(half["run_dir"])
    for k, v in a.scene.state_dict().items():
        assert torch.equal(v, b.scene.state_dict()[k]), k
    assert (a.run_dir.path / "reference.png").exists()
    assert all("loss_reference" in h for h in a.history)  # the reference view is trained on


def test_image_needs_a_prior_that_takes_one(tmp_path, tiny_sd):
    from dream3d.lifecycle import start_run

    img = np.zeros((16, 16, 4), np.uint8)
    img[4:12, 4:12] = 255
    ref = write_png(tmp_path / "ref.png", img)
    cfg = load_config("configs/sd/sds-nerf.yaml", [f"image={ref}", f"prior.model={tiny_sd['eps']}", "prior.resolution=32",
                                                   "train.steps=2", f"output.out_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="needs a prior that conditions on an image"):
        start_run(cfg)
