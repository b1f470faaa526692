"""MVDream through the production loader, on a tiny randomly initialised UNet of its architecture (SD's UNet
with a 16-input camera embedding; cross-view self-attention set by the prior): the camera convention by hand,
views coupled within a group and independent across groups, the converter from the original checkpoint layout,
refusals, and SDS steps."""
import pytest
import torch
from ldm_checkpoint import unet_to_ldm
from tiny_diffusers import build_tiny_pipeline

from dream3d.config import ConfigError, load_config
from dream3d.kernel.cameras import Cameras, CameraSampler
from guidance import GuidanceConfig, build_guidance
from guidance.priors import build_prior
from guidance.priors.mvdream import MultiViewAttention, MVDreamPriorConfig, convert_mvdream_checkpoint, mvdream_camera
from guidance.priors.stable_diffusion import ModelUnavailableError


@pytest.fixture(scope="module")
def tiny_mv(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("mv") / "mv", camera_dim=16)


def mv_prior(model, views=4):
    return build_prior(MVDreamPriorConfig(model=str(model), resolution=32, views=views, cache_embeddings=False))


def test_camera_matrix_by_hand():
    """Orbit cameras at distance 1, OpenGL camera-to-world, rows to Blender's Z-up (x, -z, y)."""
    cams = Cameras.make([0.0, 0.0], [0.0, 90.0], distance=2.5)
    front = torch.tensor([[1, 0, 0, 0], [0, 0, -1, -1], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.float32)
    side = torch.tensor([[0, 0, 1, 1], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.float32)
    assert torch.allclose(mvdream_camera(cams), torch.stack([front, side]).flatten(1), atol=1e-6)


def test_views_are_denoised_jointly_and_groups_apart(tiny_mv):
    prior = mv_prior(tiny_mv)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, *prior.sample_shape, generator=gen)
    t = torch.full((8,), 500)
    emb = [prior.embed("a chair")] * 8
    cams = CameraSampler().sample_groups(2, 4, torch.Generator().manual_seed(1))
    base = prior.predict_eps(x, t, emb, cams)
    y = x.clone()
    y[1] += 1.0  # another view of group 0
    eps = prior.predict_eps(y, t, emb, cams)
    assert (eps[0] - base[0]).abs().max() > 1e-4  # view 0 attends to view 1
    assert torch.equal(eps[4:], base[4:])  # group 1 does not
    moved = Cameras.cat([cams[:4], Cameras.make(cams.elevation[4:] + 20, cams.azimuth[4:])])
    eps = prior.predict_eps(x, t, emb, moved)
    assert torch.equal(eps[:4], base[:4]) and (eps[4:] - base[4:]).abs().max() > 1e-4  # the camera conditions

    single = mv_prior(tiny_mv, views=1)  # no cross-view attention: each image alone
    a = single.predict_eps(x, t, emb, cams)
    b = single.predict_eps(y, t, emb, cams)
    assert torch.equal(a[0], b[0])


def test_cross_view_attention_is_attention_over_the_groups_tokens(tiny_mv):
    """MultiViewAttention on [G*N, L, C] equals the UNet's own attention on each group's concatenated tokens."""
    prior = mv_prior(tiny_mv)
    name, proc = next((n, p) for n, p in prior.unet.attn_processors.items() if n.endswith("attn1.processor"))
    assert isinstance(proc, MultiViewAttention)
    attn = prior.unet.get_submodule(name.removesuffix(".processor"))
    h = torch.randn(8, 6, attn.to_q.in_features, generator=torch.Generator().manual_seed(2))
    expected = torch.cat([proc.inner(attn, h[g * 4:(g + 1) * 4].reshape(1, 24, -1)).reshape(4, 6, -1) for g in range(2)])
    assert torch.allclose(proc(attn, h), expected, atol=1e-6)


def test_sds_steps_through_the_production_path(tiny_mv, tmp_path):
    prior = mv_prior(tiny_mv)
    guidance = build_guidance(GuidanceConfig(guidance_scale=7.5, view_dependent_prompt=False), prior)
    img = torch.rand(4, 3, 32, 32, requires_grad=True)
    cams = CameraSampler().sample_groups(1, 4, torch.Generator().manual_seed(0))
    out = guidance(img, cams, guidance.embed("a chair"), 0, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0 and out.stats["grad_norm"] > 0


def test_a_plain_stable_diffusion_unet_is_refused(tiny_sd):
    with pytest.raises(ModelUnavailableError, match="not an MVDream UNet"):
        mv_prior(tiny_sd["eps"])


@pytest.mark.parametrize("overrides, message", [
    (['prior.model=""'], "convert-mvdream"),
    (["prior.model=sd-v2.1-base-4view.pt"], "one weight file"),
    (["guidance.name=vsd"], "not supported yet"),
    (["train.batch_size=2"], "multiple of 4"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/sd/mvdream-sds-nerf.yaml", overrides)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_converter_gives_back_the_weights(tiny_mv, tiny_sd, tmp_path, suffix):
    """An original-layout MVDream checkpoint (UNet as model.diffusion_model.*, the camera MLP as camera_embed.*)
    written from the tiny model converts back to exactly its weights, on the base model's other parts."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    unet = UNet2DConditionModel.from_pretrained(tiny_mv / "unet")
    sd = unet.state_dict()
    camera = {f"model.diffusion_model.camera_embed.{i}.{p}": sd.pop(f"class_embedding.linear_{j}.{p}")
              for i, j in ((0, 1), (2, 2)) for p in ("weight", "bias")}
    ckpt = {**unet_to_ldm(sd, unet.config.layers_per_block), **camera, "first_stage_model.x": torch.zeros(1)}
    path = tmp_path / f"mvdream{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": ckpt}, path)
    else:
        save_file({k: v.contiguous() for k, v in ckpt.items()}, path)
    out = convert_mvdream_checkpoint(str(path), tmp_path / "converted", base=str(tiny_sd["eps"]))
    back = UNet2DConditionModel.from_pretrained(out / "unet").state_dict()
    assert back.keys() == unet.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in unet.state_dict().items())
    prior = mv_prior(out)  # loads as the prior
    assert prior.joint_views == 4
    with pytest.raises(FileExistsError):
        convert_mvdream_checkpoint(str(path), out, base=str(tiny_sd["eps"]))
    from dream3d.cli import main

    assert main(["convert-mvdream", str(path), str(tmp_path / "by-cli"), "--base", str(tiny_sd["eps"])]) == 0
    assert (tmp_path / "by-cli" / "unet" / "config.json").exists()
    assert main(["convert-mvdream", str(tmp_path / "missing.pt"), str(tmp_path / "y")]) == 2  # a clear error, no trace
    with pytest.raises(ValueError, match="not an MVDream checkpoint"):
        save_file({k: v.contiguous() for k, v in ckpt.items() if "camera_embed" not in k}, tmp_path / "sd.safetensors")
        convert_mvdream_checkpoint(str(tmp_path / "sd.safetensors"), tmp_path / "x", base=str(tiny_sd["eps"]))
