"""Field helpers for typed configs: declare choices, ranges and schedules beside the default,
and one validator that checks them for every config dataclass."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from dream3d.kernel.schedules import Schedule

RUN_LENGTH_FOR_CHECKS = 1000  # resolves "N%" steps when a schedule's form is checked without a run


class ConfigError(ValueError):
    """A config problem, with the key and what would be valid."""


@dataclasses.dataclass
class SectionConfig:
    """Base of the prior, guidance and scene sections of a run config: `name` (set once, by each
    subclass's default) selects the class from its registry; `validate()` checks what spans several
    fields (ranges and choices are checked by validate_fields)."""

    name: str = ""

    def validate(self) -> None:
        """Raise ConfigError naming the keys when the fields do not fit together."""


def registry(*entries: tuple[type, type]) -> dict[str, tuple[type, type]]:
    """{name: (class, config dataclass)} keyed by each config's `name` default, so a registry key
    is written in one place only."""
    out = {}
    for cls, config in entries:
        name = config.name
        if not name or name in out:
            raise ValueError(f"{config.__name__}.name must be a unique non-empty default, got {name!r}")
        out[name] = (cls, config)
    return out


def choice(default: str, options: tuple[str, ...]):
    return dataclasses.field(default=default, metadata={"choices": tuple(options)})


def bounded(default, lo=None, hi=None, *, schedule: bool | str = False, nullable: bool = False):
    """A number (or, with `schedule`, a schedule of numbers) that must lie in [lo, hi]; schedule="run":
    its steps may also be shares of the run ("20%", resolved by whoever knows the run's length)."""
    meta = {"range": (lo, hi), "schedule": schedule, "nullable": nullable}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def server_only(default=None):
    """A key that names a file, folder or download on the machine that runs dream3d (a point
    cloud, a model folder or hub id, the output folder). A shared web UI never takes it from a
    visitor: only the preset sets it."""
    return dataclasses.field(default=default, metadata={"server_only": True})


def server_only_keys(cls: type, prefix: str = "") -> list[str]:
    """Dotted names of the server_only fields of a config dataclass and its nested dataclasses."""
    keys = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("server_only"):
            keys.append(prefix + f.name)
        elif f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(default := f.default_factory()):
            keys += server_only_keys(type(default), f"{prefix}{f.name}.")
    return keys


def _check_number(key: str, v: int | float, lo, hi) -> None:
    if not math.isfinite(v):
        raise ConfigError(f"{key} = {v} must be a finite number")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(f"{key} = {v} is out of range; valid: [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]")


def validate_fields(obj: Any, prefix: str = "") -> None:
    """Check choices/ranges/schedules of a dataclass instance and its nested dataclasses."""
    for f in dataclasses.fields(obj):
        key, value = f"{prefix}{f.name}", getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            validate_fields(value, key + ".")
            continue
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            raise ConfigError(f"{key} = {value!r} is not valid; valid: {', '.join(f.metadata['choices'])}")
        if "range" in f.metadata:
            if value is None:
                if f.metadata["nullable"]:
                    continue
                raise ConfigError(f"{key} must be set")
            lo, hi = f.metadata["range"]
            if f.metadata["schedule"]:
                try:  # a share of the run ("20%") is checked for form against any length
                    sched = Schedule.parse(value, key, RUN_LENGTH_FOR_CHECKS if f.metadata["schedule"] == "run" else None)
                except ValueError as e:
                    raise ConfigError(str(e)) from None
                for v in (sched.start, sched.end):
                    _check_number(key, v, lo, hi)
            else:
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise ConfigError(f"{key} = {value!r} must be a number")
                _check_number(key, value, lo, hi)
