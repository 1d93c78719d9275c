"""The Advantage Builder role: freshness filter, reward shaping, grouping by prompt,
advantages, and DAPO's filter of groups that carry no signal."""
from __future__ import annotations

import torch

from rlhf_platform.algos.advantages import (
    dr_grpo_advantages,
    group_normalized_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
)
from rlhf_platform.algos.dapo import filter_uniform_groups, overlong_penalty
from rlhf_platform.config import AlgoConfig
from rlhf_platform.freshness import split_by_freshness
from rlhf_platform.types import TrainBatch, Trajectory


def sequence_advantages(algo: AlgoConfig, rewards: torch.Tensor, group_ids: list[str], lengths: list[int]) -> torch.Tensor:
    """One advantage per sample from its (shaped) reward, by `algo.advantage`."""
    if algo.advantage == "group_norm":
        return group_normalized_advantages(rewards, group_ids, algo.norm_eps)
    if algo.advantage == "dr_grpo":
        return dr_grpo_advantages(rewards, group_ids)
    if algo.advantage == "rloo":
        return rloo_advantages(rewards, group_ids)
    if algo.advantage == "reinforce_pp":
        # Whitened over every response token of the batch; without a per-token KL all
        # tokens of a sequence share one value, read at its first token.
        width = max(1, max(lengths))
        mask = (torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).float()
        return reinforce_pp_advantages(rewards, mask, eps=algo.norm_eps)[:, 0]
    raise ValueError(f"unknown algo.advantage {algo.advantage!r}")


class AdvantageBuilder:
    def __init__(self, max_staleness: int, algo: AlgoConfig | None = None, max_new_tokens: int = 0) -> None:
        self.max_staleness = max_staleness
        self.algo = algo or AlgoConfig()
        self.max_new_tokens = max_new_tokens
        self.dropped_stale_total = 0
        self.dropped_uniform_groups_total = 0

    def build(self, trajectories: list[Trajectory], current_version: int) -> TrainBatch:
        """Drop (and count) stale trajectories, and with dynamic sampling the groups
        whose rewards are all equal; set advantages on the rest."""
        fresh, stale = split_by_freshness(trajectories, current_version, self.max_staleness)
        self.dropped_stale_total += len(stale)
        metrics: dict[str, float] = {"dropped_stale": float(len(stale))}
        if not fresh:
            return TrainBatch(trajectories=[], version=current_version, dropped_stale=len(stale), metrics=metrics)
        task_rewards = torch.tensor([t.reward for t in fresh], dtype=torch.float32)
        lengths = [t.response_length for t in fresh]
        group_ids = [t.group_id for t in fresh]
        shaped = task_rewards.clone()
        if self.algo.overlong_buffer > 0:
            penalty = self.algo.overlong_penalty * overlong_penalty(lengths, self.max_new_tokens, self.algo.overlong_buffer)
            shaped = shaped + penalty
            for traj, value in zip(fresh, penalty.tolist()):
                traj.reward_info["overlong_penalty"] = value
            metrics["overlong_penalty_mean"] = float(penalty.mean())
        staleness = [current_version - t.weight_version for t in fresh]
        metrics.update(
            reward_mean=float(task_rewards.mean()),
            staleness_mean=sum(staleness) / len(staleness),
            staleness_max=float(max(staleness)),
            response_length_mean=sum(lengths) / len(lengths),
            truncated_fraction=sum(t.finish_reason == "length" for t in fresh) / len(fresh),
        )
        for level in sorted({t.difficulty for t in fresh}):
            level_rewards = [t.reward for t in fresh if t.difficulty == level]
            metrics[f"reward_mean_level{level}"] = sum(level_rewards) / len(level_rewards)
        advantages = sequence_advantages(self.algo, shaped, group_ids, lengths)
        for traj, adv in zip(fresh, advantages.tolist()):
            traj.advantage = adv
        if self.algo.dynamic_sampling:
            kept = filter_uniform_groups(task_rewards, group_ids)  # by accuracy, as DAPO does
            self.dropped_uniform_groups_total += kept.dropped_groups
            metrics["dropped_uniform_groups"] = float(kept.dropped_groups)
            fresh = [fresh[i] for i in kept.kept.tolist()]
        return TrainBatch(trajectories=fresh, version=current_version, dropped_stale=len(stale), metrics=metrics)
