"""A rank group: the data-parallel ranks of one DeepSpeed role (policy trainer, critic,
reward-model trainer), and the only place a recipe's calls are fanned out to them (the
executor's `start_ranks` alone joins them into their process group).

Every rank joins one torch.distributed group, so every collective call (a train step,
publish, save, load) goes to all ranks together; `restart` replaces the whole group
when one rank died, since the others are stuck in a collective with it.
"""
from __future__ import annotations

from typing import Any

from rlhf_platform.roles.executor import Executor, Future, Placement
from rlhf_platform.types import TrainBatch


class RankGroup:
    def __init__(
        self,
        executor: Executor,
        cls: type,
        name: str,
        world_size: int,
        *args: Any,
        placement: Placement | None = None,
        strategy: str = "PACK",
        group: Any = None,
        **kwargs: Any,
    ) -> None:
        self.executor = executor
        self.name = name
        self.restarts = 0
        self._start = lambda suffix: executor.start_ranks(
            cls, f"{name}{suffix}", world_size, *args, placement=placement, strategy=strategy, group=group, **kwargs
        )
        self.ranks = self._start("")

    @property
    def world_size(self) -> int:
        return len(self.ranks)

    @property
    def rank0(self) -> Any:
        """Rank 0's handle: for calls one rank answers alone (the critic's values)."""
        return self.ranks[0]

    def start(self, method: str, *args: Any, **kwargs: Any) -> list[Future]:
        """Start `method(*args)` on every rank; their futures."""
        return [getattr(rank, method)(*args, **kwargs) for rank in self.ranks]

    def run(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        """`method(*args)` on every rank, waited for (the first failure raises)."""
        return self.executor.get_all(self.start(method, *args, **kwargs))

    def start_sharded(self, method: str, batch: TrainBatch, *args: Any) -> list[Future]:
        """Start `method(shard, *args)` on every rank, each with its shard of `batch`."""
        return [getattr(rank, method)(batch.shard(r, self.world_size), *args) for r, rank in enumerate(self.ranks)]

    def train_step(self, batch: TrainBatch, *args: Any, method: str = "train_step") -> list[dict[str, float]]:
        """One optimizer step on `batch`, sharded over the ranks; each rank's metrics."""
        return self.executor.get_all(self.start_sharded(method, batch, *args))

    def publish(self, version: int) -> None:
        """Publish the group's weights to the weight-sync bus as `version`."""
        self.run("publish", version)

    def set_lr(self, lr: float) -> None:
        self.run("set_lr", lr)

    def save_state(self, directory: str) -> None:
        self.run("save_state", directory)

    def load_state(self, directory: str) -> None:
        self.run("load_state", directory)

    def kill(self) -> None:
        self.executor.release_ranks(self.ranks)

    def restart(self) -> None:
        """Replace every rank (one died; the others may be blocked in a collective with
        it) with fresh ones from the base weights; the caller then loads a checkpoint."""
        self.kill()
        self.restarts += 1
        self.ranks = self._start(f"-restart{self.restarts}")
