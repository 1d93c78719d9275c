"""What a recipe's training loop reports back to `rlhf-train`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainStats:
    steps: int = 0
    samples: int = 0  # trajectories (or preference pairs) trained on
    dropped_stale: int = 0
    version: int = 0  # the newest weight version, published to the engines
    history: list[dict[str, float]] = field(default_factory=list)
    versions_trained: list[list[int]] = field(default_factory=list)  # per step: each sample's weight version
    empty_batches: int = 0  # batches dynamic sampling emptied (every group uniform)
    extra: dict[str, Any] = field(default_factory=dict)  # recipe-specific counts for the summary


def merge_rank_metrics(results: list[dict[str, float]]) -> dict[str, float]:
    """One step's metrics from the ranks of every group that trained (policy, critic):
    each `<group>/loss` is summed over the ranks reporting it (each reports its share of
    the global mean), everything else is averaged over them."""
    merged: dict[str, float] = {}
    for key in dict.fromkeys(k for r in results for k in r):
        values = [r[key] for r in results if key in r]
        merged[key] = sum(values) if key.endswith("/loss") else sum(values) / len(values)
    return merged
