"""DAPO's reward shaping and sample filtering: soft overlong punishment, dynamic sampling."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf_platform.algos.advantages import group_indices


def overlong_penalty(response_lengths: torch.Tensor | list[int], max_len: int, buffer: int) -> torch.Tensor:
    """DAPO soft overlong punishment, added to the task reward.

    0 while len <= max_len - buffer; then linear, (max_len - buffer - len) / buffer,
    reaching -1 at len == max_len; -1 beyond. It tells the policy that running long is
    bad before truncation happens, instead of only punishing the truncated answer.
    buffer == 0 is the hard form: -1 only for len > max_len.
    """
    if not 0 <= buffer <= max_len:
        raise ValueError(f"overlong buffer must be in [0, max_len={max_len}], got {buffer}")
    lengths = torch.as_tensor(response_lengths, dtype=torch.float32)
    if buffer == 0:
        return torch.where(lengths > max_len, -1.0, 0.0)
    return ((max_len - buffer - lengths) / buffer).clamp(min=-1.0, max=0.0)


@dataclass
class GroupFilterResult:
    kept: torch.Tensor  # long indices of the kept samples, in their original order
    dropped_groups: int
    kept_groups: int


def filter_uniform_groups(rewards: torch.Tensor, group_ids: list[str], tol: float = 1e-6) -> GroupFilterResult:
    """DAPO dynamic sampling: drop every group whose rewards are all equal (max - min <= tol).

    Such a group (all right, all wrong, or a group of size 1) has zero group-relative
    advantage, so it only dilutes the batch. The caller samples more prompts to refill.
    """
    keep = torch.zeros(rewards.numel(), dtype=torch.bool)
    dropped = 0
    members = group_indices(rewards, group_ids)
    for idx in members:
        group = rewards[idx].float()
        if float(group.max() - group.min()) <= tol:
            dropped += 1
        else:
            keep[idx] = True
    return GroupFilterResult(torch.nonzero(keep).squeeze(-1), dropped, len(members) - dropped)
