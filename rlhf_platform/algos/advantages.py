"""Advantage estimators, and the reward shaping that runs before them. Pure torch; no
Ray, no models.

Sequence-level estimators take rewards [batch] and group ids (one per sample, the
prompt it answers). Token-level estimators take [batch, tokens] tensors with a 0/1
mask that is 1 on response tokens; the mask may have leading zeros (the prompt) and
trailing zeros (padding).

`shape_rewards` clips and normalises task rewards before any estimator sees them
(algo.advantage.reward_clip / reward_norm); `RunningRewardStats` holds the moments of
reward_norm=running, which the Advantage Builder saves in checkpoints.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


def group_indices(rewards: torch.Tensor, group_ids: list[str]) -> list[torch.Tensor]:
    """Indices of each group's samples, in order of first appearance. Ids may be any hashable."""
    if rewards.dim() != 1 or rewards.numel() != len(group_ids):
        raise ValueError(f"rewards has shape {tuple(rewards.shape)} but there are {len(group_ids)} group ids")
    index_of: dict[str, list[int]] = {}
    for i, gid in enumerate(group_ids):
        index_of.setdefault(gid, []).append(i)
    return [torch.tensor(members) for members in index_of.values()]


def group_normalized_advantages(
    rewards: torch.Tensor, group_ids: list[str], eps: float = 1e-6, scale_by_std: bool = True
) -> torch.Tensor:
    """GRPO advantages: each reward minus its group's mean, divided by the group's std.

    Groups are the samples of one prompt. A group of size 1 or whose rewards are all
    equal gets zero advantage (it carries no signal). "All equal" is decided on the
    rewards themselves, not on their centred values: a float mean of equal values that
    are not binary fractions (0.7) is off by rounding, which once gave such a group a
    non-zero advantage. The std is the unbiased sample std, as in TRL's GRPOTrainer.

    >>> group_normalized_advantages(torch.tensor([1., 0., 1., 1.]), ["a", "a", "b", "b"]).tolist()
    [0.7071..., -0.7071..., 0.0, 0.0]
    """
    advantages = torch.zeros_like(rewards, dtype=torch.float32)
    for idx in group_indices(rewards, group_ids):
        group = rewards[idx].float()
        if group.numel() < 2 or bool(group.max() == group.min()):  # no signal, and no 0/0
            continue
        centred = group - group.mean()
        if scale_by_std:
            centred = centred / (group.std() + eps)
        advantages[idx] = centred
    return advantages


def dr_grpo_advantages(rewards: torch.Tensor, group_ids: list[str]) -> torch.Tensor:
    """Dr. GRPO advantages: reward minus its group's mean, without the std division
    (which up-weights prompts that are nearly always right or wrong). Size-1 and
    all-equal groups get 0."""
    return group_normalized_advantages(rewards, group_ids, scale_by_std=False)


def rloo_advantages(rewards: torch.Tensor, group_ids: list[str]) -> torch.Tensor:
    """RLOO advantages: reward minus the mean of the *other* samples of its group.

    The leave-one-out baseline does not depend on the sample itself, so the estimate
    stays unbiased; it equals n/(n-1) times the Dr. GRPO advantage. A group of size 1
    has no other samples and gets 0.
    """
    advantages = torch.zeros_like(rewards, dtype=torch.float32)
    for idx in group_indices(rewards, group_ids):
        group = rewards[idx].float()
        n = group.numel()
        if n < 2:
            continue
        advantages[idx] = group - (group.sum() - group) / (n - 1)
    return advantages


def token_rewards(
    final_rewards: torch.Tensor, mask: torch.Tensor, kl: torch.Tensor | None = None, kl_coef: float = 0.0
) -> torch.Tensor:
    """Per-token rewards [batch, tokens] with the KL penalty folded in as reward.

    r_t = final_reward * [t is the last valid token] - kl_coef * kl_t * mask_t.
    The sequence's reward is sparse: it sits on its last response token. A
    zero-length response (mask all zero) gets no reward anywhere.
    """
    mask = mask.float()
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    last = torch.where(mask > 0, positions, -1).max(-1).values  # -1 when empty
    rewards = torch.zeros_like(mask)
    rows = torch.nonzero(last >= 0).squeeze(-1)
    rewards[rows, last[rows]] = final_rewards.float()[rows]
    if kl is not None and kl_coef != 0.0:
        rewards = rewards - kl_coef * kl.float() * mask
    return rewards


def discounted_returns(rewards_per_token: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Reward-to-go R_t = r_t + gamma * R_next over valid tokens; 0 on masked tokens.

    "next" is the next *valid* token: masked tokens inside a response (e.g. tool
    output in a multi-turn rollout) are skipped, not treated as the end.
    """
    mask = mask.float()
    returns = torch.zeros_like(mask)
    running = torch.zeros_like(mask[..., 0])
    for t in reversed(range(mask.shape[-1])):
        m = mask[..., t]
        running = m * (rewards_per_token[..., t].float() + gamma * running) + (1.0 - m) * running
        returns[..., t] = m * running
    return returns


def reinforce_pp_advantages(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    eps: float = 1e-8,
    whiten_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """REINFORCE++ advantages [batch, tokens]: per-token return, whitened over the batch.

    The return of token t is the sequence reward (placed on its last valid token)
    minus kl_coef times the per-token KL summed from t to the end (`token_rewards`
    then `discounted_returns`; gamma=1 by default, as in the paper). The returns of all
    valid tokens of the batch are then normalised by their mean and *population* std
    (divide by N, not N-1): (G - mean) / (std + eps). Masked tokens get 0; if all
    valid returns are equal (or the batch has no valid token) every advantage is 0.
    `whiten_mask` (default `mask`): the tokens whose returns the whitening is over (the
    trained ones, when a stale prefix is left out of the loss).
    """
    mask = mask.float()
    returns = discounted_returns(token_rewards(rewards, mask, kl, kl_coef), mask, gamma)
    return masked_whiten(returns, mask if whiten_mask is None else whiten_mask, eps)


def reinforce_pp_baseline_advantages(
    rewards: torch.Tensor,
    group_ids: list[str],
    mask: torch.Tensor,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    eps: float = 1e-8,
    whiten_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """REINFORCE++ with a group baseline [batch, tokens] (OpenRLHF's "reinforce_baseline").

    Each reward minus its prompt group's mean (`dr_grpo_advantages`: size-1 and
    all-equal groups give exactly 0), then exactly `reinforce_pp_advantages`: per-token
    discounted returns with the optional KL reward penalty, whitened over the batch's
    tokens. The baseline removes each prompt's difficulty from the return, so easy and
    hard prompts do not shift the batch mean the whitening subtracts.
    """
    return reinforce_pp_advantages(dr_grpo_advantages(rewards, group_ids), mask, kl, kl_coef, gamma, eps, whiten_mask)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / (std + eps) over the valid entries of `values`, with the population
    std (divide by N); 0 on masked entries, and 0 everywhere if the valid entries are
    all equal (decided on the values, not on their rounded centred values) or there are
    none. Computed in float64, returned in float32."""
    mask = mask.float()
    valid = mask > 0
    if not bool(valid.any()):
        return torch.zeros_like(mask)
    entries = values.double()[valid]
    if bool(entries.max() == entries.min()):
        return torch.zeros_like(mask)
    mean = entries.mean()
    std = (entries - mean).square().mean().sqrt()
    return ((values.double() - mean) * mask.double() / (std + eps)).float()


def gae_advantages(
    rewards_per_token: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation, per token. Returns (advantages, returns).

    delta_t = r_t + gamma * V_next - V_t;  A_t = delta_t + gamma * lam * A_next;
    returns_t = A_t + V_t (the value target). "next" is the next valid token, skipping
    masked tokens; after the last valid token V_next = A_next = 0 (the response ended,
    nothing to bootstrap). Rewards and values on masked tokens are ignored and both
    outputs are 0 there. No whitening: do that afterwards if wanted.
    """
    mask = mask.float()
    rewards_per_token = rewards_per_token.float() * mask
    values = values.float() * mask
    advantages = torch.zeros_like(mask)
    next_value = torch.zeros_like(mask[..., 0])
    next_adv = torch.zeros_like(mask[..., 0])
    for t in reversed(range(mask.shape[-1])):
        m = mask[..., t]
        delta = rewards_per_token[..., t] + gamma * next_value - values[..., t]
        adv = delta + gamma * lam * next_adv
        advantages[..., t] = m * adv
        next_adv = m * adv + (1.0 - m) * next_adv
        next_value = m * values[..., t] + (1.0 - m) * next_value
    return advantages, (advantages + values) * mask


@dataclass
class RunningRewardStats:
    """Count, mean and sum of squared deviations (M2) of every reward seen, in float64.

    Batches are merged with Chan et al.'s parallel form of Welford's update, so the
    moments equal those of all rewards concatenated, whatever the batch sizes. `std`
    is the population std (divide by the count). State for reward_norm=running; it
    goes into checkpoints through `state` / `from_state` (plain JSON numbers).
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def update(self, rewards: torch.Tensor) -> None:
        """Fold a batch of rewards (any shape; every finite entry counts) into the
        moments. A non-finite reward is left out: one inf would poison them for good."""
        batch = rewards.detach().double().flatten()
        batch = batch[torch.isfinite(batch)]
        n = batch.numel()
        if n == 0:
            return
        batch_mean = float(batch.mean())
        batch_m2 = float((batch - batch_mean).square().sum())
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        """Population std of every reward seen (0 before any)."""
        return math.sqrt(max(self.m2, 0.0) / self.count) if self.count else 0.0

    def state(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunningRewardStats:
        return cls(count=int(state["count"]), mean=float(state["mean"]), m2=float(state["m2"]))


def shape_rewards(
    rewards: torch.Tensor,
    clip: float | None = None,
    norm: str = "none",
    running: RunningRewardStats | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Task rewards [batch] clipped to [-clip, clip], then normalised; returns a new
    float32 tensor (the input is not changed).

    norm=none: as clipped. norm=batch: whitened over the batch, (r - mean) / (std + eps)
    with the population std; all-equal rewards (decided on max == min) give zeros
    (`masked_whiten`). norm=running: divided by (std + eps) of every clipped reward seen
    so far, this batch included: a scale with no mean shift, so each estimator keeps
    its own baseline (our choice: OpenRLHF's normalize_reward instead whitens a reward
    model's scores with fixed moments from its training, and clips after its baseline;
    we clip the task reward first). This is the one side effect: `running` is updated
    with the batch first. While that std is 0 (one reward, or all equal) the rewards
    pass unscaled rather than being blown up by 1 / eps. With group_norm any scale
    cancels (the config refuses that pair); with reinforce_pp(_baseline), whitened over
    the batch afterwards, a scale changes nothing unless gamma < 1 or a KL reward adds
    to it.
    """
    shaped = rewards.float().clone()
    if clip is not None:
        shaped = shaped.clamp(-clip, clip)
    if norm == "none":
        return shaped
    if norm == "batch":
        return masked_whiten(shaped, torch.ones_like(shaped), eps)
    if norm == "running":
        if running is None:
            raise ValueError("reward_norm=running needs the RunningRewardStats to update")
        running.update(shaped)
        std = running.std
        return shaped / (std + eps) if std > 0 else shaped
    raise ValueError(f"unknown algo.advantage.reward_norm {norm!r}; choose none, batch or running")
