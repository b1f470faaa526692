"""A second device on a CPU-only machine, for tests that must fail when a tensor of a training step
is made on the wrong device.

`VirtualDevice` is a TorchFunctionMode that plays a device named `meta` (torch accepts the name,
so `torch.zeros(3, device=d)`, `t.to(d)` and `module.to(d)` all pass through as on a GPU): whatever
is made or moved there is a CPU tensor of the subclass `OnDevice`, whose `.device` answers `meta`,
and results of ops on it stay `OnDevice`. A tensor made with no device (torch's default, the CPU)
or moved back with `.cpu()` is a plain tensor. Every op is then checked the way CUDA checks it: an
op that mixes an `OnDevice` tensor with a plain one of one or more dimensions (0-dim CPU scalars are
allowed, as CUDA allows them), `.numpy()` of an `OnDevice` tensor, and `.cuda()` anywhere are
recorded as violations, with the line of project code that made the call.

It can pass vacuously only if nothing reached the device; `checked` counts the ops that involved an
`OnDevice` tensor, and tests assert that it is large and that a planted CPU tensor is caught.
"""
from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

VIRTUAL = torch.device("meta")
PROJECT = ("/dream3d/", "/guidance/", "/renderers/")


class OnDevice(torch.Tensor):
    """A CPU tensor standing for one on the virtual device."""


def _is_virtual(device) -> bool:
    return device is not None and torch.device(device) == VIRTUAL


def _tag(x):
    return x.as_subclass(OnDevice) if isinstance(x, torch.Tensor) and not isinstance(x, OnDevice) else x


def _untag(x):
    return x.as_subclass(torch.Tensor) if isinstance(x, OnDevice) else x


FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.rand, torch.randn, torch.randint, torch.randperm,
             torch.arange, torch.linspace, torch.logspace, torch.eye, torch.tensor, torch.as_tensor, torch.zeros_like,
             torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like, torch.randn_like, torch.randint_like,
             torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_empty, torch.Tensor.new_full,
             torch.Tensor.new_tensor}
ALLOWED_MIXES = {torch.Tensor.copy_, torch.Tensor.__getitem__,  # CUDA accepts a CPU source / a CPU index
                 torch._has_compatible_shallow_copy_type}  # a question about types, asked by Module.to


@dataclass
class Violation:
    what: str
    where: str


@dataclass
class VirtualDevice(TorchFunctionMode):
    violations: list[Violation] = field(default_factory=list)
    checked: int = 0

    def __post_init__(self):
        super().__init__()

    def _record(self, what: str) -> None:
        frames = [f for f in traceback.extract_stack()[:-2] if any(p in f.filename for p in PROJECT)]
        where = f"{frames[-1].filename.split('/main/')[-1]}:{frames[-1].lineno} {frames[-1].line}" if frames else "?"
        self.violations.append(Violation(what, where))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__qualname__", getattr(func, "__name__", str(func)))
        if func == torch.Tensor.device.__get__:  # method-wrappers are made anew: compare, not `is`
            return VIRTUAL if isinstance(args[0], OnDevice) else func(*args)
        if func == torch.Tensor.grad.__get__:
            g = func(*args)
            return _tag(g) if isinstance(args[0], OnDevice) else g
        if func in (torch.Tensor.cuda,):
            self._record(".cuda() (the run's device is not necessarily CUDA)")
        if func is torch.Tensor.numpy and isinstance(args[0], OnDevice):
            self._record(".numpy() of a device tensor (needs .cpu() first)")
        if func in (torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda):
            return self._move(func, args, kwargs)
        if func in FACTORIES and _is_virtual(kwargs.get("device")):
            with torch._C.DisableTorchFunctionSubclass():
                out = func(*tree_map(_untag, args), **{**kwargs, "device": "cpu"})
            return _tag(out)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        on = [t for t in tensors if isinstance(t, OnDevice)]
        if on:
            self.checked += 1
            plain = [t for t in tensors if not isinstance(t, OnDevice) and t.dim() > 0]
            inside_backward = torch._C._current_autograd_node() is not None
            if plain and func not in ALLOWED_MIXES and not inside_backward:
                self._record(f"{name} mixes device tensors with {len(plain)} CPU tensor(s) of shape "
                             f"{tuple(plain[0].shape)}")
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        if on and not name.startswith(("Tensor.__bool__", "Tensor.item", "Tensor.tolist", "Tensor.__float__",
                                        "Tensor.__int__", "Tensor.__index__", "Tensor.__len__")):
            return tree_map(_tag, out)
        return out

    def _move(self, func, args, kwargs):
        """t.to(device | tensor | dtype, ...), t.cpu(), t.cuda(): tag or untag the result."""
        src = args[0]
        if func is torch.Tensor.cpu:
            target = torch.device("cpu")
        elif func is torch.Tensor.cuda:
            target = VIRTUAL  # recorded above; keep the run going on the virtual device
        else:
            target = kwargs.get("device")
            for a in args[1:]:
                if isinstance(a, (str, torch.device)):
                    target = a
                elif isinstance(a, torch.Tensor):
                    target = VIRTUAL if isinstance(a, OnDevice) else torch.device("cpu")
        dtype = kwargs.get("dtype") or next((a for a in args[1:] if isinstance(a, torch.dtype)), None)
        with torch._C.DisableTorchFunctionSubclass():
            out = src.to(dtype=dtype) if dtype is not None else src
            if kwargs.get("copy"):
                out = out.clone()
        if target is None:  # a dtype change: stays where it was
            return _tag(out) if isinstance(src, OnDevice) else out
        return _tag(out) if _is_virtual(target) else _untag(out)


@contextlib.contextmanager
def virtual_device():
    """The mode, with modules converted by replacing their parameters (so `module.to(VIRTUAL)`
    leaves OnDevice parameters) and torch.autograd.grad's results on the device of its inputs."""
    mode = VirtualDevice()
    previous = torch.__future__.get_overwrite_module_params_on_conversion()
    grad = torch.autograd.grad

    def grad_on_device(outputs, inputs, *a, **k):
        res = grad(outputs, inputs, *a, **k)
        ins = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
        return tuple(_tag(r) if isinstance(i, OnDevice) else r for r, i in zip(res, ins))

    torch.__future__.set_overwrite_module_params_on_conversion(True)
    torch.autograd.grad = grad_on_device
    try:
        with mode:
            yield mode
    finally:
        torch.autograd.grad = grad
        torch.__future__.set_overwrite_module_params_on_conversion(previous)
