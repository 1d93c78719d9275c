"""What a recipe's training loop reports back to `rlhf-train`."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainStats:
    steps: int = 0
    samples: int = 0  # trajectories (or preference pairs) trained on
    dropped_stale: int = 0
    version: int = 0  # the newest weight version, published to the engines
    history: list[dict[str, float]] = field(default_factory=list)
    versions_trained: list[list[int]] = field(default_factory=list)  # per step: each sample's weight version
    empty_batches: int = 0  # batches dynamic sampling emptied (every group uniform)
    extra: dict[str, float] = field(default_factory=dict)  # recipe-specific counts for the summary


def merge_rank_metrics(results: list[dict[str, float]]) -> dict[str, float]:
    """One step's metrics from every data-parallel rank: `train/loss` is summed (each
    rank reports its share of the global mean), everything else is averaged."""
    merged = {key: sum(r.get(key, 0.0) for r in results) / len(results) for key in results[0]}
    merged["train/loss"] = sum(r["train/loss"] for r in results)
    return merged
