"""Surface normals of a density field: n = -grad(sigma) / |grad(sigma)| (density grows inward).

`analytic` differentiates the field by autograd (one extra backward through the encoding);
`finite_difference` takes central differences with six extra field evaluations per point and
needs no second-order autograd. Both keep the graph to the field's parameters when gradients
are enabled, so losses on normals (orientation) train the field.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

NORMAL_METHODS = ("analytic", "finite_difference")


def with_normals(field: Callable[[Tensor], tuple[Tensor, Tensor]], method: str = "analytic",
                 eps: float = 1e-2) -> Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]:
    """Wrap `field(points [P,3]) -> (density [P], albedo [P,3])` into one that also returns unit
    outward normals [P,3] (0 where the gradient vanishes)."""
    if method not in NORMAL_METHODS:
        raise ValueError(f"unknown normal method {method!r}; valid: {', '.join(NORMAL_METHODS)}")

    def evaluate(points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if method == "analytic":
            train = torch.is_grad_enabled()
            with torch.enable_grad():
                p = points.detach().requires_grad_(True)
                sigma, albedo = field(p)
                (grad,) = torch.autograd.grad(sigma.sum(), p, create_graph=train)
            if not train:
                sigma, albedo = sigma.detach(), albedo.detach()
        else:
            sigma, albedo = field(points)
            offsets = torch.eye(3, dtype=points.dtype, device=points.device) * eps  # [3,3]
            probe = torch.cat([points[:, None] + offsets, points[:, None] - offsets], 1)  # [P,6,3]
            d = field(probe.reshape(-1, 3))[0].reshape(-1, 2, 3)
            grad = (d[:, 0] - d[:, 1]) / (2 * eps)
        norm = grad.norm(dim=-1, keepdim=True)
        return sigma, albedo, torch.where(norm > 1e-12, -grad / norm.clamp(min=1e-12), torch.zeros_like(grad))

    return evaluate
