"""Advantage estimators. Pure torch; no Ray, no models."""
from __future__ import annotations

import torch


def group_normalized_advantages(
    rewards: torch.Tensor, group_ids: list[str], eps: float = 1e-6, scale_by_std: bool = True
) -> torch.Tensor:
    """GRPO advantages: each reward minus its group's mean, divided by the group's std.

    Groups are the samples of one prompt. A group of size 1 or whose rewards are all
    equal gets zero advantage (it carries no signal). The std is the unbiased sample
    std, as in TRL's GRPOTrainer.

    >>> group_normalized_advantages(torch.tensor([1., 0., 1., 1.]), ["a", "a", "b", "b"]).tolist()
    [0.7071..., -0.7071..., 0.0, 0.0]
    """
    if rewards.dim() != 1 or rewards.numel() != len(group_ids):
        raise ValueError(f"rewards has shape {tuple(rewards.shape)} but there are {len(group_ids)} group ids")
    advantages = torch.zeros_like(rewards, dtype=torch.float32)
    index_of: dict[str, list[int]] = {}
    for i, gid in enumerate(group_ids):
        index_of.setdefault(gid, []).append(i)
    for members in index_of.values():
        idx = torch.tensor(members)
        group = rewards[idx].float()
        if group.numel() < 2:
            continue
        centred = group - group.mean()
        if not bool(centred.abs().gt(0).any()):  # all equal: no signal, and no 0/0
            continue
        if scale_by_std:
            centred = centred / (group.std() + eps)
        advantages[idx] = centred
    return advantages
