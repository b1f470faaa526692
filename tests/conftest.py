import os

# before anything imports huggingface_hub: tests never touch the network
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Tests build their ToyWorld datasets in a private cache, never the user's."""
    os.environ["DREAM3D_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield


@pytest.fixture
def no_network(monkeypatch):
    """Fail a test that connects anywhere but this machine (model loading must stay offline)."""
    import socket

    real = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") and self.family != socket.AF_UNIX:
            raise AssertionError(f"test tried to reach the network: {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    assert os.environ["HF_HUB_OFFLINE"] == "1"


# small but real settings for fast end-to-end runs
TINY_RUN = [
    "train.steps=6", "train.batch_size=2", "train.resolution=16",
    "prior.num_views=64", "prior.dataset_resolution=32", "prior.resolution=16",
    "scene.samples_per_ray=16", "scene.eval_samples_per_ray=24", "scene.max_resolution=32",
    "output.checkpoint_every=3", "output.val_every=3", "output.val_resolution=16",
    "output.turntable_frames=2", "output.turntable_resolution=16", "output.export.resolution=32",
    "output.export.texture_size=64", "output.progress=false",
    "eval.resolution=16", "eval.num_cameras=2", "eval.volume_resolution=16",
]


PRESET = "configs/toy/sds-nerf.yaml"


def tiny_config(tmp_path, *extra):
    """The default preset shrunk by TINY_RUN, writing runs under tmp_path."""
    from dream3d.config import load_config

    return load_config(PRESET, TINY_RUN + [f"output.out_dir={tmp_path}"] + list(extra))


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """Tiny random Stable Diffusion pipelines (SD epsilon, SD v-prediction, SDXL, an MVDream-style UNet with a
    camera embedding: "mv"), a Zero123 pipeline ("zero123") and a DeepFloyd IF stage I pipeline ("if") in diffusers
    layout, and a reference image for image-to-3D ("ref")."""
    import imageio.v3 as iio
    import numpy as np
    from tiny_diffusers import build_tiny_if_pipeline, build_tiny_pipeline, build_tiny_zero123_pipeline

    root = tmp_path_factory.mktemp("tiny_sd")
    ref = np.zeros((24, 24, 4), np.uint8)  # a reference view for image-to-3D presets: an orange square on transparent
    ref[6:18, 6:18] = (230, 120, 20, 255)
    iio.imwrite(root / "ref.png", ref)
    return {"eps": build_tiny_pipeline(root / "eps"), "v": build_tiny_pipeline(root / "v", prediction_type="v_prediction"),
            "xl": build_tiny_pipeline(root / "xl", xl=True), "if": build_tiny_if_pipeline(root / "if"),
            "mv": build_tiny_pipeline(root / "mv", camera_dim=16), "zero123": build_tiny_zero123_pipeline(root / "zero123"),
            "ref": root / "ref.png"}


def tiny_overrides(preset: str, tiny_sd: dict | None = None) -> list[str]:
    """TINY_RUN for a preset: Gaussian presets get a few hundred Gaussians that densify within the run,
    Stable Diffusion and DeepFloyd IF presets a tiny local pipeline instead of ToyWorld sizes."""
    out = list(TINY_RUN)
    if "gaussians" in str(preset):
        out = [o for o in out if not o.startswith("scene.")] + ["scene.num_points=300", "scene.densify_from=2",
                                                                "scene.densify_every=2"]
    if "configs/sd/" in str(preset):
        model = next((tiny_sd[key] for word, key in (("tsm", "xl"), ("mvdream", "mv"), ("zero123", "zero123"))
                      if word in str(preset)), tiny_sd["eps"])
        bank = ["guidance.bank_size=2", "guidance.bank_sampler_steps=2"] if "fdiv" in str(preset) else []
        out = [o for o in out if not o.startswith("prior.")] + [f"prior.model={model}", "prior.resolution=32", *bank]
    if "refine" in str(preset):  # a few steps of each mesh stage on a small grid
        out += ["refine.geometry_steps=2", "refine.texture_steps=2", "refine.resolution=16", "refine.sdf_resolution=24",
                "refine.mesh.grid_resolution=8", "refine.mesh.max_resolution=32"]
    if "zero123" in str(preset):  # image-to-3D: a small reference view
        out += [f"image={tiny_sd['ref']}", "reference.resolution=16"]
    if "mvdream" in str(preset):  # one group of 4 views
        out = [o for o in out if o != "train.batch_size=2"] + ["train.batch_size=4"]
    if "multiview" in str(preset):  # groups of 4 views; a coarse camera grid instead of the single-view dataset
        out = [o for o in out if o not in ("prior.num_views=64", "train.batch_size=2")] + [
            "train.batch_size=4", "prior.grid_elevation_step=27.5", "prior.grid_azimuth_steps=8"]
    if "configs/if/" in str(preset):
        out = [o for o in out if not o.startswith("prior.")] + [f"prior.model={tiny_sd['if']}", "prior.resolution=32"]
    return out


def free_port() -> int:
    """A localhost TCP port nobody listens on (now)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(runs_dir, **launch_kwargs):
    """The web UI on a free localhost port, not blocking: (url, demo); close it with demo.close()."""
    from dream3d.webapp import launch

    port = free_port()
    return f"http://127.0.0.1:{port}/", launch(port=port, runs_dir=runs_dir, block=False, **launch_kwargs)
