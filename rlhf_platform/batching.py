"""Turn trajectories into padded tensors aligned for next-token logprobs.

Position t of every [B, L-1] tensor is about predicting input token t+1, so the
response tokens of a sequence with prompt length P and response length R sit at
positions P-1 .. P+R-2.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf_platform.types import Trajectory


@dataclass
class PaddedBatch:
    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    response_mask: torch.Tensor  # [B, L-1], 1 where the target is a response token
    behaviour_logprobs: torch.Tensor  # [B, L-1]
    ref_logprobs: torch.Tensor | None  # [B, L-1]
    advantages: torch.Tensor  # [B, L-1], the sequence advantage on its response tokens

    @property
    def num_response_tokens(self) -> int:
        return int(self.response_mask.sum().item())

    @property
    def first_response_position(self) -> int:
        """The earliest position holding a response target (0 if there is none)."""
        columns = self.response_mask.any(dim=0).nonzero()
        return int(columns[0]) if len(columns) else 0


def collate(trajectories: list[Trajectory], pad_token_id: int) -> PaddedBatch:
    """Right-pad prompt+response ids and place per-token fields on response positions."""
    if not trajectories:
        raise ValueError("cannot collate an empty list of trajectories")
    length = max(len(t.prompt_token_ids) + len(t.response_token_ids) for t in trajectories)
    size = len(trajectories)
    input_ids = torch.full((size, length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((size, length), dtype=torch.long)
    response_mask = torch.zeros((size, length - 1), dtype=torch.float32)
    behaviour = torch.zeros((size, length - 1), dtype=torch.float32)
    advantages = torch.zeros((size, length - 1), dtype=torch.float32)
    has_ref = all(t.ref_logprobs is not None for t in trajectories)
    ref = torch.zeros((size, length - 1), dtype=torch.float32) if has_ref else None
    for i, traj in enumerate(trajectories):
        p, r = len(traj.prompt_token_ids), len(traj.response_token_ids)
        if len(traj.behaviour_logprobs) != r:
            raise ValueError(
                f"trajectory {traj.prompt_id}/{traj.group_id}: {len(traj.behaviour_logprobs)} behaviour logprobs for {r} response tokens"
            )
        input_ids[i, : p + r] = torch.tensor(list(traj.prompt_token_ids) + list(traj.response_token_ids))
        attention_mask[i, : p + r] = 1
        if r == 0:
            continue
        span = slice(p - 1, p + r - 1)
        response_mask[i, span] = 1.0
        behaviour[i, span] = torch.tensor(traj.behaviour_logprobs, dtype=torch.float32)
        advantages[i, span] = float(traj.advantage or 0.0)
        if ref is not None:
            ref[i, span] = torch.tensor(traj.ref_logprobs, dtype=torch.float32)
    return PaddedBatch(input_ids, attention_mask, response_mask, behaviour, ref, advantages)


def micro_batches(trajectories: list[Trajectory], size: int) -> list[list[Trajectory]]:
    """Consecutive chunks of at most `size` trajectories."""
    return [trajectories[i : i + size] for i in range(0, len(trajectories), size)]
