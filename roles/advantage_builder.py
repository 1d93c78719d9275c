"""The Advantage Builder role: freshness filter, grouping by prompt, advantages."""
from __future__ import annotations

import torch

from rlhf_platform.algos.advantages import group_normalized_advantages
from rlhf_platform.freshness import split_by_freshness
from rlhf_platform.types import TrainBatch, Trajectory


class AdvantageBuilder:
    def __init__(self, max_staleness: int, norm_eps: float = 1e-6) -> None:
        self.max_staleness = max_staleness
        self.norm_eps = norm_eps
        self.dropped_stale_total = 0

    def build(self, trajectories: list[Trajectory], current_version: int) -> TrainBatch:
        """Drop (and count) stale trajectories; set GRPO advantages on the rest."""
        fresh, stale = split_by_freshness(trajectories, current_version, self.max_staleness)
        self.dropped_stale_total += len(stale)
        metrics: dict[str, float] = {"dropped_stale": float(len(stale))}
        if fresh:
            rewards = torch.tensor([t.reward for t in fresh], dtype=torch.float32)
            advantages = group_normalized_advantages(rewards, [t.group_id for t in fresh], self.norm_eps)
            for traj, adv in zip(fresh, advantages.tolist()):
                traj.advantage = adv
            staleness = [current_version - t.weight_version for t in fresh]
            metrics.update(
                reward_mean=float(rewards.mean()),
                staleness_mean=sum(staleness) / len(staleness),
                staleness_max=float(max(staleness)),
                response_length_mean=sum(t.response_length for t in fresh) / len(fresh),
                truncated_fraction=sum(t.finish_reason == "length" for t in fresh) / len(fresh),
            )
            for level in sorted({t.difficulty for t in fresh}):
                level_rewards = [t.reward for t in fresh if t.difficulty == level]
                metrics[f"reward_mean_level{level}"] = sum(level_rewards) / len(level_rewards)
        return TrainBatch(trajectories=fresh, version=current_version, dropped_stale=len(stale), metrics=metrics)
