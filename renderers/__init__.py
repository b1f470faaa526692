"""Differentiable scenes: a registry from config name to (class, config dataclass)."""
from renderers.base import RenderOutput, Scene
from renderers.gaussians.scene import GaussianConfig, GaussianScene
from renderers.nerf.scene import NeRFConfig, NeRFScene

SCENES = {"nerf": (NeRFScene, NeRFConfig), "gaussians": (GaussianScene, GaussianConfig)}


def build_scene(cfg) -> Scene:
    cls, _ = SCENES[cfg.name]
    return cls(cfg)


__all__ = ["RenderOutput", "Scene", "NeRFScene", "NeRFConfig", "GaussianScene", "GaussianConfig", "SCENES", "build_scene"]
