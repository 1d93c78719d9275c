"""What every benchmark shares: alternating timed repetitions, medians, and the ratio
line each script prints last."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def alternate(variants: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each variant over `repeats` rounds, run in alternating order (A B, then
    B A, ...) so drift in the machine's speed hits both alike, after `warmup` untimed runs."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else reversed(names):
            started = time.perf_counter()
            variants[name]()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio_line(what: str, ratio: float, target: str, met: bool) -> str:
    """The last line of every benchmark: the figure, its target, met or not."""
    return f"RATIO {what}: {ratio:.2f}x (target {target}: {'met' if met else 'MISSED'})"
