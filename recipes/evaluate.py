"""Held-out evaluation of the served policy: greedy answers from the rollout engines,
scored by the Reward service and the task's own check; with `eval.samples_per_prompt`
n > 1 also n sampled replies per prompt (pass@n, mean@n)."""
from __future__ import annotations

from rlhf_platform.config import Config
from rlhf_platform.evaluation import EvalReport, EvalResult, score_answers, score_samples, task_answer_check
from rlhf_platform.sampling import SamplingSpec
from rlhf_platform.types import Prompt
from rlhf_platform.recipes.rollout import generate_across
from rlhf_platform.recipes.run_roles import RunRoles


def evaluate(roles: RunRoles, cfg: Config, prompts: list[Prompt], version: int, name: str = "held_out") -> EvalResult:
    """Greedy answers to `prompts` at weight version >= `version`, split over the
    engines, scored by the run's reward functions and the task's check; with
    eval.samples_per_prompt > 1 (and a check), sampled replies too (seeded by run.seed,
    so every evaluation of a run draws alike)."""
    if not prompts:
        return EvalResult(version, float("nan"), 0, name=name)
    check = task_answer_check(cfg.task, cfg.reward.functions)
    spec = SamplingSpec(n=1, temperature=0.0, max_new_tokens=cfg.eval.max_new_tokens)
    trajectories = roles.reward.score(*generate_across(roles.engines, prompts, spec, version)).result()
    result = score_answers(trajectories, version, check)
    result.name = name
    n = cfg.eval.samples_per_prompt
    if n > 1 and check is not None:
        spec = SamplingSpec(n=n, temperature=cfg.eval.temperature, max_new_tokens=cfg.eval.max_new_tokens, seed=cfg.run.seed)
        sampled = roles.reward.score(*generate_across(roles.engines, prompts, spec, version)).result()
        result.samples = score_samples(sampled, n, check)
    return result


def evaluate_sets(roles: RunRoles, cfg: Config, sets: dict[str, list[Prompt]], version: int) -> EvalReport:
    """`evaluate` on every eval set, by name."""
    return {name: evaluate(roles, cfg, prompts, version, name) for name, prompts in sets.items()}
