"""The Reward / Verifier service: scores trajectories with weighted reward functions
(verifiers from `rewards/`) and trained reward models, mixed by weight."""
from __future__ import annotations

from typing import Callable

from rlhf_platform.config import RewardFunctionConfig
from rlhf_platform.modeling import use_cores
from rlhf_platform.reward_model import RewardModelScorer
from rlhf_platform.rewards import REWARD_FUNCTIONS
from rlhf_platform.types import Trajectory

Scorer = Callable[[list[Trajectory]], list[float]]


def _verifier(fn) -> Scorer:
    def score(trajectories: list[Trajectory]) -> list[float]:
        prompts = [t.prompt_text for t in trajectories]
        completions = [t.response_text for t in trajectories]
        return fn(prompts, completions, answer=[t.answer for t in trajectories])

    return score


class RewardService:
    def __init__(self, functions: list[RewardFunctionConfig]) -> None:
        self.functions: list[tuple[str, Scorer, float]] = []
        for f in functions:
            if f.name == "reward_model":
                use_cores()
                self.functions.append((f.name, RewardModelScorer(f.path).score, f.weight))
            else:
                self.functions.append((f.name, _verifier(REWARD_FUNCTIONS[f.name]), f.weight))

    def score(self, trajectories: list[Trajectory]) -> list[Trajectory]:
        """Set `reward` (the weighted sum) and `reward_info` (each function's score)."""
        totals = [0.0] * len(trajectories)
        for name, scorer, weight in self.functions:
            for i, s in enumerate(scorer(trajectories)):
                trajectories[i].reward_info[name] = float(s)
                totals[i] += weight * float(s)
        for traj, total in zip(trajectories, totals):
            traj.reward = total
        return trajectories
