import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Tests build their ToyWorld datasets in a private cache, never the user's."""
    os.environ["DREAM3D_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield


# small but real settings for fast end-to-end runs
TINY_RUN = [
    "train.steps=6", "train.batch_size=2", "train.resolution=16",
    "prior.num_views=64", "prior.dataset_resolution=32", "prior.resolution=16",
    "scene.samples_per_ray=16", "scene.eval_samples_per_ray=24", "scene.max_resolution=32",
    "output.checkpoint_every=3", "output.val_every=3", "output.val_resolution=16",
    "output.turntable_frames=2", "output.turntable_resolution=16", "output.export.resolution=32",
    "output.progress=false", "eval.resolution=16", "eval.num_cameras=2", "eval.volume_resolution=16",
]


PRESET = "configs/toy/sds-nerf.yaml"


def tiny_config(tmp_path, *extra):
    """The default preset shrunk by TINY_RUN, writing runs under tmp_path."""
    from dream3d.config import load_config

    return load_config(PRESET, TINY_RUN + [f"output.out_dir={tmp_path}"] + list(extra))
