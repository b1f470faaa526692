"""Score-distillation objectives: a registry from config name to (class, config dataclass)."""
from guidance.core import Conditioning, GuidanceConfig, GuidanceOutput, ScoreDistillation
from guidance.sds import SDS

GUIDANCES = {"sds": (SDS, GuidanceConfig)}


def build_guidance(cfg, prior) -> ScoreDistillation:
    cls, _ = GUIDANCES[cfg.name]
    return cls(cfg, prior)


__all__ = ["Conditioning", "GuidanceConfig", "GuidanceOutput", "ScoreDistillation", "SDS", "GUIDANCES", "build_guidance"]
