"""Differentiable scenes: a registry from config name to (class, config dataclass)."""
from renderers.base import RenderOutput, Scene
from renderers.nerf.scene import NeRFConfig, NeRFScene

SCENES = {"nerf": (NeRFScene, NeRFConfig)}


def build_scene(cfg) -> Scene:
    cls, _ = SCENES[cfg.name]
    return cls(cfg)


__all__ = ["RenderOutput", "Scene", "NeRFScene", "NeRFConfig", "SCENES", "build_scene"]
