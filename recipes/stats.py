"""What a recipe's training loop counts, for the run's summary and metrics."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from rlhf_platform.roles.metrics import RoleMetrics, export_step


@dataclass
class TrainStats:
    steps: int = 0
    samples: int = 0  # trajectories (or preference pairs) trained on
    dropped_stale: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    versions_trained: list[list[int]] = field(default_factory=list)  # per step: each sample's weight version
    empty_batches: int = 0  # batches dynamic sampling emptied (every group uniform)
    extra: dict[str, Any] = field(default_factory=dict)  # recipe-specific counts for the summary
    rollbacks: list[dict[str, Any]] = field(default_factory=list)  # step and reason of each rollback
    stopped: str | None = None  # why the guard stopped the run early
    faults: list[dict[str, Any]] = field(default_factory=list)  # step and kind of each role failure survived
    schedule: list[dict[str, Any]] = field(default_factory=list)  # per trained sample: where and when it came from
    # where each step's schedule rows go as soon as the step is trained (the run's
    # schedule.jsonl, so a run that dies has recorded every step it trained)
    schedule_sink: Callable[[list[dict[str, Any]]], None] | None = None

    def add_schedule(self, rows: list[dict[str, Any]]) -> None:
        self.schedule.extend(rows)
        if self.schedule_sink is not None:
            self.schedule_sink(rows)

    def record_step(
        self,
        step: int,
        samples: int,
        metrics: dict[str, float],
        weight_version: int,
        on_step: Callable[[int, dict[str, float]], None] | None = None,
    ) -> None:
        """Count a finished step of `samples` samples (or pairs), stamp its metrics with
        the weight version the trainer now holds, keep them, and report them to `on_step`."""
        self.steps = step
        self.samples += samples
        metrics["weight_version"] = float(weight_version)
        self.history.append(metrics)
        export_step(RoleMetrics("driver"), step, metrics)
        if on_step is not None:
            on_step(step, metrics)


def merge_rank_metrics(results: list[dict[str, float]]) -> dict[str, float]:
    """One step's metrics from the ranks of every group that trained (policy, critic):
    each `<group>/loss` is summed over the ranks reporting it (each reports its share of
    the global mean), each `*_max` is their max, everything else is averaged over them."""
    merged: dict[str, float] = {}
    for key in dict.fromkeys(k for r in results for k in r):
        values = [r[key] for r in results if key in r]
        if key.endswith("/loss"):
            merged[key] = sum(values)
        else:
            merged[key] = max(values) if key.endswith("_max") else sum(values) / len(values)
    return merged
