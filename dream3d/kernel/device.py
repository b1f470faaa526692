"""Which device a run trains on: `train.device` (auto | cpu | cuda | cuda:N | mps) resolved once,
with one clear error when it is not on this machine, and the rule for `prior.device`.

Everything a training step touches lives on that one device (scene, optimiser state, cameras,
rays, noise, timesteps, guidance buffers, the prior). Random draws are made on the CPU with the
run's generator and moved over (dream3d/kernel/draws.py), so a checkpoint holds one generator state.
"""
from __future__ import annotations

import re

import torch

from dream3d.kernel.schema import ConfigError

DEVICE_NAMES = "auto, cpu, cuda, cuda:N, mps"
_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class DeviceUnavailableError(ConfigError):
    """The configured device is not on this machine."""


def check_device_name(name: str, key: str) -> None:
    if not isinstance(name, str) or not _PATTERN.fullmatch(name):
        raise ConfigError(f"{key} = {name!r} is not valid; valid: {DEVICE_NAMES}")


def cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """The torch device for a config value; auto = the first CUDA device when there is one, else
    the CPU (MPS only when asked for: not every op the renderers use runs there). Raises
    DeviceUnavailableError, one line saying what to set instead, when it is not on this machine."""
    check_device_name(name, key)
    if name == "auto":
        return torch.device("cuda" if cuda_count() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        n = cuda_count()
        if n == 0:
            why = ("this PyTorch is built without CUDA" if torch.version.cuda is None
                   else "PyTorch sees no GPU (driver, CUDA_VISIBLE_DEVICES)")
            raise DeviceUnavailableError(f"{key}={name}: no CUDA device on this machine ({why}); "
                                         f"set {key}=auto or {key}=cpu, and see `dream3d doctor`")
        if (device.index or 0) >= n:
            raise DeviceUnavailableError(f"{key}={name}: this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}")
    if device.type == "mps" and not mps_available():
        raise DeviceUnavailableError(f"{key}=mps: Apple's MPS is not available here; set {key}=auto or {key}=cpu")
    return device


def prior_device(train: torch.device, prior_name: str | None) -> torch.device:
    """The prior's device: `prior.device=auto` follows train.device. An explicit one may differ
    only as another CUDA device (a second GPU holds the diffusion model); anything else (a CPU prior
    under a CUDA scene, or the reverse) would move every render across the bus each step, so it is a
    ConfigError."""
    if prior_name is None or prior_name == "auto":
        return train
    device = resolve_device(prior_name, "prior.device")
    if device.type != train.type:
        raise ConfigError(f"prior.device={prior_name} does not match train.device ({train}): the scene and the prior "
                          "share one device; set prior.device=auto (it follows train.device), or another CUDA device "
                          "(cuda:N) to hold the prior on a second GPU")
    return device
