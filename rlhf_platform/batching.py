"""Turn trajectories into tensors for the trainer and the reference.

Samples of one prompt form a group; a group's tensors are response-aligned (column j
is response token j), and its prompt is a single [P] tensor run once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable

import torch

from rlhf_platform.types import Trajectory


@dataclass
class GroupBatch:
    """Samples of one prompt, response-aligned: column j of every [n, R] tensor is
    response token j. The trainer runs the prompt once for the whole group."""

    prompt_ids: torch.Tensor  # [P]
    response_ids: torch.Tensor  # [n, R], right-padded
    response_mask: torch.Tensor  # [n, R]
    behaviour_logprobs: torch.Tensor  # [n, R]
    ref_logprobs: torch.Tensor | None  # [n, R]
    advantages: torch.Tensor  # [n, R], the sequence advantage on every response token


def _grouped(trajectories: list[Trajectory], key: Callable[[Trajectory], Hashable]) -> list[list[Trajectory]]:
    """Trajectories grouped by `key`, groups and members in first-seen order."""
    groups: dict[Hashable, list[Trajectory]] = {}
    for traj in trajectories:
        groups.setdefault(key(traj), []).append(traj)
    return list(groups.values())


def prompt_groups(trajectories: list[Trajectory], max_size: int) -> list[list[Trajectory]]:
    """Trajectories grouped by identical prompt tokens (first-seen order), each group
    split into chunks of at most `max_size`."""
    groups = _grouped(trajectories, lambda t: tuple(t.prompt_token_ids))
    return [group[i : i + max_size] for group in groups for i in range(0, len(group), max_size)]


def by_group_id(trajectories: list[Trajectory]) -> list[list[Trajectory]]:
    """Trajectories grouped by `group_id`, in first-seen order (a preference pair is a group)."""
    return _grouped(trajectories, lambda t: t.group_id)


def collate_group(trajectories: list[Trajectory], pad_token_id: int) -> GroupBatch:
    """Response-aligned tensors for samples that share one prompt."""
    if not trajectories:
        raise ValueError("cannot collate an empty group")
    prompt = list(trajectories[0].prompt_token_ids)
    if not prompt:
        raise ValueError(f"trajectory {trajectories[0].prompt_id}: empty prompt")
    size = len(trajectories)
    length = max(1, max(t.response_length for t in trajectories))  # zero-length replies keep one masked column
    response_ids = torch.full((size, length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((size, length), dtype=torch.float32)
    behaviour = torch.zeros((size, length), dtype=torch.float32)
    advantages = torch.zeros((size, length), dtype=torch.float32)
    has_ref = all(t.ref_logprobs is not None for t in trajectories)
    ref = torch.zeros((size, length), dtype=torch.float32) if has_ref else None
    for i, traj in enumerate(trajectories):
        if list(traj.prompt_token_ids) != prompt:
            raise ValueError(f"trajectory {traj.prompt_id}: prompt differs from the group's ({trajectories[0].prompt_id})")
        r = traj.response_length
        if len(traj.behaviour_logprobs) != r:
            raise ValueError(
                f"trajectory {traj.prompt_id}/{traj.group_id}: {len(traj.behaviour_logprobs)} behaviour logprobs for {r} response tokens"
            )
        if r == 0:
            continue
        response_ids[i, :r] = torch.tensor(list(traj.response_token_ids))
        mask[i, :r] = 1.0
        behaviour[i, :r] = torch.tensor(traj.behaviour_logprobs, dtype=torch.float32)
        advantages[i, :r] = float(traj.advantage or 0.0)
        if ref is not None:
            ref[i, :r] = torch.tensor(traj.ref_logprobs, dtype=torch.float32)
    return GroupBatch(torch.tensor(prompt, dtype=torch.long), response_ids, mask, behaviour, ref, advantages)
