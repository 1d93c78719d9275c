"""The freshness filter: trajectories older than the staleness bound are dropped and counted."""
from __future__ import annotations

from rlhf_platform.types import Trajectory


def split_by_freshness(
    trajectories: list[Trajectory], current_version: int, max_lag: int
) -> tuple[list[Trajectory], list[Trajectory]]:
    """Split into (fresh, stale): stale ones were generated more than `max_lag` versions
    before `current_version`, the version the trainer is about to update."""
    fresh, stale = [], []
    for traj in trajectories:
        (stale if current_version - traj.weight_version > max_lag else fresh).append(traj)
    return fresh, stale
