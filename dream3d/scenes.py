"""The run's scene: a renderer from the registry, started from what only the app knows.

Renderers take their initial points as data (`SceneInit`); this module samples them (inside a
ToyWorld shape for `scene.init=shape`) from a generator seeded with the run's seed, so the
Gaussian initialisation follows `seed` like every other random draw of a run.
"""
from __future__ import annotations

import torch

from dream3d.kernel.schema import ConfigError
from dream3d.toyworld.catalogue import SHAPES
from dream3d.toyworld.geometry import sample_inside
from renderers import GaussianConfig, Scene, SceneInit, build_scene


def check_scene_config(cfg) -> None:
    """Checks of the scene section that need the app's knowledge (the ToyWorld shape names)."""
    if isinstance(cfg, GaussianConfig) and cfg.init == "shape" and cfg.init_shape not in SHAPES:
        raise ConfigError(f"scene.init_shape = {cfg.init_shape!r} is not valid; valid: {', '.join(SHAPES)}")


def build_run_scene(cfg, seed: int, view_elevations: tuple[float, float] | None = None) -> Scene:
    """build_scene(cfg) with the initial points and generator of a run with this seed, and the elevation range
    (degrees) of its training cameras."""
    generator = torch.Generator().manual_seed(seed)
    points = None
    if isinstance(cfg, GaussianConfig) and cfg.init == "shape":
        check_scene_config(cfg)
        points = sample_inside(cfg.init_shape, cfg.num_points, generator)
    return build_scene(cfg, SceneInit(generator=generator, points=points, view_elevations=view_elevations))
