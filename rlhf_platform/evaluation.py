"""Held-out evaluation results, scored by the task's own check.

The recipe layer generates the greedy answers (through the rollout engines) and scores
them with the Reward service; this module turns them into an `EvalResult`. What counts
as correct is the task's:

  arithmetic  the math check (the reply's final number verifies against the sum)
  count       the reply lists exactly the integers asked for (`rewards.listing`)
  dataset     every configured verifier (the `reward.functions` entries that verify an
              answer, `rewards.VERIFIERS`: math_answer, code_tests) gives it 1.0; with
              no verifier configured, accuracy is not defined (NaN; null in summary.json)

The mean reward under the run's reward functions is reported beside it, and the eval
gate compares both with the champion's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from rlhf_platform.config import RewardFunctionConfig, TaskConfig
from rlhf_platform.rewards import VERIFIERS
from rlhf_platform.rewards.listing import lists_match
from rlhf_platform.rewards.math import is_correct
from rlhf_platform.types import Trajectory

AnswerCheck = Callable[[Trajectory], bool]  # None where the task has no check


@dataclass
class EvalResult:
    version: int
    accuracy: float
    num_prompts: int
    accuracy_by_level: dict[int, float] = field(default_factory=dict)
    response_length_mean: float = 0.0
    reward_mean: float | None = None  # mean of the Reward service's scores


def task_answer_check(task: TaskConfig, functions: list[RewardFunctionConfig]) -> AnswerCheck | None:
    """Whether a scored answer is correct, by the task's own check (see the module);
    None when the task has none (a dataset task scored by shaping rewards or reward
    models only)."""
    if task.name == "arithmetic":
        return lambda traj: is_correct(traj.response_text, traj.answer)
    if task.name == "count":
        return lambda traj: lists_match(traj.response_text, traj.answer)
    verifiers = [f.name for f in functions if f.name in VERIFIERS]
    if not verifiers:
        return None
    return lambda traj: all(traj.reward_info.get(name, 0.0) >= 1.0 for name in verifiers)


def score_answers(trajectories: list[Trajectory], version: int, check: AnswerCheck | None) -> EvalResult:
    """Accuracy (overall and per difficulty level; NaN without a check), mean reply
    length and mean reward of greedy answers the Reward service has scored."""
    if not trajectories:
        return EvalResult(version, float("nan"), 0)
    correct_by_level: dict[int, list[float]] = {}
    for traj in trajectories:
        correct_by_level.setdefault(traj.difficulty, []).append(float(check(traj)) if check else float("nan"))
    flat = [c for cs in correct_by_level.values() for c in cs]
    rewards = [t.reward for t in trajectories if t.reward is not None]
    return EvalResult(
        version=min(t.weight_version for t in trajectories),
        accuracy=sum(flat) / len(flat),
        num_prompts=len(flat),
        accuracy_by_level={lvl: sum(cs) / len(cs) for lvl, cs in sorted(correct_by_level.items())},
        response_length_mean=sum(t.response_length for t in trajectories) / len(trajectories),
        reward_mean=sum(rewards) / len(rewards) if rewards else None,
    )
