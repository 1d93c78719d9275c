"""Pairwise preference losses: DPO (and IPO) for the policy, Bradley-Terry for reward models."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def sequence_logprob_sums(token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log pi(y | x) of each sequence [batch]: its token logprobs summed over the mask."""
    return (token_logprobs * mask.to(token_logprobs.dtype)).sum(-1)


@dataclass
class DPOLossOutput:
    loss: torch.Tensor  # scalar, mean over pairs
    chosen_rewards: torch.Tensor  # [batch], beta * (logp_chosen - ref_logp_chosen), detached
    rejected_rewards: torch.Tensor  # [batch], likewise for the rejected answer
    reward_accuracy: torch.Tensor  # share of pairs with chosen reward > rejected reward
    margin: torch.Tensor  # mean of chosen_rewards - rejected_rewards


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> DPOLossOutput:
    """DPO loss from sequence logprobs [batch] of the chosen and rejected answers.

    h = (logp_c - ref_c) - (logp_r - ref_r).
    sigmoid (DPO): -(1 - ls) * log sigmoid(beta h) - ls * log sigmoid(-beta h); ls > 0 is
    conservative DPO, for labels flipped with probability ls.
    ipo: (h - 1 / (2 beta))^2, which keeps h at a finite margin instead of pushing it to
    infinity; label smoothing does not apply.
    """
    if loss_type not in ("sigmoid", "ipo"):
        raise ValueError(f"unknown DPO loss type {loss_type!r}; choose sigmoid or ipo")
    if loss_type == "ipo" and label_smoothing != 0.0:
        raise ValueError("label_smoothing applies to the sigmoid loss only")
    chosen_log_ratio = policy_chosen_logps - ref_chosen_logps
    rejected_log_ratio = policy_rejected_logps - ref_rejected_logps
    h = chosen_log_ratio - rejected_log_ratio
    if loss_type == "sigmoid":
        losses = -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    else:
        losses = (h - 1.0 / (2.0 * beta)).square()
    chosen_rewards = beta * chosen_log_ratio.detach()
    rejected_rewards = beta * rejected_log_ratio.detach()
    return DPOLossOutput(
        losses.mean(),
        chosen_rewards,
        rejected_rewards,
        (chosen_rewards > rejected_rewards).float().mean(),
        (chosen_rewards - rejected_rewards).mean(),
    )


@dataclass
class BradleyTerryOutput:
    loss: torch.Tensor  # scalar, mean of -log sigmoid(s_chosen - s_rejected)
    accuracy: torch.Tensor  # share of pairs with s_chosen > s_rejected


def bradley_terry_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> BradleyTerryOutput:
    """Reward-model loss: the negative log-likelihood that the chosen answer is preferred,
    P(chosen > rejected) = sigmoid(s_chosen - s_rejected)."""
    diff = chosen_scores - rejected_scores
    return BradleyTerryOutput(-F.logsigmoid(diff).mean(), (diff.detach() > 0).float().mean())
