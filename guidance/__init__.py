"""Score-distillation objectives: a registry from config name to (class, config dataclass).

Each objective subclasses `guidance.core.ScoreDistillation` and overrides `gradient`; those that
train something of their own (VSD, ESD, f-div) also `aux_losses` and `optimizer_groups`. Timestep
sampling, CFG batching, weighting, stats, clipping and gradient injection live in core.py, DDIM
steps, inversion and sampling in ddim.py, the VSD/ESD fake score in fake_score.py.
"""
from dream3d.kernel.schema import registry
from guidance.asd import ASD, ASDConfig
from guidance.bsd import BSD, BSDConfig
from guidance.cds import CDS, CDSConfig
from guidance.classifier_score import CSD, CSM, NFSD, CSDConfig, CSMConfig, NFSDConfig
from guidance.core import Conditioning, GuidanceConfig, GuidanceOutput, RunContext, ScoreDistillation
from guidance.fdiv import FDiv, FDivConfig
from guidance.ism import ISM, TSM, ISMConfig, TSMConfig
from guidance.sds import SDS
from guidance.vsd import ESD, VSD, ESDConfig, VSDConfig

GUIDANCES = registry(
    (SDS, GuidanceConfig),
    (VSD, VSDConfig),
    (ESD, ESDConfig),
    (ISM, ISMConfig),
    (TSM, TSMConfig),
    (CSD, CSDConfig),
    (CSM, CSMConfig),
    (NFSD, NFSDConfig),
    (BSD, BSDConfig),
    (ASD, ASDConfig),
    (CDS, CDSConfig),
    (FDiv, FDivConfig),
)


def build_guidance(cfg, prior, run: RunContext | None = None) -> ScoreDistillation:
    """The guidance `cfg.name` on `prior`; `run` tells it the run's length and camera distribution."""
    cls, _ = GUIDANCES[cfg.name]
    return cls(cfg, prior, run)


__all__ = ["Conditioning", "GuidanceConfig", "GuidanceOutput", "RunContext", "ScoreDistillation", "GUIDANCES", "build_guidance",
           "SDS", "ISM", "TSM", "CSD", "CSM", "NFSD", "BSD", "ASD", "CDS", "VSD", "ESD", "FDiv"]
