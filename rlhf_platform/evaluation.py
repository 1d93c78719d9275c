"""Held-out evaluation through the rollout engines with greedy decoding."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray

from rlhf_platform.rewards.math import is_correct
from rlhf_platform.roles.generation import SamplingSpec
from rlhf_platform.types import Prompt


@dataclass
class EvalResult:
    version: int
    accuracy: float
    num_prompts: int
    accuracy_by_level: dict[int, float] = field(default_factory=dict)
    response_length_mean: float = 0.0
    reward_mean: float | None = None  # mean of the Reward service's scores, when it was given


def evaluate(
    engines: list[Any], prompts: list[Prompt], version: int, max_new_tokens: int, reward: Any = None
) -> EvalResult:
    """Greedy answers to `prompts` at weight version >= `version`, split over engines;
    accuracy is the share whose final answer math-verify accepts. With `reward` (the
    Reward service), the answers are also scored by the run's reward functions."""
    if not prompts:
        return EvalResult(version, float("nan"), 0)
    spec = SamplingSpec(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    shards = [prompts[i :: len(engines)] for i in range(len(engines))]
    refs = [e.generate.remote(shard, spec, version) for e, shard in zip(engines, shards) if shard]
    trajectories = [t for batch in ray.get(refs) for t in batch]
    reward_mean = None
    if reward is not None:
        scored = ray.get(reward.score.remote(trajectories))
        reward_mean = sum(t.reward for t in scored) / len(scored)
    correct_by_level: dict[int, list[bool]] = {}
    for traj in trajectories:
        correct_by_level.setdefault(traj.difficulty, []).append(is_correct(traj.response_text, traj.answer))
    flat = [c for cs in correct_by_level.values() for c in cs]
    return EvalResult(
        version=min(t.weight_version for t in trajectories),
        accuracy=sum(flat) / len(flat),
        num_prompts=len(flat),
        accuracy_by_level={lvl: sum(cs) / len(cs) for lvl, cs in sorted(correct_by_level.items())},
        response_length_mean=sum(t.response_length for t in trajectories) / len(trajectories),
        reward_mean=reward_mean,
    )
