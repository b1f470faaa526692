"""Stable Diffusion from ONE original-layout checkpoint file (guidance/priors/single_file.py): the tiny
pipelines of conftest written as LDM `.safetensors` (tests/ldm_checkpoint.py) load back to the same
weights and predictions; a missing config, a pickle and a missing file give errors that say what to do.
No network: HF_HUB_OFFLINE=1 (conftest) and any non-loopback connection fails the test."""
import os
import pickle
import shutil

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from ldm_checkpoint import write_ldm_checkpoint
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from guidance.priors.single_file import SingleFileError, is_single_file, load_single_file

pytestmark = pytest.mark.usefixtures("no_network")  # conftest: offline only


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """A Hugging Face cache with nothing in it, whatever the machine's own holds."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def ldm_files(tiny_sd, tmp_path_factory):
    """The tiny SD 1.x-style and SDXL pipelines, each as one original-layout .safetensors file."""
    root = tmp_path_factory.mktemp("ldm")
    return {name: write_ldm_checkpoint(tiny_sd[name], root / f"{name}.safetensors") for name in ("eps", "xl")}


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("name", ["eps", "xl"])
def test_single_file_loads_the_folder_weights(tiny_sd, ldm_files, name):
    folder, path = tiny_sd[name], ldm_files[name]
    assert is_single_file(str(path)) and not is_single_file(str(folder))
    assert {k.split(".")[0] for k in load_file(path)} <= {
        "model", "first_stage_model", "cond_stage_model", "conditioner"}  # the original layout, not diffusers'
    parts = load_single_file(str(path), config=str(folder), local_files_only=True, torch_dtype=torch.float32)
    assert parts.is_xl == (name == "xl") and parts.model_type == ("xl_base" if name == "xl" else "v1")
    assert type(parts.scheduler).__name__ == "DDPMScheduler"
    assert parts.scheduler.config.prediction_type == "epsilon"
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    _same_weights(parts.unet, unet)
    _same_weights(parts.vae, AutoencoderKL.from_pretrained(folder, subfolder="vae"))
    encoders = [CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")]
    if name == "xl":
        encoders.append(CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2"))
    assert len(parts.text_encoders) == len(parts.tokenizers) == len(encoders)
    for got, want in zip(parts.text_encoders, encoders):
        assert type(got) is type(want)
        _same_weights(got, want)
    assert parts.tokenizers[0]("a cat").input_ids == parts.tokenizers[0].__class__.from_pretrained(
        folder, subfolder="tokenizer")("a cat").input_ids

    g = torch.Generator().manual_seed(0)
    x, hidden = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, unet.config.cross_attention_dim, generator=g)
    kw = {"encoder_hidden_states": hidden}
    if name == "xl":
        kw["added_cond_kwargs"] = {"text_embeds": torch.randn(2, 16, generator=g), "time_ids": torch.ones(2, 6)}
    with torch.no_grad():
        assert torch.equal(parts.unet(x, torch.tensor([10, 500]), **kw).sample, unet(x, torch.tensor([10, 500]), **kw).sample)


def test_dtypes_and_the_prediction_type_come_from_the_arguments_and_config(tiny_sd, ldm_files):
    parts = load_single_file(str(ldm_files["eps"]), config=str(tiny_sd["v"]), local_files_only=True,
                             torch_dtype=torch.float16, vae_dtype=torch.float32)
    assert parts.scheduler.config.prediction_type == "v_prediction"  # same architecture, the v folder's scheduler
    assert parts.unet.dtype == parts.text_encoders[0].dtype == torch.float16 and parts.vae.dtype == torch.float32


def test_config_guessed_from_the_keys_is_read_from_the_hf_cache(tiny_sd, ldm_files, empty_hf_cache):
    """config=None: diffusers' guess for an SD 1.x file (stable-diffusion-v1-5/stable-diffusion-v1-5), found
    offline in the cache (here: the tiny folder's configs, stored the way the hub cache stores a snapshot)."""
    repo = empty_hf_cache / "models--stable-diffusion-v1-5--stable-diffusion-v1-5"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_sd["eps"], repo / "snapshots" / commit,
                    ignore=lambda d, names: [n for n in names if n.endswith(".safetensors")])  # configs only
    parts = load_single_file(str(ldm_files["eps"]), config=None, local_files_only=True)
    assert parts.config == str(repo / "snapshots" / commit)
    _same_weights(parts.unet, UNet2DConditionModel.from_pretrained(tiny_sd["eps"], subfolder="unet"))


def test_no_config_offline_says_to_set_single_file_config(tiny_sd, ldm_files, empty_hf_cache):
    for local_files_only in (False, True):  # HF_HUB_OFFLINE=1 makes both offline
        with pytest.raises(SingleFileError) as e:
            load_single_file(str(ldm_files["eps"]), config=None, local_files_only=local_files_only)
        msg = str(e.value)
        assert "prior.single_file_config=" in msg and "stable-diffusion-v1-5/stable-diffusion-v1-5" in msg
        assert "HF_HUB_OFFLINE=1" in msg
    # a cached snapshot with only some of the configs (as other loaders leave it) is not enough
    snapshot = empty_hf_cache / "models--stable-diffusion-v1-5--stable-diffusion-v1-5" / "snapshots" / ("0" * 40)
    (snapshot / "unet").mkdir(parents=True)
    shutil.copy(tiny_sd["eps"] / "unet" / "config.json", snapshot / "unet")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    with pytest.raises(SingleFileError, match="guessed .* not in the Hugging Face cache .*prior.single_file_config="):
        load_single_file(str(ldm_files["eps"]), config=None, local_files_only=True)
    with pytest.raises(SingleFileError, match="prior.single_file_config = 'nobody/nothing'.*not in the Hugging Face cache"):
        load_single_file(str(ldm_files["eps"]), config="nobody/nothing", local_files_only=True)
    with pytest.raises(SingleFileError, match="no such folder, and not a hub id"):
        load_single_file(str(ldm_files["eps"]), config="/no/such/folder")


def test_config_of_another_architecture_is_a_clear_error(tiny_sd, ldm_files, tmp_path):
    with pytest.raises(SingleFileError, match="same architecture"):
        load_single_file(str(ldm_files["eps"]), config=str(tiny_sd["xl"]), local_files_only=True)
    with pytest.raises(SingleFileError, match="lacks text_encoder_2/config.json, tokenizer_2/; .* of SDXL"):
        load_single_file(str(ldm_files["xl"]), config=str(tiny_sd["eps"]), local_files_only=True)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "unet").mkdir()
    with pytest.raises(SingleFileError, match="lacks unet/config.json, vae/config.json, .*, tokenizer/; it must be"):
        load_single_file(str(ldm_files["eps"]), config=str(tmp_path / "half"))


def _mkdir_on_unpickle(path: str):
    """A pickled object whose unpickling creates `path`: what a malicious .ckpt would do."""
    class Payload:
        def __reduce__(self):
            return os.mkdir, (path,)
    return Payload()


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickles_are_refused_unopened(tmp_path, monkeypatch, suffix):
    marker = tmp_path / "unpickled"
    path = tmp_path / f"model{suffix}"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _mkdir_on_unpickle(str(marker))}, path)

    def forbidden(*a, **k):
        raise AssertionError("a user's weight file was unpickled")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    assert is_single_file(str(path))
    with pytest.raises(SingleFileError, match="is a pickle .*convert .*safetensors"):
        load_single_file(str(path), config=str(tmp_path))
    assert not marker.exists()
    # a pickle renamed to .safetensors is read by the safetensors parser, which cannot unpickle
    renamed = path.rename(tmp_path / "model.safetensors")
    with pytest.raises(SingleFileError, match="not a readable .safetensors file"):
        load_single_file(str(renamed), config=str(tmp_path))
    assert not marker.exists()


def test_missing_file_and_partial_checkpoints(tiny_sd, tmp_path, ldm_files):
    missing = tmp_path / "nowhere" / "model.safetensors"
    assert is_single_file(str(missing))  # by its name, so the prior says the file is missing
    with pytest.raises(SingleFileError, match="no such file"):
        load_single_file(str(missing), config=str(tmp_path))
    assert not is_single_file("stabilityai/stable-diffusion-2-1-base") and not is_single_file(str(tmp_path))
    with pytest.raises(SingleFileError, match="must be .safetensors"):
        load_single_file(str(tmp_path / "model.gguf"))
    full = load_file(ldm_files["eps"])
    save_file({k: v for k, v in full.items() if not k.startswith("first_stage_model.")}, str(tmp_path / "novae.safetensors"))
    with pytest.raises(SingleFileError, match="no vae weights"):
        load_single_file(str(tmp_path / "novae.safetensors"), config=str(tmp_path))
    save_file({k: v for k, v in full.items() if k.startswith("first_stage_model.")}, str(tmp_path / "vae.safetensors"))
    with pytest.raises(SingleFileError, match=r"no UNet weights \(model.diffusion_model"):
        load_single_file(str(tmp_path / "vae.safetensors"), config=str(tmp_path))
    save_file({k: v for k, v in full.items() if not k.endswith("text_model.final_layer_norm.weight")},
              str(tmp_path / "partial.safetensors"))
    with pytest.raises(SingleFileError, match="lacks 1 text_encoder weights .* e.g. final_layer_norm.weight"):
        load_single_file(str(tmp_path / "partial.safetensors"), config=str(tiny_sd["eps"]))
    inpaint = dict(full)
    w = full["model.diffusion_model.input_blocks.0.0.weight"]
    inpaint["model.diffusion_model.input_blocks.0.0.weight"] = torch.cat([w, w, w[:, :1]], 1)  # 9 input channels
    save_file(inpaint, str(tmp_path / "inpaint.safetensors"))
    with pytest.raises(SingleFileError, match="looks like a 'inpainting' checkpoint"):
        load_single_file(str(tmp_path / "inpaint.safetensors"), config=str(tmp_path))


@pytest.mark.parametrize("name", ["eps", "xl"])
def test_prior_from_a_single_file_predicts_as_from_its_folder(tiny_sd, ldm_files, name):
    """StableDiffusionPrior with prior.model=<file> and prior.single_file_config=<folder>: the same text
    embeddings, latents and eps as with prior.model=<folder>."""
    import dataclasses

    from guidance.priors.stable_diffusion import ModelUnavailableError, StableDiffusionPrior, StableDiffusionPriorConfig

    if "single_file_config" not in {f.name for f in dataclasses.fields(StableDiffusionPriorConfig)}:
        pytest.skip("stable_diffusion.py does not take prior.single_file_config yet")
    folder = StableDiffusionPrior(StableDiffusionPriorConfig(model=str(tiny_sd[name]), resolution=32))
    single = StableDiffusionPrior(StableDiffusionPriorConfig(model=str(ldm_files[name]), resolution=32,
                                                             single_file_config=str(tiny_sd[name]), local_files_only=True))
    assert single.is_xl == folder.is_xl == (name == "xl") and single.zero_empty_prompt == folder.zero_empty_prompt
    a, b = folder.embed("a red cube"), single.embed("a red cube")
    assert torch.equal(a.hidden, b.hidden) and (a.pooled is None or torch.equal(a.pooled, b.pooled))
    img, x, t = torch.rand(1, 3, 32, 32), torch.randn(2, *single.sample_shape), torch.tensor([100, 700])
    assert torch.equal(folder.encode(img), single.encode(img))
    assert torch.equal(folder.predict_eps(x, t, [a, a]), single.predict_eps(x, t, [b, b]))
    with pytest.raises(ModelUnavailableError, match="is a pickle"):
        StableDiffusionPrior(StableDiffusionPriorConfig(model=str(ldm_files[name].with_suffix(".ckpt"))))
