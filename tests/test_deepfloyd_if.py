"""DeepFloyd IF stage I as a prior through the production diffusers loading code, on a tiny random
pipeline saved locally (tests/tiny_diffusers.py build_tiny_if_pipeline: T5 encoder, IF-style UNet with
6 output channels, IF's scheduler). No real IF weights are run anywhere here. No network."""
import csv
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
from tiny_diffusers import t5_unigram_vocab, write_spiece_model

from dream3d.cli import main
from dream3d.kernel.cameras import CameraSampler
from dream3d.kernel.schema import ConfigError
from guidance import build_guidance
from guidance.core import GuidanceConfig
from guidance.priors.deepfloyd_if import DeepFloydIFPrior, DeepFloydIFPriorConfig
from guidance.priors.stable_diffusion import ModelUnavailableError

pytestmark = pytest.mark.usefixtures("no_network")  # conftest: offline only


@pytest.fixture
def tiny_if(tiny_sd):
    return tiny_sd["if"]


def load(path, **kw) -> DeepFloydIFPrior:
    return DeepFloydIFPrior(DeepFloydIFPriorConfig(model=str(path), resolution=32, **kw))


def test_loads_from_a_folder_and_predicts_eps(tiny_if):
    prior = load(tiny_if)
    assert prior.sample_shape == (3, 32, 32) and prior.prediction_type == "epsilon"
    assert prior.dtype == torch.float32 and prior.device.type == "cpu"  # auto dtype on the CPU
    emb = prior.embed("a red cube")
    assert emb.hidden.shape == (77, 32) and emb.hidden.dtype == torch.float32
    x_t, t = torch.randn(2, 3, 32, 32), torch.tensor([20, 950])
    eps = prior.predict_eps(x_t, t, [emb, prior.embed("")])
    assert eps.shape == (2, 3, 32, 32) and eps.dtype == torch.float32 and torch.isfinite(eps).all()
    # the cosine ("squaredcos_cap_v2") schedule of IF, not SD's scaled-linear one
    def cosine(t):  # Nichol & Dhariwal's alpha_bar(t), t in [0, 1]
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    abar = prior.alphas_cumprod
    assert abar.shape == (1000,) and abar[500].item() == pytest.approx(cosine(0.501) / cosine(0), rel=1e-4)


def test_eps_is_the_first_three_channels_of_the_unet_output(tiny_if):
    prior = load(tiny_if)
    x_t, t = torch.randn(3, 3, 32, 32), torch.tensor([5, 400, 990])
    text = [prior.embed("a red cube"), prior.embed("a blue sphere"), prior.embed("")]
    hidden = torch.stack([e.hidden for e in text])
    with torch.no_grad():
        raw = prior.unet(x_t, t, encoder_hidden_states=hidden).sample  # the network, called directly
    assert raw.shape == (3, 6, 32, 32)
    eps = prior.predict_eps(x_t, t, text)
    torch.testing.assert_close(eps, raw[:, :3], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(eps, raw[:, 3:], atol=1e-2)  # the variance half is dropped, not averaged in


def test_embeddings_match_diffusers_if_pipeline(tiny_if):
    """The folder is a valid IFPipeline, and our text path equals IFPipeline.encode_prompt (lower-cased prompt,
    77 tokens, the T5 attention mask) for the prompt and the empty unconditional one."""
    from diffusers import IFPipeline

    pipe = IFPipeline.from_pretrained(str(tiny_if))
    cond, uncond = pipe.encode_prompt("A Red Cube, front view", do_classifier_free_guidance=True, device="cpu")
    prior = load(tiny_if, cache_embeddings=False)
    torch.testing.assert_close(prior.embed("A Red Cube, front view").hidden, cond[0].float(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(prior.embed("").hidden, uncond[0].float(), atol=1e-6, rtol=1e-6)


def test_encode_resizes_to_pixel_space_differentiably(tiny_if):
    prior = load(tiny_if)
    img = torch.rand(2, 3, 48, 48, requires_grad=True)
    x = prior.encode(img)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    (g,) = torch.autograd.grad(x.sum(), img)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    same = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(prior.encode(same), same * 2 - 1)  # x = img*2-1 at the prior's size
    torch.testing.assert_close(prior.decode(prior.encode(same)), same)


def test_sds_gradient_reaches_the_render_through_one_batched_unet_call(tiny_if):
    prior = load(tiny_if)
    guidance = build_guidance(GuidanceConfig(guidance_scale=21.0), prior)
    calls = []
    prior.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    render = torch.rand(2, 3, 16, 16, requires_grad=True)
    cams = CameraSampler().sample(2, torch.Generator().manual_seed(0))
    out = guidance(render, cams, guidance.embed("a red cube", ""), 0, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert calls == [4], "CFG must be one UNet call on [cond; uncond] (2B)"
    assert torch.isfinite(render.grad).all() and render.grad.abs().sum() > 0


def test_memory_switches_give_the_same_prediction(tiny_if):
    base = load(tiny_if)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([100, 800])
    ref = base.predict_eps(x, t, [base.embed("a cube")] * 2)
    for kw in ({"attention": "slicing"}, {"attention": "default"}, {"channels_last": True}, {"cpu_offload": True}):
        p = load(tiny_if, **kw)
        torch.testing.assert_close(p.predict_eps(x, t, [p.embed("a cube")] * 2), ref, atol=1e-4, rtol=1e-4, msg=str(kw))


def test_bf16_prior_returns_fp32_close_to_fp32(tiny_if):
    p32, p16 = load(tiny_if), load(tiny_if, dtype="bf16", cache_embeddings=False)
    assert p16.unet.dtype == torch.bfloat16 and p16.text_encoder.dtype == torch.bfloat16
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([300, 700])
    e32 = p32.predict_eps(x, t, [p32.embed("a cube")] * 2)
    e16 = p16.predict_eps(x, t, [p16.embed("a cube")] * 2)
    assert e16.dtype == torch.float32
    assert (e16 - e32).abs().mean() < 0.05 * e32.abs().mean()


def test_embedding_cache_in_memory_and_on_disk(tiny_if, monkeypatch):
    prior = load(tiny_if)
    e = prior.embed("a green sphere")
    assert prior.embed("a green sphere") is e
    fresh = load(tiny_if)
    monkeypatch.setattr(fresh, "_encode_text", lambda prompt: pytest.fail("disk cache missed"))
    torch.testing.assert_close(fresh.embed("a green sphere").hidden, e.hidden)
    fresh.clear_run_cache()
    assert not fresh._embeddings


def test_long_prompt_is_truncated_to_77_tokens_with_a_warning(tiny_if, caplog):
    prior = load(tiny_if, cache_embeddings=False)
    with caplog.at_level(logging.WARNING):
        emb = prior.embed("a very detailed photo of a red cube " * 10)
    assert emb.hidden.shape == (77, 32)
    assert "longer than IF's 77 T5 tokens; ignored" in caplog.text


def test_missing_or_wrong_folders_say_what_is_wrong(tiny_if, tiny_sd, tmp_path):
    with pytest.raises(ModelUnavailableError, match="no such folder.*DeepFloyd IF stage I"):
        load(tmp_path / "nope")
    partial = tmp_path / "partial"
    shutil.copytree(tiny_if, partial)
    shutil.rmtree(partial / "text_encoder")
    with pytest.raises(ModelUnavailableError, match="has no 'text_encoder/' folder"):
        load(partial)
    with pytest.raises(ModelUnavailableError, match="latent model .*prior.name=stable_diffusion"):
        load(tiny_sd["eps"])  # a Stable Diffusion folder has all four subfolders, and a 4-channel UNet
    with pytest.raises(ConfigError, match="multiple of 2"):
        DeepFloydIFPrior(DeepFloydIFPriorConfig(model=str(tiny_if), resolution=33))


def test_device_follows_train_device_and_refuses_a_mismatch(tiny_if):
    prior = DeepFloydIFPrior(DeepFloydIFPriorConfig(model=str(tiny_if), resolution=32), device=torch.device("cpu"))
    assert prior.device == torch.device("cpu") and prior.unet.device.type == "cpu" and prior.alphas_cumprod.device.type == "cpu"
    with pytest.raises(ConfigError, match="prior.device=cuda:0"):  # no CUDA here, or not train.device
        DeepFloydIFPrior(DeepFloydIFPriorConfig(model=str(tiny_if), resolution=32, device="cuda:0"), device=torch.device("cpu"))


def test_missing_hub_model_names_id_cache_and_fixes():
    with pytest.raises(ModelUnavailableError) as e:
        DeepFloydIFPrior(DeepFloydIFPriorConfig())
    msg = str(e.value)
    for part in ("DeepFloyd/IF-I-XL-v1.0", "Hugging Face cache", "HF_HUB_OFFLINE", "prior.model=/path/to/folder"):
        assert part in msg


def test_hub_layout_tokenizer_spiece_model_only(tiny_if, tmp_path):
    """DeepFloyd's repositories ship the T5 tokenizer as spiece.model alone: with sentencepiece it loads and
    tokenizes as the tokenizer.json one; without it the error says to install it."""
    import importlib.util

    folder = tmp_path / "spiece"
    shutil.copytree(tiny_if, folder)
    shutil.rmtree(folder / "tokenizer")
    (folder / "tokenizer").mkdir()
    write_spiece_model(folder / "tokenizer" / "spiece.model", t5_unigram_vocab())
    if importlib.util.find_spec("sentencepiece") is None:
        with pytest.raises(ModelUnavailableError, match=r"spiece\.model.*pip install 'dream3d\[deepfloyd\]'"):
            load(folder)
    else:
        prompt = "a red cube, side view"
        assert load(folder).tokenizer(prompt).input_ids == load(tiny_if).tokenizer(prompt).input_ids


def test_if_preset_trains_end_to_end_on_a_tiny_pipeline(tiny_if, tmp_path, capsys):
    """`dream3d run configs/if/sds-nerf.yaml prior.model=<tiny>`: a few SDS steps with finite, nonzero gradients."""
    code = main(["run", "configs/if/sds-nerf.yaml", f"prior.model={tiny_if}", "prior.resolution=32",
                 "train.resolution=16", "train.steps=3", "scene.samples_per_ray=16", "scene.eval_samples_per_ray=16",
                 "scene.max_resolution=32", "output.val_resolution=16", "output.turntable_frames=0",
                 "output.export.resolution=32", "output.export.formats=[glb]", "output.checkpoint_every=3",
                 "output.val_every=3", f"output.out_dir={tmp_path}", "output.progress=false"])
    assert code == 0
    run_dir = Path(capsys.readouterr().out.split("run folder: ")[1].splitlines()[0])
    rows = list(csv.DictReader((run_dir / "logs" / "steps.csv").open()))
    assert len(rows) == 3
    grads = [float(r["grad_norm"]) for r in rows]
    assert all(math.isfinite(g) and g > 0 for g in grads), grads
    assert (run_dir / "checkpoints").exists() and list(run_dir.glob("model.*"))


def test_models_command_lists_deepfloyd_if(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "deepfloyd_if" in out and "DeepFloyd/IF-I-XL-v1.0" in out and "DeepFloyd/IF-I-M-v1.0" in out
