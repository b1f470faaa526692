"""Differentiable scenes: a registry from config name to (class, config dataclass)."""
from dream3d.kernel.schema import registry
from renderers.base import DensifyInfo, RenderOutput, Scene, SceneInit
from renderers.gaussians.scene import GaussianConfig, GaussianScene
from renderers.mesh.scene import MeshConfig, MeshScene
from renderers.nerf.scene import NeRFConfig, NeRFScene

SCENES = registry((NeRFScene, NeRFConfig), (GaussianScene, GaussianConfig), (MeshScene, MeshConfig))


def build_scene(cfg, init: SceneInit | None = None) -> Scene:
    cls, _ = SCENES[cfg.name]
    return cls(cfg, init)


__all__ = ["DensifyInfo", "RenderOutput", "Scene", "SceneInit", "NeRFScene", "NeRFConfig", "GaussianScene",
           "GaussianConfig", "MeshScene", "MeshConfig", "SCENES", "build_scene"]
