"""Reward model training (Bradley-Terry): preference pairs -> held-out split -> steps
-> pairwise accuracy before and after -> an HF directory the Reward service can serve.

Pairs come from `task.pairs_path` or are sampled from the task as for DPO. A seeded
`algo.preference.rm_held_out` share of them is never trained on; accuracy there is the share of
pairs whose chosen reply the model scores higher. The model is saved to
`<run dir>/reward_model` (atomically) for `reward.functions=[{name: reward_model, path: ...}]`.
"""
from __future__ import annotations

from typing import Any, Callable

from rlhf_platform.evaluation import EvalResult
from rlhf_platform.pairs import pair_batches, split_pairs
from rlhf_platform.recipes.dpo import preference_pairs
from rlhf_platform.recipes.policy_run import PolicyRun
from rlhf_platform.recipes.run_roles import RunRoles, start_roles
from rlhf_platform.recipes.stats import TrainStats, merge_rank_metrics
from rlhf_platform.roles.executor import Executor, Placement
from rlhf_platform.roles.rank_group import RankGroup
from rlhf_platform.roles.reward_model_trainer import RewardModelTrainer
from rlhf_platform.types import TrainBatch


class RewardModelRecipe(PolicyRun):
    """`recipe=rm`: pairs -> held-out split -> Bradley-Terry steps -> pairwise accuracy.
    The model trained is a reward model, not the policy: no generation-based evaluation."""

    def setup(self, executor: Executor) -> None:
        """The reward model's ranks, and the sampling roles when pairs come from the task."""
        cfg = self.cfg
        if self.inputs.pairs is None:
            self.roles = start_roles(executor, cfg, self.inputs.model_dir, self.inputs.train_prompts, train_policy=False)
        else:
            self.roles = RunRoles(executor, None, None, [], None, None, None, None)
        self.roles.policy = RankGroup(
            executor, RewardModelTrainer, "reward-model-trainer", cfg.trainer.num_ranks, str(self.inputs.model_dir),
            cfg.trainer, seed=cfg.run.seed, placement=Placement(num_cpus=cfg.trainer.num_cpus),
        )

    def evaluate(self, when: str) -> EvalResult | None:
        return None  # scored on held-out pairs inside `train`, not by generation

    def train(self, on_step: Callable[[int, dict[str, float]], None]) -> TrainStats:
        """`trainer.max_steps` steps of `algo.preference.pairs_per_step` pairs; pairwise accuracy on
        the held-out pairs before and after."""
        cfg, group = self.cfg, self.roles.policy
        pairs, self.stats.extra = preference_pairs(self.roles, cfg, self.inputs.pairs)
        train_pairs, held_out = split_pairs(pairs, cfg.algo.preference.rm_held_out, cfg.run.seed)
        before = group.run("evaluate", held_out)[0]
        batches = pair_batches(train_pairs, cfg.algo.preference.pairs_per_step, cfg.run.seed)
        for step in range(1, cfg.trainer.max_steps + 1):
            batch = TrainBatch(next(batches), version=step - 1)
            num_pairs = len(batch) // 2
            results = group.train_step(batch, num_pairs)
            self.stats.record_step(step, num_pairs, merge_rank_metrics(results), step, on_step)
        after = group.run("evaluate", held_out)[0]
        saved = group.run("save", str(self.inputs.run_dir / "reward_model"))[0]
        self.stats.extra.update(
            train_pairs=len(train_pairs) // 2,
            held_out_pairs=len(held_out) // 2,
            pair_accuracy_before=before["pair_accuracy"],
            pair_accuracy_after=after["pair_accuracy"],
            score_margin_after=after["score_margin"],
            reward_model_path=saved,
        )
        return self.stats

    def save_final(self, after: EvalResult | None) -> int | None:
        """Checkpoint the reward model and register it, with its held-out pairwise
        accuracy, as the run's head."""
        record = self.checkpoints.save(self.roles, self.stats.steps, self.stats.steps, {})
        extra = self.stats.extra
        self.checkpoints.registry.set_eval(
            record.id, {"pair_accuracy": extra["pair_accuracy_after"], "score_margin": extra["score_margin_after"]}
        )
        return record.id

    def summary(self) -> dict[str, Any]:
        return {"weight_version": self.stats.steps}
