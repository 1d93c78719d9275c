"""The data every role speaks: prompts, trajectories and train batches.

Token ids in, token ids out: nothing between rollout and training re-tokenises text.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable


@dataclass(frozen=True)
class Prompt:
    """One task prompt, already rendered and tokenised for the policy."""

    prompt_id: str
    text: str
    token_ids: tuple[int, ...]
    answer: str
    difficulty: int = 0
    dataset: str = ""  # the task.mixture dataset it comes from ("" without a mixture)


@dataclass
class Trajectory:
    """One sampled response to one prompt, with everything training needs."""

    prompt_id: str
    group_id: str
    prompt_token_ids: list[int]
    response_token_ids: list[int]
    behaviour_logprobs: list[float]
    weight_version: int  # the version that sampled its oldest token (the one staleness is measured by)
    finish_reason: str
    prompt_text: str = ""
    response_text: str = ""
    answer: str = ""
    difficulty: int = 0
    dataset: str = ""  # the task.mixture dataset of its prompt (its reward functions score it)
    reward: float | None = None
    reward_info: dict[str, Any] = field(default_factory=dict)
    ref_logprobs: list[float] | None = None
    old_logprobs: list[float] | None = None  # the trainer's, at the weights of the step's start (set by the trainer)
    advantage: float | None = None  # one advantage for every token (GRPO family)
    values: list[float] | None = None  # critic values per response token (PPO), set before advantages
    token_advantages: list[float] | None = None  # per-token advantages (GAE); take precedence over `advantage`
    returns: list[float] | None = None  # per-token value targets (GAE)
    generated_at: tuple[float, float] | None = None  # wall-clock start and end of the engine batch that sampled it
    engine: str = ""  # the rollout engine that sampled it
    sampling_seed: int | None = None  # the seed its engine batch sampled with
    lease_id: int | None = None  # the prompt-queue lease it answers (set by the driver)
    # Partial rollout: the weight version that sampled each response token (non-decreasing;
    # None when one version sampled them all: `weight_version`).
    token_versions: list[int] | None = None
    masked_prefix: int = 0  # leading response tokens left out of the loss (older than the staleness bound)
    sample_index: int = 0  # which of its group's replies (streaming seeds each reply by it)
    # streaming: (first token, version) of each engine submission that sampled tokens of
    # this reply (a partial rollout's interruption points, what a replay cuts it at)
    segments: list[tuple[int, int]] | None = None

    @classmethod
    def answering(cls, prompt: Prompt, **fields: Any) -> "Trajectory":
        """A reply to `prompt`: its id, tokens, text, answer and level from the prompt,
        the rest from `fields`."""
        return cls(
            prompt_id=prompt.prompt_id, prompt_token_ids=list(prompt.token_ids), prompt_text=prompt.text,
            answer=prompt.answer, difficulty=prompt.difficulty, dataset=prompt.dataset, **fields,
        )

    @property
    def response_length(self) -> int:
        return len(self.response_token_ids)

    @property
    def trained_length(self) -> int:
        """Response tokens the loss counts: all but the masked stale prefix."""
        return self.response_length - self.masked_prefix

    def versions_of_tokens(self) -> list[int]:
        """The version of every response token."""
        return list(self.token_versions) if self.token_versions is not None else [self.weight_version] * self.response_length

    def version_spans(self) -> list[tuple[int, int, int]]:
        """(version, first token, end token) of each run of tokens one version sampled:
        where a partial rollout's weight updates cut the response."""
        spans: list[tuple[int, int, int]] = []
        for index, version in enumerate(self.versions_of_tokens()):
            if spans and spans[-1][0] == version:
                spans[-1] = (version, spans[-1][1], index + 1)
            else:
                spans.append((version, index, index + 1))
        return spans


@dataclass
class TrainBatch:
    """Trajectories that passed the freshness filter, with their advantages set.

    `version` is the trainer weight version the batch is trained at; `dropped_stale`
    counts trajectories the freshness filter removed while building it.
    """

    trajectories: list[Trajectory]
    version: int
    dropped_stale: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.trajectories)

    def shard(self, rank: int, world_size: int) -> "TrainBatch":
        """The slice of this batch that data-parallel rank `rank` trains on: whole
        groups (dealt round-robin), so a rank runs each prompt once for its samples."""
        mine = [t for group in by_group_id(self.trajectories)[rank::world_size] for t in group]
        return TrainBatch(
            trajectories=mine,
            version=self.version,
            dropped_stale=self.dropped_stale,
            metrics=dict(self.metrics),
        )


    def split(self, parts: int) -> list["TrainBatch"]:
        """The batch cut into `parts` mini-batches of whole groups: contiguous runs of
        groups, the first ones one group larger when they do not divide evenly, and the
        last ones empty when there are fewer groups than parts. Prompts arrive in random
        order, so contiguous runs are a random partition."""
        groups = by_group_id(self.trajectories)
        size, extra = divmod(len(groups), parts)
        minis, start = [], 0
        for i in range(parts):
            end = start + size + (1 if i < extra else 0)
            minis.append(TrainBatch([t for group in groups[start:end] for t in group], self.version, metrics={}))
            start = end
        return minis


@dataclass
class UpdatePlan:
    """One step's update of a trained model (policy or critic): `epochs` passes over
    `mini_batches`, one optimizer step each. `denominators[i]` is the loss normaliser of
    mini-batch i counted over the whole mini-batch (every rank's shard), so its loss is
    the same mean whatever the split into ranks and micro-batches."""

    mini_batches: list[TrainBatch]
    denominators: list[float]
    epochs: int = 1

    def shard(self, rank: int, world_size: int) -> "UpdatePlan":
        """Rank `rank`'s part: its shard of every mini-batch, the global normalisers."""
        return UpdatePlan([mb.shard(rank, world_size) for mb in self.mini_batches], self.denominators, self.epochs)

    @property
    def trajectories(self) -> list[Trajectory]:
        return [t for mb in self.mini_batches for t in mb.trajectories]

    @property
    def version(self) -> int:
        """The weights version the update starts from."""
        return self.mini_batches[0].version


def grouped(trajectories: list[Trajectory], key: Callable[[Trajectory], Hashable]) -> list[list[Trajectory]]:
    """Trajectories grouped by `key`, groups and members in first-seen order."""
    groups: dict[Hashable, list[Trajectory]] = {}
    for traj in trajectories:
        groups.setdefault(key(traj), []).append(traj)
    return list(groups.values())


def by_group_id(trajectories: list[Trajectory]) -> list[list[Trajectory]]:
    """Trajectories grouped by `group_id`, in first-seen order (a preference pair is a group)."""
    return grouped(trajectories, lambda t: t.group_id)
