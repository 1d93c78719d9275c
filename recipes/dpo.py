"""Offline DPO: preference pairs -> reference logprobs -> DPO steps -> publish.

Pairs come from `task.pairs_path`, or, by default, from the task itself: the rollout
engine samples `rollout.samples_per_prompt` replies to each of `algo.preference.pair_prompts`
training prompts with the initial weights, the verifier scores them, and in each
prompt with both a correct and a wrong reply one of each becomes a pair. The
Reference's logprobs are computed once; every step takes `algo.preference.pairs_per_step` pairs
(cycling through them, reshuffled each epoch) and the weights are published to the
engines every `trainer.sync_every` steps and at the end, so held-out evaluation sees
the trained model.

As in online RL, the guard checkpoints every `checkpoint.every` steps and gates every
`gate.every` (greedy held-out accuracy against the champion; rollback or stop), and
`resume=` continues a run on the same pairs (`recipes/pair_training.py`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from rlhf_platform.recipes.pair_training import preference_pairs, preference_state, starting_pairs, train_on_pairs
from rlhf_platform.recipes.policy_run import PolicyRun
from rlhf_platform.recipes.stats import TrainStats
from rlhf_platform.roles.executor import Executor
from rlhf_platform.types import TrainBatch

if TYPE_CHECKING:
    from rlhf_platform.recipes.run import RunInputs


class DPORecipe(PolicyRun):
    """`recipe=dpo`: offline DPO (or IPO) against the Reference's logprobs."""

    def __init__(self, inputs: "RunInputs") -> None:
        super().__init__(inputs)
        self.pairs, self.pair_counts = starting_pairs(self.checkpoints, inputs.pairs, self.resume_version)

    def setup(self, executor: Executor) -> None:
        super().setup(executor)
        if self.resume_version is not None:
            self.resumed(self.checkpoints.restore(self.roles, self.resume_version))

    def train(self, on_step: Callable[[int, dict[str, float]], None]) -> TrainStats:
        """Pairs (sampled now unless given or resumed), the Reference's logprobs of them,
        then `trainer.max_steps` DPO steps."""
        cfg, roles = self.cfg, self.roles
        if self.pairs is None:
            self.pairs, self.pair_counts = preference_pairs(roles, cfg)
        state = preference_state(self.pairs, self.inputs.pairs is None, self.pair_counts)
        self.checkpoints.recipe_state = lambda: state
        annotated = roles.reference.annotate(self.pairs).result()
        preference = cfg.algo.preference

        def step(batch: TrainBatch, num_pairs: int) -> list[dict[str, float]]:
            return roles.policy.train_step(
                batch, num_pairs, preference.beta, preference.loss, preference.label_smoothing, method="train_preference_step"
            )

        self.stats, self.version = train_on_pairs(roles, cfg, annotated, step, True, on_step, self.guard, self.start)
        self.stats.extra = dict(self.pair_counts)
        return self.stats
