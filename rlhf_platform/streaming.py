"""Streaming rollout's data: the groups engines are asked for, the samples in flight,
and the bounded buffer between the engines and the trainer.

A group is one prompt's `samples_per_prompt` replies, leased on its own (its lease id
names it and seeds it). Engines return groups as they finish, in any order; scored
groups wait in the buffer until a step takes them.
"""
from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field

from rlhf_platform.types import Prompt, Trajectory


class ReplayError(RuntimeError):
    """A recorded run cannot be replayed, or its replay diverged from it."""


@dataclass
class GroupRequest:
    """Ask an engine for one group: `prompt`'s replies, sampled at weights >= `min_version`."""

    lease_id: int
    prompt: Prompt
    seed: int | None
    min_version: int = 0


def sample_seed(group_seed: int | None, sample: int, start: int) -> int | None:
    """The seed of reply `sample`'s submission that starts at its token `start` (a
    partial rollout submits a reply again, with its tokens so far, after each weight
    update): a function of the group's seed and where the submission starts alone, so a
    reply does not depend on what else its engine runs, or when, and a replay that cuts
    it at the same tokens samples it again. (Up to the engine's numerics: vLLM on CPU
    gave the same tokens in other batches here; on GPUs its kernels are not batch
    invariant, so a near tie may break the other way in a replay, which then reports
    the divergence.)"""
    if group_seed is None:
        return None
    digest = hashlib.sha256(f"{group_seed}:{sample}:{start}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2**31 - 1)


@dataclass
class PinnedSegment:
    """Replay: sample `max_tokens` tokens (fewer if the reply ends) after `context`, with
    `seed`, at the weights version the engine is pinned to."""

    request_id: str
    context: list[int]
    seed: int | None
    max_tokens: int


@dataclass
class SampleInProgress:
    """One reply being generated: its tokens so far, by the version that sampled them."""

    group: GroupRequest
    index: int  # which of the group's replies
    max_new_tokens: int
    token_ids: list[int] = field(default_factory=list)  # earlier submissions' tokens
    logprobs: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    segments: list[tuple[int, int]] = field(default_factory=list)  # (first token, version) of each submission that sampled tokens
    segment: int = 0  # submissions so far - 1 (request ids stay unique)
    live: tuple[list[int], list[float]] = ((), ())  # the running submission's tokens, log-probs
    live_version: int = 0
    finish_reason: str | None = None

    @property
    def request_id(self) -> str:
        return f"{self.group.lease_id}:{self.index}:{self.segment}"

    def context(self) -> list[int]:
        """What the next submission conditions on: the prompt and the reply so far."""
        return list(self.group.prompt.token_ids) + self.token_ids

    def tokens_left(self) -> int:
        return self.max_new_tokens - len(self.token_ids)

    def commit(self) -> None:
        """Fold the running submission's tokens into the reply (it finished, or paused)."""
        tokens, logprobs = self.live
        if tokens:
            self.segments.append((len(self.token_ids), self.live_version))
        self.token_ids += list(tokens)
        self.logprobs += list(logprobs)
        self.versions += [self.live_version] * len(tokens)
        self.live = ((), ())


@dataclass
class GroupBuffer:
    """Scored groups waiting for a step, in the order they finished. Bounded by the
    admission rule (`can_admit`): nothing is put in beyond what it allows."""

    groups: deque[list[Trajectory]] = field(default_factory=deque)

    def put(self, group: list[Trajectory]) -> None:
        self.groups.append(group)

    def __len__(self) -> int:
        return len(self.groups)

    def take(self, count: int) -> list[list[Trajectory]]:
        """The `count` groups that finished first (fewer if fewer are here)."""
        return [self.groups.popleft() for _ in range(min(count, len(self.groups)))]

    def take_all(self) -> list[list[Trajectory]]:
        return self.take(len(self.groups))


def can_admit(outstanding: int, capacity: int, trained: int, published: int, max_lag: int, per_step: int) -> int | None:
    """Streaming's backpressure: whether one more group may be leased now, given
    `outstanding` groups leased and not yet trained (in engines, being scored, in the
    buffer). Groups are trained `per_step` at a time in about the order they were
    leased, so the next one should be trained at version trained + outstanding //
    per_step, and may be sampled from `max_lag` versions before that. It is admitted
    (returns that oldest version) when a version that fresh is published and fewer than
    `capacity` groups are outstanding; None otherwise."""
    if outstanding >= capacity:
        return None
    min_version = max(0, trained + outstanding // per_step - max_lag)
    return min_version if min_version <= published else None

