"""Exact geometry of ToyWorld shapes: ray intersection with outward normals, inside tests.

All shapes fit in a sphere of radius 0.5 centred at the origin (+Y up, front +Z).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

INF = float("inf")
CUBE_HALF = 0.4
CYL_RADIUS, CYL_HALF_HEIGHT = 0.4, 0.45
CONE_RADIUS, CONE_HALF_HEIGHT = 0.45, 0.45
TORUS_MAJOR, TORUS_MINOR = 0.35, 0.15
LIGHT = torch.nn.functional.normalize(torch.tensor([0.5, 1.0, 0.0]), dim=0)


def _smallest_positive(*ts: Tensor) -> tuple[Tensor, Tensor]:
    t = torch.stack(ts, -1)
    t = torch.where(t > 1e-6, t, torch.full_like(t, INF))
    return t.min(-1)


def _quadratic_roots(a: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    disc = b * b - 4 * a * c
    ok = (disc >= 0) & (a.abs() > 1e-12)
    sq = torch.sqrt(disc.clamp(min=0))
    a_safe = torch.where(a.abs() > 1e-12, a, torch.ones_like(a))
    t0 = torch.where(ok, (-b - sq) / (2 * a_safe), torch.full_like(a, INF))
    t1 = torch.where(ok, (-b + sq) / (2 * a_safe), torch.full_like(a, INF))
    return t0, t1


def intersect_sphere(o: Tensor, d: Tensor, radius: float = 0.5) -> tuple[Tensor, Tensor]:
    b = 2 * (o * d).sum(-1)
    c = (o * o).sum(-1) - radius**2
    t0, t1 = _quadratic_roots(torch.ones_like(b), b, c)
    t, _ = _smallest_positive(t0, t1)
    p = o + d * t.clamp(max=1e6)[..., None]
    return t, torch.nn.functional.normalize(p, dim=-1)


def intersect_cube(o: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    inv = 1.0 / torch.where(d.abs() > 1e-12, d, torch.full_like(d, 1e-12))
    ta, tb = (-CUBE_HALF - o) * inv, (CUBE_HALF - o) * inv
    tmin, tmax = torch.minimum(ta, tb), torch.maximum(ta, tb)
    t_enter, axis = tmin.max(-1)
    t_exit = tmax.min(-1).values
    hit = (t_enter <= t_exit) & (t_enter > 1e-6)
    t = torch.where(hit, t_enter, torch.full_like(t_enter, INF))
    normal = torch.nn.functional.one_hot(axis, 3).to(o.dtype) * -torch.sign(d)
    return t, normal


def intersect_cylinder(o: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    a = d[..., 0] ** 2 + d[..., 2] ** 2
    b = 2 * (o[..., 0] * d[..., 0] + o[..., 2] * d[..., 2])
    c = o[..., 0] ** 2 + o[..., 2] ** 2 - CYL_RADIUS**2
    side = list(_quadratic_roots(a, b, c))
    for i, ts in enumerate(side):
        y = o[..., 1] + d[..., 1] * ts.clamp(max=1e6)
        side[i] = torch.where(y.abs() <= CYL_HALF_HEIGHT, ts, torch.full_like(ts, INF))
    caps = []
    dy = torch.where(d[..., 1].abs() > 1e-12, d[..., 1], torch.full_like(d[..., 1], 1e-12))
    for y0 in (CYL_HALF_HEIGHT, -CYL_HALF_HEIGHT):
        tc = (y0 - o[..., 1]) / dy
        p = o + d * tc.clamp(-1e6, 1e6)[..., None]
        caps.append(torch.where(p[..., 0] ** 2 + p[..., 2] ** 2 <= CYL_RADIUS**2, tc, torch.full_like(tc, INF)))
    t, which = _smallest_positive(*side, *caps)
    p = o + d * t.clamp(max=1e6)[..., None]
    n_side = torch.nn.functional.normalize(p * torch.tensor([1.0, 0.0, 1.0]), dim=-1)
    n_cap = torch.zeros_like(p)
    n_cap[..., 1] = torch.where(which == 2, 1.0, -1.0)
    return t, torch.where((which < 2)[..., None], n_side, n_cap)


def intersect_cone(o: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    k = CONE_RADIUS / (2 * CONE_HALF_HEIGHT)  # radius shrinks by k per unit of height
    apex = CONE_HALF_HEIGHT
    oy = apex - o[..., 1]
    a = d[..., 0] ** 2 + d[..., 2] ** 2 - k * k * d[..., 1] ** 2
    b = 2 * (o[..., 0] * d[..., 0] + o[..., 2] * d[..., 2] + k * k * oy * d[..., 1])
    c = o[..., 0] ** 2 + o[..., 2] ** 2 - k * k * oy**2
    side = list(_quadratic_roots(a, b, c))
    for i, ts in enumerate(side):
        y = o[..., 1] + d[..., 1] * ts.clamp(-1e6, 1e6)
        side[i] = torch.where((y >= -CONE_HALF_HEIGHT) & (y <= apex), ts, torch.full_like(ts, INF))
    dy = torch.where(d[..., 1].abs() > 1e-12, d[..., 1], torch.full_like(d[..., 1], 1e-12))
    tc = (-CONE_HALF_HEIGHT - o[..., 1]) / dy
    p = o + d * tc.clamp(-1e6, 1e6)[..., None]
    cap = torch.where(p[..., 0] ** 2 + p[..., 2] ** 2 <= CONE_RADIUS**2, tc, torch.full_like(tc, INF))
    t, which = _smallest_positive(*side, cap)
    p = o + d * t.clamp(max=1e6)[..., None]
    n_side = torch.nn.functional.normalize(
        torch.stack([p[..., 0], k * k * (apex - p[..., 1]), p[..., 2]], -1), dim=-1
    )
    n_cap = torch.zeros_like(p)
    n_cap[..., 1] = -1.0
    return t, torch.where((which < 2)[..., None], n_side, n_cap)


def torus_sdf(p: Tensor) -> Tensor:
    q = torch.sqrt(p[..., 0] ** 2 + p[..., 2] ** 2) - TORUS_MAJOR
    return torch.sqrt(q * q + p[..., 1] ** 2) - TORUS_MINOR


def intersect_torus(o: Tensor, d: Tensor, iterations: int = 160) -> tuple[Tensor, Tensor]:
    """Sphere tracing on the exact torus SDF (vectorised), from the bounding sphere's entry."""
    t_enter, _ = intersect_sphere(o, d, TORUS_MAJOR + TORUS_MINOR + 1e-3)
    b = (o * d).sum(-1)
    inside_bound = (o * o).sum(-1) < (TORUS_MAJOR + TORUS_MINOR) ** 2
    t = torch.where(inside_bound, torch.zeros_like(t_enter), t_enter)
    active = torch.isfinite(t)
    t = torch.where(active, t, torch.zeros_like(t))
    t_max = -b + 1.0  # beyond the far side of the bounding sphere
    for _ in range(iterations):
        dist = torus_sdf(o + d * t[..., None])
        t = torch.where(active, t + dist, t)
        active = active & (dist > 1e-6) & (t < t_max)
    p = o + d * t[..., None]
    hit = torch.isfinite(t_enter) & (torus_sdf(p).abs() < 1e-4)
    ring = torch.nn.functional.normalize(p * torch.tensor([1.0, 0.0, 1.0]), dim=-1) * TORUS_MAJOR
    normal = torch.nn.functional.normalize(p - ring, dim=-1)
    return torch.where(hit, t, torch.full_like(t, INF)), normal


INTERSECT = {
    "sphere": intersect_sphere,
    "cube": intersect_cube,
    "cylinder": intersect_cylinder,
    "cone": intersect_cone,
    "torus": intersect_torus,
}


def intersect(shape: str, origins: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
    """First hit distance [...] (inf on a miss) and outward unit normal [...,3]."""
    return INTERSECT[shape](origins, dirs)


def inside(shape: str, p: Tensor) -> Tensor:
    """Boolean occupancy of points p [...,3]."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    r_xz = torch.sqrt(x * x + z * z)
    if shape == "sphere":
        return (p * p).sum(-1) <= 0.25
    if shape == "cube":
        return (p.abs() <= CUBE_HALF).all(-1)
    if shape == "cylinder":
        return (r_xz <= CYL_RADIUS) & (y.abs() <= CYL_HALF_HEIGHT)
    if shape == "cone":
        k = CONE_RADIUS / (2 * CONE_HALF_HEIGHT)
        return (y >= -CONE_HALF_HEIGHT) & (y <= CONE_HALF_HEIGHT) & (r_xz <= k * (CONE_HALF_HEIGHT - y))
    if shape == "torus":
        return torus_sdf(p) <= 0
    raise KeyError(shape)


def signed_distance(shape: str, p: Tensor) -> Tensor:
    """Exact signed distance [...] to a shape's surface (< 0 inside) at points p [...,3]; the capped cone's
    is Inigo Quilez's (iquilezles.org, "distance functions"), with its apex up."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    r_xz = torch.sqrt(x * x + z * z)
    if shape == "sphere":
        return p.norm(dim=-1) - 0.5
    if shape == "cube":
        q = p.abs() - CUBE_HALF
        return q.clamp(min=0).norm(dim=-1) + q.amax(-1).clamp(max=0)
    if shape == "cylinder":
        d = torch.stack([r_xz - CYL_RADIUS, y.abs() - CYL_HALF_HEIGHT], -1)
        return d.clamp(min=0).norm(dim=-1) + d.amax(-1).clamp(max=0)
    if shape == "cone":
        h, r = CONE_HALF_HEIGHT, CONE_RADIUS
        q = torch.stack([r_xz, y], -1)
        k1, k2 = q.new_tensor([0.0, h]), q.new_tensor([-r, 2 * h])  # the apex; base rim -> apex
        ca = torch.stack([r_xz - torch.minimum(r_xz, torch.where(y < 0, r, 0.0)), y.abs() - h], -1)
        cb = q - k1 + k2 * (((k1 - q) * k2).sum(-1, keepdim=True) / (k2 * k2).sum()).clamp(0, 1)
        sign = torch.where((cb[..., 0] < 0) & (ca[..., 1] < 0), -1.0, 1.0)
        return sign * torch.minimum((ca * ca).sum(-1), (cb * cb).sum(-1)).sqrt()
    if shape == "torus":
        return torus_sdf(p)
    raise KeyError(shape)


def sample_inside(shape: str, n: int, generator: torch.Generator | None = None) -> Tensor:
    """n points uniform inside a shape [n,3] (rejection sampling in its bounding box)."""
    pts = []
    while sum(len(p) for p in pts) < n:
        cand = torch.rand(4 * n, 3, generator=generator) - 0.5
        pts.append(cand[inside(shape, cand)])
    return torch.cat(pts)[:n]


def volume(shape: str) -> float:
    """Analytic volume (for tests of exported meshes)."""
    return {
        "sphere": 4 / 3 * math.pi * 0.5**3,
        "cube": (2 * CUBE_HALF) ** 3,
        "cylinder": math.pi * CYL_RADIUS**2 * 2 * CYL_HALF_HEIGHT,
        "cone": math.pi * CONE_RADIUS**2 * 2 * CONE_HALF_HEIGHT / 3,
        "torus": 2 * math.pi**2 * TORUS_MAJOR * TORUS_MINOR**2,
    }[shape]
