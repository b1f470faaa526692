"""Zero123 through the production loader, on a tiny randomly initialised pipeline of its layout (8-channel UNet,
CLIP vision encoder, camera projection): the prediction against the components called by hand, the relative
camera by hand, the model-name rule for Stable Zero123, refusals, and an image-to-3D run."""
import math

import numpy as np
import pytest
import torch
from tiny_diffusers import build_tiny_pipeline, build_tiny_zero123_pipeline

from dream3d.config import ConfigError, load_config
from dream3d.kernel.cameras import Cameras
from guidance import GuidanceConfig, build_guidance
from guidance.priors import build_prior
from guidance.priors.stable_diffusion import ModelUnavailableError
from guidance.priors.zero123 import ReferenceView, Zero123PriorConfig, zero123_camera


@pytest.fixture(scope="module")
def tiny_z(tmp_path_factory):
    return build_tiny_zero123_pipeline(tmp_path_factory.mktemp("z") / "z")


def z_prior(model, **kw):
    return build_prior(Zero123PriorConfig(model=str(model), **kw))


def test_relative_camera_by_hand():
    """[polar change (polar = 90 - elevation), sin and cos of the azimuth change, distance change | reference polar]."""
    ref = ReferenceView("r", elevation=15.0, azimuth=30.0, distance=2.0)
    cams = Cameras.make([45.0, -15.0], [120.0, 0.0], distance=2.5)
    want = torch.tensor([[math.radians(-30), 1.0, 0.0, 0.5], [math.radians(30), -0.5, math.sqrt(3) / 2, 0.5]])
    assert torch.allclose(zero123_camera(cams, [ref, ref], stable=False), want, atol=1e-6)
    want[:, 3] = math.radians(75)  # Stable Zero123: the reference's polar angle
    assert torch.allclose(zero123_camera(cams, [ref, ref], stable=True), want, atol=1e-6)


@pytest.mark.parametrize("model, stable", [("ashawkey/stable-zero123-diffusers", True), ("/w/stable_zero123/", True),
                                           ("ashawkey/zero123-xl-diffusers", False), ("kxic/zero123-165000", False)])
def test_camera_embedding_follows_the_model_name(model, stable):
    assert Zero123PriorConfig(model=model).stable() is stable
    assert Zero123PriorConfig(model=model, camera_embedding="zero123").stable() is False


def test_prediction_is_the_unet_on_the_reference_latent_and_camera_token(tiny_z):
    """Both CFG branches against the pipeline's components called by hand: the conditional one sees the reference's
    unscaled VAE latent beside x_t and the token proj([CLIP image embedding, T]); the unconditional one zeros."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    prior = z_prior(tiny_z)
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (32, 32, 3), generator=gen, dtype=torch.uint8)  # CLIP's and the model's size
    image = pixels.permute(2, 0, 1).float() / 255
    ref = prior.embed_image(image, Cameras.make([15.0], [0.0]))
    x = torch.randn(2, *prior.sample_shape, generator=gen)
    t = torch.tensor([300, 300])
    cams = Cameras.make([30.0, 30.0], [90.0, 90.0])
    eps = prior.predict_eps(x, t, [ref, prior.embed("")], cams)

    unet = UNet2DConditionModel.from_pretrained(tiny_z, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(tiny_z, subfolder="vae")
    clip = CLIPVisionModelWithProjection.from_pretrained(tiny_z, subfolder="image_encoder")
    pixel_values = CLIPImageProcessor.from_pretrained(tiny_z, subfolder="feature_extractor")(
        images=Image.fromarray(pixels.numpy()), return_tensors="pt").pixel_values
    proj = load_file(str(tiny_z / "clip_camera_projection" / "diffusion_pytorch_model.safetensors"))
    with torch.no_grad():
        latent = vae.encode(image[None] * 2 - 1).latent_dist.mode()  # no scaling factor (Zero123's concat input)
        rel = torch.tensor([[math.radians(-15.0), 1.0, 0.0, 0.0]])  # 15 deg higher, a quarter turn, same distance
        token = torch.cat([clip(pixel_values).image_embeds, rel], -1) @ proj["proj.weight"].T + proj["proj.bias"]
        cond = unet(torch.cat([x[:1], latent], 1), t[:1], encoder_hidden_states=token[:, None]).sample
        uncond = unet(torch.cat([x[1:], torch.zeros_like(latent)], 1), t[1:],
                      encoder_hidden_states=torch.zeros_like(token)[:, None]).sample
    assert torch.allclose(eps[0], cond[0], atol=1e-4)
    assert torch.allclose(eps[1], uncond[0], atol=1e-5)
    assert (cond - uncond).abs().max() > 1e-3  # the two branches differ, so the check above can tell them apart


def test_sds_step_through_the_production_path(tiny_z):
    prior = z_prior(tiny_z)
    guidance = build_guidance(GuidanceConfig(guidance_scale=3.0, view_dependent_prompt=False), prior)
    ref = prior.embed_image(torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(1)), Cameras.make([0.0], [0.0]))
    cond = guidance.embed("an object", "", ref)
    img = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = guidance(img, Cameras.make([10.0, 20.0], [90.0, 200.0]), cond, 0, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0


def test_the_kxic_layout_loads(tmp_path):
    """diffusers' community Zero1to3 pipeline names the projection folder cc_projection."""
    prior = z_prior(build_tiny_zero123_pipeline(tmp_path / "kxic", projection_folder="cc_projection"))
    assert prior.projection.in_features == prior.image_encoder.config.projection_dim + 4


def test_a_text_to_image_pipeline_is_refused(tmp_path):
    sd = build_tiny_pipeline(tmp_path / "sd")
    with pytest.raises(ModelUnavailableError, match="image_encoder"):
        z_prior(sd)


def test_runs_without_an_image_or_with_text_knobs_are_refused(tiny_sd):
    base = ["configs/sd/zero123-sds-nerf.yaml"]
    with pytest.raises(ConfigError, match="give one, image=ref.png"):
        load_config(*base, [f"prior.model={tiny_sd['zero123']}"])
    with pytest.raises(ConfigError, match="negative_prompt would do nothing"):
        load_config(*base, [f"image={tiny_sd['ref']}", "negative_prompt=blurry"])
    with pytest.raises(ConfigError, match="use guidance.name=sds or asd with prior.name=zero123"):
        load_config(*base, [f"image={tiny_sd['ref']}", "guidance.name=vsd"])
    with pytest.raises(ConfigError, match="one weight file"):
        load_config(*base, [f"image={tiny_sd['ref']}", "prior.model=/w/zero123.safetensors"])


def test_image_run_trains_on_the_reference(tiny_sd, tmp_path):
    from conftest import tiny_overrides

    from dream3d.lifecycle import load_run, start_run

    preset = "configs/sd/zero123-sds-nerf.yaml"
    run = start_run(load_config(preset, tiny_overrides(preset, tiny_sd) + [f"output.out_dir={tmp_path}",
                                                                            "output.turntable_frames=0"]))
    assert run["status"] == "finished"
    trainer, _ = load_run(run["run_dir"])
    assert all("loss_reference" in h and np.isfinite(h["loss"]) for h in trainer.history)
    assert (trainer.run_dir.path / "reference.png").exists()


def test_requests_are_priced_at_zero123s_own_resolution(tiny_sd):
    """An unset prior.resolution is the model's own: 256 for Zero123(-XL), not SDXL's 1024 ("xl" in the name)."""
    from dream3d.cost import prior_cost

    cfg = load_config("configs/sd/zero123-sds-nerf.yaml", [f"image={tiny_sd['ref']}"])
    at_256 = load_config("configs/sd/zero123-sds-nerf.yaml", [f"image={tiny_sd['ref']}", "prior.resolution=256"])
    assert cfg.prior.resolution is None and prior_cost(cfg)[0] == prior_cost(at_256)[0]
