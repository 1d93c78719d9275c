"""The Reward / Verifier service: scores trajectories with weighted reward functions."""
from __future__ import annotations

from rlhf_platform.config import RewardFunctionConfig
from rlhf_platform.rewards import REWARD_FUNCTIONS
from rlhf_platform.types import Trajectory


class RewardService:
    def __init__(self, functions: list[RewardFunctionConfig]) -> None:
        self.functions = [(f.name, REWARD_FUNCTIONS[f.name], f.weight) for f in functions]

    def score(self, trajectories: list[Trajectory]) -> list[Trajectory]:
        """Set `reward` (the weighted sum) and `reward_info` (each function's score)."""
        prompts = [t.prompt_text for t in trajectories]
        completions = [t.response_text for t in trajectories]
        answers = [t.answer for t in trajectories]
        totals = [0.0] * len(trajectories)
        for name, fn, weight in self.functions:
            scores = fn(prompts, completions, answer=answers)
            for i, s in enumerate(scores):
                trajectories[i].reward_info[name] = float(s)
                totals[i] += weight * float(s)
        for traj, total in zip(trajectories, totals):
            traj.reward = total
        return trajectories
