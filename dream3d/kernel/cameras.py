"""Orbit cameras, ray generation and view buckets.

World frame (shared by the whole project, see shared/docs/toyworld.md): right-handed, +Y up,
the object's front faces +Z. A camera is (elevation, azimuth, distance, fovy) looking at the
origin with up = +Y; azimuth 0 puts the camera on +Z, azimuth 90 on +X, elevation > 0 above.
Camera axes follow OpenGL: the camera looks down its -Z axis, +Y is up in the image.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Cameras:
    """A batch of B orbit cameras; every field is a float tensor [B] (angles in degrees)."""

    elevation: Tensor
    azimuth: Tensor
    distance: Tensor
    fovy: Tensor

    def __len__(self) -> int:
        return self.elevation.shape[0]

    @property
    def device(self) -> torch.device:
        return self.elevation.device

    def to(self, device: torch.device | str) -> "Cameras":
        """The same cameras on `device` (matrices, rays and intrinsics are then made there)."""
        return Cameras(*(f.to(device) for f in (self.elevation, self.azimuth, self.distance, self.fovy)))

    @staticmethod
    def make(elevation, azimuth, distance=2.5, fovy=40.0) -> "Cameras":
        el = torch.as_tensor(elevation, dtype=torch.float32).reshape(-1)
        az = torch.as_tensor(azimuth, dtype=torch.float32).reshape(-1)
        n = max(el.numel(), az.numel())
        full = lambda v: torch.as_tensor(v, dtype=torch.float32).reshape(-1).expand(n).clone()  # noqa: E731
        return Cameras(full(el), full(az), full(distance), full(fovy))

    def __getitem__(self, idx) -> "Cameras":
        return Cameras(self.elevation[idx], self.azimuth[idx], self.distance[idx], self.fovy[idx])

    @staticmethod
    def cat(batches: list["Cameras"]) -> "Cameras":
        return Cameras(*(torch.cat([getattr(c, f) for c in batches]) for f in ("elevation", "azimuth", "distance", "fovy")))

    def repeat(self, n: int) -> "Cameras":
        """The batch repeated n times ([c0..cB, c0..cB, ...])."""
        return Cameras(*(f.repeat(n) for f in (self.elevation, self.azimuth, self.distance, self.fovy)))

    @property
    def positions(self) -> Tensor:
        """Camera centres in world coordinates [B,3]."""
        el, az = torch.deg2rad(self.elevation), torch.deg2rad(self.azimuth)
        return self.distance[:, None] * torch.stack(
            [torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)], -1
        )

    def c2w(self) -> Tensor:
        """Camera-to-world matrices [B,4,4] (OpenGL axes: columns right, up, back, centre)."""
        pos = self.positions
        forward = torch.nn.functional.normalize(-pos, dim=-1)
        up_world = forward.new_tensor([0.0, 1.0, 0.0]).expand_as(forward)
        right = torch.nn.functional.normalize(torch.linalg.cross(forward, up_world), dim=-1)
        up = torch.linalg.cross(right, forward)
        m = torch.eye(4, device=pos.device).repeat(len(self), 1, 1)
        m[:, :3, 0], m[:, :3, 1], m[:, :3, 2], m[:, :3, 3] = right, up, -forward, pos
        return m

    def viewmats(self) -> Tensor:
        """World-to-camera matrices [B,4,4] in OpenCV axes (x right, y down, z forward), as gsplat expects."""
        flip = torch.diag(self.elevation.new_tensor([1.0, -1.0, -1.0, 1.0]))
        return flip @ torch.linalg.inv(self.c2w())

    def intrinsics(self, height: int, width: int) -> Tensor:
        """Pinhole matrices K [B,3,3] in pixels, consistent with `rays` (vertical fov, centred principal
        point, pixel (i, j) centred at (j + 0.5, i + 0.5))."""
        f = 0.5 * height / torch.tan(torch.deg2rad(self.fovy) / 2)
        K = torch.zeros(len(self), 3, 3, device=self.device)
        K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = f, f, width / 2, height / 2, 1.0
        return K

    def rays(self, height: int, width: int, supersample: int = 1) -> tuple[Tensor, Tensor]:
        """Ray origins and unit directions through pixel centres, each [B,H*s,W*s,3]."""
        h, w = height * supersample, width * supersample
        c2w = self.c2w()
        tan = torch.tan(torch.deg2rad(self.fovy) / 2)[:, None, None]
        aspect = width / height
        ys = 1 - (torch.arange(h, dtype=torch.float32, device=self.device) + 0.5) / h * 2
        xs = (torch.arange(w, dtype=torch.float32, device=self.device) + 0.5) / w * 2 - 1
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        d_cam = torch.stack(
            [xx[None] * tan * aspect, yy[None] * tan, -torch.ones_like(xx)[None].expand(len(self), -1, -1)], -1
        )
        dirs = torch.einsum("bij,bhwj->bhwi", c2w[:, :3, :3], d_cam)
        dirs = torch.nn.functional.normalize(dirs, dim=-1)
        origins = c2w[:, None, None, :3, 3].expand_as(dirs)
        return origins, dirs


VIEW_BUCKETS = ("front", "side", "back", "overhead")


@dataclass(frozen=True)
class ViewThresholds:
    """Where the view buckets split, in degrees: overhead above `overhead` elevation, else front
    below |azimuth| `front`, back above |azimuth| `back`, side between. The defaults are DreamFusion's."""

    overhead: float = 60.0
    front: float = 45.0
    back: float = 135.0


DEFAULT_VIEW_THRESHOLDS = ViewThresholds()


def view_bucket(elevation: float, azimuth: float, thresholds: ViewThresholds = DEFAULT_VIEW_THRESHOLDS) -> str:
    """DreamFusion's view buckets (default thresholds): overhead (elevation > 60), front (|azimuth| < 45),
    back (|azimuth| > 135), side otherwise."""
    if elevation > thresholds.overhead:
        return "overhead"
    a = abs(wrap_degrees(azimuth))
    if a < thresholds.front:
        return "front"
    if a > thresholds.back:
        return "back"
    return "side"


def wrap_degrees(angle):
    """Wrap an angle (float or tensor) to [-180, 180)."""
    return (angle + 180.0) % 360.0 - 180.0


@dataclass
class CameraSampler:
    """Random training cameras: elevation and azimuth uniform in degrees over the ranges."""

    elevation_range: tuple[float, float] = (-10.0, 45.0)
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    distance: float = 2.5
    fovy: float = 40.0

    def sample(self, batch: int, generator: torch.Generator) -> Cameras:
        u = torch.rand(batch, 2, generator=generator)
        (e0, e1), (a0, a1) = self.elevation_range, self.azimuth_range
        return Cameras.make(e0 + (e1 - e0) * u[:, 0], a0 + (a1 - a0) * u[:, 1], self.distance, self.fovy)

    def sample_groups(self, groups: int, views: int, generator: torch.Generator) -> Cameras:
        """Cameras for a multi-view prior, as MVDream samples them: per group one elevation (uniform in
        the range) and `views` azimuths 360/views degrees apart from a random offset (uniform in
        azimuth_range; the views go round the full circle whatever the range). [groups*views], the views
        of a group consecutive."""
        u = torch.rand(groups, 2, generator=generator)
        (e0, e1), (a0, a1) = self.elevation_range, self.azimuth_range
        el = (e0 + (e1 - e0) * u[:, 0]).repeat_interleave(views)
        az = (a0 + (a1 - a0) * u[:, 1])[:, None] + torch.arange(views, dtype=torch.float32) * (360.0 / views)
        return Cameras.make(el, wrap_degrees(az.reshape(-1)), self.distance, self.fovy)

    def orbit(self, n: int, elevation: float = 15.0, offset: float = 0.0) -> Cameras:
        """n cameras evenly spaced in azimuth at one elevation (turntables, previews)."""
        az = offset + torch.arange(n, dtype=torch.float32) * (360.0 / n)
        return Cameras.make(torch.full((n,), float(elevation)), az, self.distance, self.fovy)

    def held_out(self, n: int = 8) -> Cameras:
        """Evaluation cameras: azimuths offset from the previews, alternating low/high elevation."""
        lo, hi = self.elevation_range
        el = [lo + (hi - lo) * (0.3 if i % 2 == 0 else 0.8) for i in range(n)]
        az = [wrap_degrees(22.5 + i * 360.0 / n) for i in range(n)]
        return Cameras.make(el, az, self.distance, self.fovy)

