"""Turn trajectories into tensors for the trainer and the reference.

Samples of one prompt form a group; a group's tensors are response-aligned (column j
is response token j), and its prompt is a single [P] tensor run once.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from rlhf_platform.types import Trajectory, grouped


@dataclass
class GroupBatch:
    """Samples of one prompt, response-aligned: column j of every [n, R] tensor is
    response token j. The trainer runs the prompt once for the whole group."""

    prompt_ids: torch.Tensor  # [P]
    response_ids: torch.Tensor  # [n, R], right-padded
    response_mask: torch.Tensor  # [n, R]: the response tokens (what the model attends to)
    behaviour_logprobs: torch.Tensor  # [n, R]
    ref_logprobs: torch.Tensor | None  # [n, R]
    advantages: torch.Tensor  # [n, R]: per-token advantages, or the sequence advantage on every token
    values: torch.Tensor | None = None  # [n, R] critic values the advantages were computed with (PPO)
    returns: torch.Tensor | None = None  # [n, R] value targets (PPO)
    old_logprobs: torch.Tensor | None = None  # [n, R] the trainer's at the step's start (pi_old)
    loss_mask: torch.Tensor | None = None  # [n, R] the tokens the loss counts (None: response_mask)

    @property
    def trained_mask(self) -> torch.Tensor:
        """The tokens the loss counts: the response minus any masked stale prefix."""
        return self.response_mask if self.loss_mask is None else self.loss_mask

    def to(self, device: torch.device) -> "GroupBatch":
        """The same batch with every tensor on `device`: a role's one boundary between
        the collate code (CPU) and its model."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                moved[f.name] = value.to(device, non_blocking=True)
        return replace(self, **moved)


def prompt_groups(trajectories: list[Trajectory], max_size: int) -> list[list[Trajectory]]:
    """Trajectories grouped by identical prompt tokens (first-seen order), each group
    split into chunks of at most `max_size`."""
    groups = grouped(trajectories, lambda t: tuple(t.prompt_token_ids))
    return [group[i : i + max_size] for group in groups for i in range(0, len(group), max_size)]


def response_width(trajectories: list[Trajectory]) -> int:
    """Columns of a response-aligned tensor: the longest response (at least 1, so
    zero-length replies keep one masked column)."""
    return max(1, max((t.response_length for t in trajectories), default=0))


def response_mask(trajectories: list[Trajectory], length: int | None = None) -> torch.Tensor:
    """[n, length] float mask: 1 on each sample's response tokens."""
    length = length or response_width(trajectories)
    return (torch.arange(length).unsqueeze(0) < torch.tensor([[t.response_length] for t in trajectories])).float()


def loss_mask(trajectories: list[Trajectory], length: int | None = None) -> torch.Tensor | None:
    """[n, length] mask of the tokens the loss counts, or None when no sample has a
    masked stale prefix (then it is the response mask)."""
    if not any(t.masked_prefix for t in trajectories):
        return None
    length = length or response_width(trajectories)
    columns = torch.arange(length).unsqueeze(0)
    starts = torch.tensor([[t.masked_prefix] for t in trajectories])
    return response_mask(trajectories, length) * (columns >= starts).float()


def per_token(trajectories: list[Trajectory], field: str, length: int | None = None) -> torch.Tensor | None:
    """[n, length] right-padded tensor of a per-token list field (e.g. "values"), or
    None if any sample lacks it."""
    length = length or response_width(trajectories)
    rows = [getattr(t, field) for t in trajectories]
    if any(row is None for row in rows):
        return None
    out = torch.zeros((len(rows), length), dtype=torch.float32)
    for i, (traj, row) in enumerate(zip(trajectories, rows)):
        if len(row) != traj.response_length:
            raise ValueError(
                f"trajectory {traj.prompt_id}/{traj.group_id}: {len(row)} {field} for {traj.response_length} response tokens"
            )
        if row:
            out[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
    return out


def collate_group(trajectories: list[Trajectory], pad_token_id: int) -> GroupBatch:
    """Response-aligned tensors for samples that share one prompt."""
    if not trajectories:
        raise ValueError("cannot collate an empty group")
    prompt = list(trajectories[0].prompt_token_ids)
    if not prompt:
        raise ValueError(f"trajectory {trajectories[0].prompt_id}: empty prompt")
    length = response_width(trajectories)
    response_ids = torch.full((len(trajectories), length), pad_token_id, dtype=torch.long)
    for i, traj in enumerate(trajectories):
        if list(traj.prompt_token_ids) != prompt:
            raise ValueError(f"trajectory {traj.prompt_id}: prompt differs from the group's ({trajectories[0].prompt_id})")
        if traj.response_length:
            response_ids[i, : traj.response_length] = torch.tensor(list(traj.response_token_ids))
    mask = response_mask(trajectories, length)
    behaviour = per_token(trajectories, "behaviour_logprobs", length)
    advantages = per_token(trajectories, "token_advantages", length)
    if advantages is None:
        advantages = torch.tensor([float(t.advantage or 0.0) for t in trajectories]).unsqueeze(1) * mask
    return GroupBatch(
        prompt_ids=torch.tensor(prompt, dtype=torch.long),
        response_ids=response_ids,
        response_mask=mask,
        behaviour_logprobs=behaviour,
        ref_logprobs=per_token(trajectories, "ref_logprobs", length),
        advantages=advantages,
        values=per_token(trajectories, "values", length),
        returns=per_token(trajectories, "returns", length),
        old_logprobs=per_token(trajectories, "old_logprobs", length),
        loss_mask=loss_mask(trajectories, length),
    )


def sequence_batch(trajectories: list[Trajectory], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask) of prompt + reply token ids."""
    sequences = [list(t.prompt_token_ids) + list(t.response_token_ids) for t in trajectories]
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    return ids, mask
