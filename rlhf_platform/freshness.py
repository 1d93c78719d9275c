"""The freshness rule: how old a sample may be when it is trained on.

A sample's age is that of its oldest token: a partial rollout continues a sequence
across weight updates, so its tokens may come from several versions (non-decreasing
along the response). A sample is fresh when its oldest token lags the trainer by at
most `max_lag` versions. A stale one is dropped (counted; its prompt is sampled again),
or with `stale_tokens="mask"` keeps its fresh tokens and leaves the older prefix out of
the loss (still in the context the model conditions on); only a sample with no fresh
token is then dropped.
"""
from __future__ import annotations

from rlhf_platform.types import Trajectory

STALE_TOKEN_POLICIES = ("drop", "mask")


def stale_prefix(traj: Trajectory, current_version: int, max_lag: int) -> int:
    """How many leading response tokens of `traj` are older than the bound."""
    oldest_allowed = current_version - max_lag
    return sum(1 for version in traj.versions_of_tokens() if version < oldest_allowed)


def split_by_freshness(
    trajectories: list[Trajectory], current_version: int, max_lag: int, stale_tokens: str = "drop"
) -> tuple[list[Trajectory], list[Trajectory]]:
    """Split into (fresh, stale) for training at `current_version` (the version the
    trainer is about to update). With `stale_tokens="mask"` a sample whose old tokens are
    only a prefix is kept with `masked_prefix` set to their count."""
    if stale_tokens not in STALE_TOKEN_POLICIES:
        raise ValueError(f"stale_tokens={stale_tokens!r}; choose one of {STALE_TOKEN_POLICIES}")
    fresh, stale = [], []
    for traj in trajectories:
        if current_version - traj.weight_version <= max_lag:
            traj.masked_prefix = 0
            fresh.append(traj)
            continue
        old = stale_prefix(traj, current_version, max_lag)
        if stale_tokens == "mask" and old < traj.response_length:
            traj.masked_prefix = old
            fresh.append(traj)
        else:
            stale.append(traj)
    return fresh, stale
