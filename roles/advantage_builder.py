"""The Advantage Builder role: freshness filter, reward shaping, grouping by prompt,
advantages, and DAPO's filter of groups that carry no signal.

Per batch: stale samples are dropped; the task rewards are clipped and normalised
(algo.advantage.reward_clip / reward_norm), then DAPO's overlong penalty is added; the
estimator turns the shaped rewards into advantages (one per sample, or per token for
REINFORCE++, its group-baseline variant and GAE, with the KL as a reward penalty);
dynamic sampling drops the groups whose *raw* task rewards are all equal.

Its state across batches, the adaptive KL coefficient and the running reward moments
of reward_norm=running, goes into checkpoints (`get_state` / `load_state`).
"""
from __future__ import annotations

from typing import Any

import torch

from rlhf_platform.algos.advantages import (
    RunningRewardStats,
    dr_grpo_advantages,
    gae_advantages,
    group_normalized_advantages,
    masked_whiten,
    reinforce_pp_advantages,
    reinforce_pp_baseline_advantages,
    rloo_advantages,
    shape_rewards,
    token_rewards,
)
from rlhf_platform.algos.dapo import filter_uniform_groups, overlong_penalty
from rlhf_platform.algos.kl import AdaptiveKLController, FixedKLController, kl_estimate
from rlhf_platform.batching import loss_mask, per_token, response_mask
from rlhf_platform.config import TOKEN_ESTIMATORS, AlgoConfig
from rlhf_platform.freshness import split_by_freshness
from rlhf_platform.roles.metrics import RoleMetrics
from rlhf_platform.types import TrainBatch, Trajectory


def sequence_advantages(algo: AlgoConfig, rewards: torch.Tensor, group_ids: list[str]) -> torch.Tensor:
    """One advantage per sample from its (shaped) reward: group_norm, dr_grpo or rloo
    (REINFORCE++, its group-baseline variant and GAE are per token: `token_advantages`)."""
    if algo.advantage.estimator == "group_norm":
        return group_normalized_advantages(rewards, group_ids, algo.advantage.norm_eps)
    if algo.advantage.estimator == "dr_grpo":
        return dr_grpo_advantages(rewards, group_ids)
    if algo.advantage.estimator == "rloo":
        return rloo_advantages(rewards, group_ids)
    raise ValueError(f"unknown algo.advantage.estimator {algo.advantage.estimator!r}")


def _required(trajectories: list[Trajectory], field: str, why: str) -> torch.Tensor:
    values = per_token(trajectories, field)
    if values is None:
        missing = next(t for t in trajectories if getattr(t, field) is None)
        raise ValueError(f"trajectory {missing.prompt_id}/{missing.group_id} has no {field}; {why}")
    return values


def token_advantages(
    algo: AlgoConfig, rewards: torch.Tensor, trajectories: list[Trajectory], kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per-token advantages [n, R] for GAE (PPO), REINFORCE++ or REINFORCE++ with a
    group baseline (the groups are the trajectories' group ids), with the KL to the
    reference as a per-token reward penalty. Returns (advantages, value targets or
    None, per-sequence KL or None)."""
    mask = response_mask(trajectories)
    trained = loss_mask(trajectories)  # whitening statistics over the tokens the loss counts
    trained = mask if trained is None else trained
    kl = None
    if algo.kl.mode == "reward" and kl_coef > 0:
        ref = _required(trajectories, "ref_logprobs", "algo.kl.mode=reward needs the Reference service")
        kl = kl_estimate(_required(trajectories, "behaviour_logprobs", ""), ref, algo.kl.estimator) * mask
    gamma, eps = algo.advantage.gamma, algo.advantage.norm_eps
    if algo.advantage.estimator == "reinforce_pp":
        return reinforce_pp_advantages(rewards, mask, kl, kl_coef, gamma, eps, trained), None, _sum(kl)
    if algo.advantage.estimator == "reinforce_pp_baseline":
        group_ids = [t.group_id for t in trajectories]
        return reinforce_pp_baseline_advantages(rewards, group_ids, mask, kl, kl_coef, gamma, eps, trained), None, _sum(kl)
    values = _required(trajectories, "values", "algo.advantage.estimator=gae needs the Critic's values")
    advantages, returns = gae_advantages(token_rewards(rewards, mask, kl, kl_coef), values, mask, algo.advantage.gamma, algo.advantage.lam)
    if algo.advantage.whiten:
        advantages = masked_whiten(advantages, trained, algo.advantage.norm_eps)
    return advantages, returns, _sum(kl)


def _sum(kl: torch.Tensor | None) -> torch.Tensor | None:
    return None if kl is None else kl.sum(-1)


class AdvantageBuilder:
    def __init__(self, max_lag: int, algo: AlgoConfig | None = None, max_new_tokens: int = 0, stale_tokens: str = "drop") -> None:
        self.max_lag = max_lag  # steps a sample's weights may lag the trainer's (versions.max_sample_lag)
        self.stale_tokens = stale_tokens  # drop | mask: what the freshness rule does with a sample's too-old tokens
        self.algo = algo or AlgoConfig()
        self.max_new_tokens = max_new_tokens
        self.dropped_stale_total = 0
        self.dropped_uniform_groups_total = 0
        self.metrics = RoleMetrics("advantage-builder")
        self.reward_stats = RunningRewardStats()  # moments of every clipped reward (reward_norm=running)
        if self.algo.kl.target is not None:
            self.kl = AdaptiveKLController(self.algo.kl.coef, self.algo.kl.target, self.algo.kl.horizon)
        else:
            self.kl = FixedKLController(self.algo.kl.coef)

    def get_state(self) -> dict[str, Any]:
        """What a checkpoint keeps of this role: the KL coefficient (the adaptive
        controller moves it) and the running reward moments (JSON-serialisable)."""
        return {"kl_coef": float(self.kl.coef), "reward_stats": self.reward_stats.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore `get_state`'s output. The KL coefficient only into an adaptive
        controller (it moved it); a fixed one keeps this run's `algo.kl.coef`, so a
        resume may change it (or turn the KL off, with no Reference service)."""
        if isinstance(self.kl, AdaptiveKLController):
            self.kl.coef = float(state["kl_coef"])
        self.reward_stats = RunningRewardStats.from_state(state["reward_stats"])

    def build(self, trajectories: list[Trajectory], current_version: int) -> TrainBatch:
        """Drop (and count) stale trajectories, and with dynamic sampling the groups
        whose rewards are all equal; set advantages on the rest."""
        fresh, stale = split_by_freshness(trajectories, current_version, self.max_lag, self.stale_tokens)
        self.dropped_stale_total += len(stale)
        metrics: dict[str, float] = {
            "dropped_stale": float(len(stale)),
            "masked_stale_tokens": float(sum(t.masked_prefix for t in fresh)),
        }
        if not fresh:
            return TrainBatch(trajectories=[], version=current_version, dropped_stale=len(stale), metrics=metrics)
        task_rewards = torch.tensor([t.reward for t in fresh], dtype=torch.float32)
        lengths = [t.response_length for t in fresh]
        group_ids = [t.group_id for t in fresh]
        shaped = self._shape(fresh, task_rewards, lengths, metrics)
        staleness = [current_version - t.weight_version for t in fresh]
        self.metrics.observe("sample_staleness", staleness)
        metrics.update(
            reward_mean=float(task_rewards.mean()),
            staleness_mean=sum(staleness) / len(staleness),
            staleness_max=float(max(staleness)),
            # share of the kept samples drawn from weights older than the current ones
            stale_fraction=sum(s > 0 for s in staleness) / len(staleness),
            response_length_mean=sum(lengths) / len(lengths),
            # partial rollout: share of samples whose tokens come from more than one version
            multi_version_fraction=sum(len(t.version_spans()) > 1 for t in fresh) / len(fresh),
            truncated_fraction=sum(t.finish_reason == "length" for t in fresh) / len(fresh),
            # samples a reward function failed on (scored by reward.fallback; the error is in reward_info)
            reward_errors=float(sum(any(k.endswith(".error") for k in t.reward_info) for t in fresh)),
        )
        for level in sorted({t.difficulty for t in fresh}):
            level_rewards = [t.reward for t in fresh if t.difficulty == level]
            metrics[f"reward_mean_level{level}"] = sum(level_rewards) / len(level_rewards)
        self._set_advantages(fresh, shaped, group_ids, metrics)
        if self.algo.dapo.dynamic_sampling:
            kept = filter_uniform_groups(task_rewards, group_ids)  # by accuracy, as DAPO does
            self.dropped_uniform_groups_total += kept.dropped_groups
            metrics["dropped_uniform_groups"] = float(kept.dropped_groups)
            fresh = [fresh[i] for i in kept.kept.tolist()]
        return TrainBatch(trajectories=fresh, version=current_version, dropped_stale=len(stale), metrics=metrics)

    def _shape(
        self, fresh: list[Trajectory], task_rewards: torch.Tensor, lengths: list[int], metrics: dict[str, float]
    ) -> torch.Tensor:
        """The rewards the estimators see: task rewards clipped and normalised
        (`shape_rewards`), plus DAPO's overlong penalty (recorded in reward_info)."""
        adv = self.algo.advantage
        shaped = shape_rewards(task_rewards, adv.reward_clip, adv.reward_norm, self.reward_stats, adv.norm_eps)
        if adv.reward_norm == "running":
            metrics["reward_running_std"] = self.reward_stats.std
        if self.algo.dapo.overlong_buffer > 0:
            penalty = self.algo.dapo.overlong_penalty * overlong_penalty(lengths, self.max_new_tokens, self.algo.dapo.overlong_buffer)
            shaped = shaped + penalty
            for traj, value in zip(fresh, penalty.tolist()):
                traj.reward_info["overlong_penalty"] = value
            metrics["overlong_penalty_mean"] = float(penalty.mean())
        return shaped

    def _set_advantages(
        self, fresh: list[Trajectory], shaped: torch.Tensor, group_ids: list[str], metrics: dict[str, float]
    ) -> None:
        """Set each trajectory's advantage (sequence estimators) or token advantages and
        returns (per-token ones: GAE, REINFORCE++ and its baseline variant with their
        discount gamma, or a KL reward penalty); steps the KL controller."""
        if not (self.algo.advantage.estimator in TOKEN_ESTIMATORS or self.algo.kl.mode == "reward"):
            advantages = sequence_advantages(self.algo, shaped, group_ids)
            for traj, adv in zip(fresh, advantages.tolist()):
                traj.advantage = adv
            return
        coef = self.kl.coef
        token_adv, returns, seq_kl = token_advantages(self.algo, shaped, fresh, coef)
        for i, traj in enumerate(fresh):
            traj.token_advantages = token_adv[i, : traj.response_length].tolist()
            traj.returns = None if returns is None else returns[i, : traj.response_length].tolist()
        if seq_kl is not None:
            tokens = max(1, sum(t.response_length for t in fresh))
            metrics.update(
                kl_coef=coef, kl_ref_per_sequence=float(seq_kl.mean()), kl_ref_per_token=float(seq_kl.sum()) / tokens
            )
            self.kl.update(float(seq_kl.mean()), len(fresh))
