"""Scheduled scalars, one syntax everywhere: a number, or [start_step, start, end, end_step]
(constant `start` before start_step, linear to `end` at end_step, constant after)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Schedule:
    start_step: int
    start: float
    end: float
    end_step: int

    @staticmethod
    def parse(value: Any, name: str = "value") -> "Schedule":
        if isinstance(value, Schedule):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return Schedule(0, float(value), float(value), 0)
        try:
            items = list(value)
        except TypeError:
            items = None
        if items is None or len(items) != 4 or not all(isinstance(v, (int, float)) for v in items):
            raise ValueError(f"{name}: expected a number or [start_step, start, end, end_step], got {value!r}")
        s0, v0, v1, s1 = items
        if s1 < s0:
            raise ValueError(f"{name}: end_step ({s1}) must be >= start_step ({s0})")
        return Schedule(int(s0), float(v0), float(v1), int(s1))

    def __call__(self, step: int) -> float:
        if step <= self.start_step or self.end_step == self.start_step:
            return self.start if step <= self.start_step else self.end
        if step >= self.end_step:
            return self.end
        f = (step - self.start_step) / (self.end_step - self.start_step)
        return self.start + f * (self.end - self.start)
