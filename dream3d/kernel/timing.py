"""Wall time per named phase of a run (setup, training, export steps, ...), for metrics.json and
benchmarks: where the seconds go."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseTimer:
    """Sums the wall seconds spent inside `with timer("name"):` blocks, per name (repeats add up).
    `seconds()` gives them rounded, in the order the phases first ran."""

    def __init__(self, seconds: dict[str, float] | None = None):
        self._seconds: dict[str, float] = dict(seconds or {})

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[name] = self._seconds.get(name, 0.0) + time.perf_counter() - start

    def add(self, name: str, seconds: float) -> None:
        self._seconds[name] = self._seconds.get(name, 0.0) + seconds

    def seconds(self, digits: int = 2) -> dict[str, float]:
        return {k: round(v, digits) for k, v in self._seconds.items()}
