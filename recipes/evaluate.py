"""Held-out evaluation of the served policy: greedy answers from the rollout engines,
scored by the Reward service and the task's own check."""
from __future__ import annotations

from rlhf_platform.config import Config
from rlhf_platform.evaluation import EvalResult, score_answers, task_answer_check
from rlhf_platform.sampling import SamplingSpec
from rlhf_platform.types import Prompt
from rlhf_platform.recipes.rollout import generate_across
from rlhf_platform.recipes.run_roles import RunRoles


def evaluate(roles: RunRoles, cfg: Config, prompts: list[Prompt], version: int) -> EvalResult:
    """Greedy answers to `prompts` at weight version >= `version`, split over the
    engines, scored by the run's reward functions and the task's check."""
    if not prompts:
        return EvalResult(version, float("nan"), 0)
    spec = SamplingSpec(n=1, temperature=0.0, max_new_tokens=cfg.eval.max_new_tokens)
    trajectories = roles.reward.score(*generate_across(roles.engines, prompts, spec, version)).result()
    return score_answers(trajectories, version, task_answer_check(cfg.task, cfg.reward.functions))
