"""Score-distillation objectives: a registry from config name to (class, config dataclass).

Each objective subclasses `guidance.core.ScoreDistillation` and implements only `gradient`;
timestep sampling, CFG batching, weighting, clipping and gradient injection live in core.py.
"""
from guidance.asd import ASD, ASDConfig
from guidance.bsd import BSD, BSDConfig
from guidance.cds import CDS, CDSConfig
from guidance.classifier_score import CSD, CSM, NFSD, CSDConfig, CSMConfig, NFSDConfig
from guidance.fdiv import FDiv, FDivConfig
from guidance.core import Conditioning, GuidanceConfig, GuidanceOutput, ScoreDistillation
from guidance.ism import ISM, TSM, ISMConfig, TSMConfig
from guidance.sds import SDS
from guidance.vsd import ESD, VSD, ESDConfig, VSDConfig

GUIDANCES = {
    "sds": (SDS, GuidanceConfig),
    "ism": (ISM, ISMConfig),
    "tsm": (TSM, TSMConfig),
    "csd": (CSD, CSDConfig),
    "csm": (CSM, CSMConfig),
    "nfsd": (NFSD, NFSDConfig),
    "bsd": (BSD, BSDConfig),
    "asd": (ASD, ASDConfig),
    "cds": (CDS, CDSConfig),
    "vsd": (VSD, VSDConfig),
    "esd": (ESD, ESDConfig),
    "fdiv": (FDiv, FDivConfig),
}


def build_guidance(cfg, prior) -> ScoreDistillation:
    cls, _ = GUIDANCES[cfg.name]
    return cls(cfg, prior)


__all__ = ["Conditioning", "GuidanceConfig", "GuidanceOutput", "ScoreDistillation", "GUIDANCES", "build_guidance",
           "SDS", "ISM", "TSM", "CSD", "CSM", "NFSD", "BSD", "ASD", "CDS", "VSD", "ESD", "FDiv"]
