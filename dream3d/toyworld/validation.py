"""The ToyWorld truth of a run's validation views, so training logs can show silhouette IoU as
the run goes (the trainer's convergence checks and previews render the same orbit cameras)."""
from __future__ import annotations

from torch import Tensor

from dream3d.kernel.cameras import Cameras
from dream3d.toyworld.catalogue import PromptError, parse_prompt
from dream3d.toyworld.dataset import render_gt
from dream3d.toyworld.metrics import silhouette_iou


class TruthMasks:
    """Coverage masks of the prompt's catalogue object from `cameras`, rendered once per
    resolution; `iou(alpha)` scores renders [B,1,r,r] from those cameras (on any device) against
    them. The truth is rendered and compared on the CPU."""

    def __init__(self, prompt: str, cameras: Cameras):
        self.item, self.cameras = parse_prompt(prompt), cameras.to("cpu")
        self._masks: dict[int, Tensor] = {}

    @staticmethod
    def for_run(prompt: str, prior_name: str, cameras: Cameras) -> "TruthMasks | None":
        """The truth for a ToyWorld run whose prompt names a catalogue object; None otherwise."""
        if prior_name != "toyworld":
            return None
        try:
            return TruthMasks(prompt, cameras)
        except PromptError:
            return None

    def iou(self, alpha: Tensor) -> float:
        res = alpha.shape[-1]
        if res not in self._masks:
            self._masks[res] = render_gt(self.item, self.cameras, res)[1]
        return silhouette_iou(alpha.cpu(), self._masks[res])
