"""Scheduled scalars, one syntax everywhere: a number, or [start_step, start, end, end_step]
(constant `start` before start_step, linear to `end` at end_step, constant after).

Where a schedule belongs to a run of known length (the guidance's), a step may also be written as
a share of the run, "20%": it resolves to round(0.20 * total_steps), so a drop "after the first
20% of the run" stays there whatever `train.steps` is."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

PERCENT = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*%\s*$")


def _is_step(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) or (isinstance(v, str) and bool(PERCENT.match(v)))


def _step(v: Any, name: str, total_steps: int | None) -> int:
    if not isinstance(v, str):
        return int(v)
    if total_steps is None:
        raise ValueError(f"{name}: a step written as a share of the run ({v!r}) needs the run's length: write an "
                         "absolute step here (shares work in guidance schedules, which know train.steps)")
    pct = float(PERCENT.match(v).group(1))
    if pct > 100:
        raise ValueError(f"{name}: {v!r} is past the end of the run (at most 100%)")
    return int(round(pct / 100.0 * total_steps))


@dataclass(frozen=True)
class Schedule:
    start_step: int
    start: float
    end: float
    end_step: int

    @staticmethod
    def parse(value: Any, name: str = "value", total_steps: int | None = None) -> "Schedule":
        """A number or [start_step, start, end, end_step]; steps may be "N%" of `total_steps`."""
        if isinstance(value, Schedule):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return Schedule(0, float(value), float(value), 0)
        try:
            items = list(value) if not isinstance(value, str) else None
        except TypeError:
            items = None
        numbers = items is not None and len(items) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in items[1:3])
        if not numbers or not _is_step(items[0]) or not _is_step(items[3]):
            raise ValueError(f"{name}: expected a number or [start_step, start, end, end_step] (a step may be a share "
                             f"of the run such as \"20%\"), got {value!r}")
        s0, v0, v1, s1 = items
        s0, s1 = _step(s0, name, total_steps), _step(s1, name, total_steps)
        if s1 < s0:
            raise ValueError(f"{name}: end_step ({s1}) must be >= start_step ({s0})")
        return Schedule(s0, float(v0), float(v1), s1)

    def __call__(self, step: int) -> float:
        if step <= self.start_step or self.end_step == self.start_step:
            return self.start if step <= self.start_step else self.end
        if step >= self.end_step:
            return self.end
        f = (step - self.start_step) / (self.end_step - self.start_step)
        return self.start + f * (self.end - self.start)
