"""The one owner of a run's weight version numbers.

A weight version is an integer that goes up by one with every optimizer step. Three
counters describe where a run stands:

  trained    the version of the trainer's weights now
  published  the newest version the rollout engines may load (every `sync_every` steps)
  launched   the trainer version the next rollout will be trained at

Rollout may run `max_staleness` weight syncs ahead of training: a batch that will be
trained at version v may be sampled from any published version >= v - max_lag, where
max_lag = (max_staleness + 1) * sync_every - 1. A rollout is launched only once such a
version is published (backpressure), so every pair of `sync_every` and
`max_staleness` makes progress. Recovery (a rollback, a trainer restart, rollouts
drained) calls a method here instead of resetting counters by hand.
"""
from __future__ import annotations

from dataclasses import dataclass

from rlhf_platform.config import max_sample_lag


@dataclass
class WeightVersions:
    sync_every: int = 1
    max_staleness: int = 0
    trained: int = 0
    published: int = 0
    launched: int = 0

    @classmethod
    def starting_at(cls, version: int, sync_every: int = 1, max_staleness: int = 0) -> "WeightVersions":
        """Versions of a run whose weights (published to the engines) are `version`."""
        return cls(sync_every, max_staleness, version, version, version)

    @property
    def max_lag(self) -> int:
        return max_sample_lag(self.max_staleness, self.sync_every)

    def can_launch(self, steps_left: int) -> bool:
        """Whether another rollout may start now: it is needed within the `steps_left`
        remaining steps, and a version fresh enough for it is published."""
        return self.launched - self.trained < steps_left and self.launched - self.max_lag <= self.published

    def launch(self) -> int:
        """Count a rollout launched; returns the oldest weight version it may sample from."""
        min_version = max(0, self.launched - self.max_lag)
        self.launched += 1
        return min_version

    def relaunch(self) -> None:
        """The oldest launched rollout was dropped (stale, or empty after filtering): it
        will be launched again."""
        self.launched -= 1

    def rewind(self) -> None:
        """Every rollout in flight was drained: the next launch is for the current step."""
        self.launched = self.trained

    def step_trained(self, last_step: bool = False) -> bool:
        """Count an optimizer step; returns whether its weights are due for publishing
        (every `sync_every` steps, and after the last)."""
        self.trained += 1
        return last_step or self.trained - self.published >= self.sync_every

    def mark_published(self) -> int:
        """The trainer's current weights were published; returns their version."""
        self.published = self.trained
        return self.published

    def renumber(self, version: int) -> None:
        """The trainer's weights were replaced (rollback, restart from a checkpoint) and
        published as `version`; nothing is in flight."""
        self.trained = self.published = self.launched = version

    def next_version(self) -> int:
        """The number new weights replacing the current ones get, so engines that
        already serve `trained` take them as an update."""
        return self.trained + 1

    def lag_of(self, weight_version: int) -> int:
        """How many steps a sample from `weight_version` lags the trainer."""
        return self.trained - weight_version
