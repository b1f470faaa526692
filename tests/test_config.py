from pathlib import Path

import pytest

from dream3d.config import ConfigError, load_config, to_yaml

PRESETS = sorted(Path("configs").rglob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=str)
def test_every_preset_loads(preset):
    """As is, or (a prior that conditions on an image only: Zero123) refused without an image and loaded with one."""
    from dream3d.config import IMAGE_PLACEHOLDER, ImageRequiredError, load_preset

    cfg = load_preset(preset)
    if cfg.image == IMAGE_PLACEHOLDER:
        assert cfg.prior.name == "zero123"
        with pytest.raises(ImageRequiredError, match="image=ref.png"):
            load_config(preset)
    else:
        load_config(preset)


def test_overrides_are_typed_and_applied():
    cfg = load_config("configs/toy/sds-nerf.yaml", ["guidance.guidance_scale=7.5", "seed=3", "prompt=a blue ball",
                                                   "guidance.t_max=[0,0.98,0.5,200]"])
    assert cfg.guidance.guidance_scale == 7.5 and cfg.seed == 3 and cfg.prompt == "a blue ball"
    assert list(cfg.guidance.t_max) == [0, 0.98, 0.5, 200]
    assert "guidance_scale: 7.5" in to_yaml(cfg)


@pytest.mark.parametrize("override,words", [
    ("guidance.foo=1", ["guidance.foo", "guidance_scale", "t_max"]),
    ("scene.lr_encodng=1", ["scene.lr_encodng", "did you mean 'lr_encoding'"]),
    ("bogus=1", ["'bogus'", "prompt", "guidance"]),
    ("train.steps=0", ["train.steps", "out of range"]),
    ("train.steps=abc", ["train.steps"]),
    ("prior.view_conditioning=cam", ["prior.view_conditioning", "none, text, camera"]),
    ("guidance.weighting=x", ["guidance.weighting", "sds, uniform"]),
    ("guidance.t_min=0.99", ["t_min", "t_max"]),
    ("guidance.guidance_scale=[1,2]", ["guidance_scale", "start_step"]),
    ("guidance.name=zzz", ["guidance.name", "sds"]),
    ("scene.background=pink", ["scene.background", "white"]),
    ("output.export.formats=[fbx]", ["fbx", "glb"]),
    ("camera.elevation_range=[50,10]", ["camera.elevation_range"]),
    ("prompt=", ["prompt is empty"]),
    ("prompt=" + "a" * 400, ["300"]),
    ("nokey", ["key=value"]),
])
def test_bad_config_names_the_key_and_valid_options(override, words):
    with pytest.raises(ConfigError) as e:
        load_config("configs/toy/sds-nerf.yaml", [override])
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("configs/nope.yaml")


@pytest.mark.parametrize("override", ["train.steps=@", "=1", "seed=\x1b", "train.steps=${nope}", "train={"])
def test_unparseable_overrides_are_config_errors(override):
    """Found by the web UI's property test: YAML scanner errors used to escape as tracebacks."""
    with pytest.raises(ConfigError):
        load_config("configs/toy/sds-nerf.yaml", [override])
