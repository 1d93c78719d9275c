"""Reward model training (Bradley-Terry): preference pairs -> held-out split -> steps
-> pairwise accuracy before and after -> an HF directory the Reward service can serve.

Pairs come from `task.pairs_path` or are sampled from the task as for DPO. A seeded
`algo.preference.rm_held_out` share of them is never trained on; accuracy there is the share of
pairs whose chosen reply the model scores higher. The model is saved to
`<run dir>/reward_model` (atomically) for `reward.functions=[{name: reward_model, path: ...}]`.

The guard checkpoints every `checkpoint.every` steps and, every `gate.every`, gates the
candidate on held-out pairwise accuracy against the champion (so the gate, like the
final figure, reads the held-out pairs); `resume=` continues a run on the same pairs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from rlhf_platform.evaluation import EvalReport
from rlhf_platform.gate import GateMetrics
from rlhf_platform.pairs import split_pairs
from rlhf_platform.recipes.pair_training import preference_pairs, preference_state, starting_pairs, train_on_pairs
from rlhf_platform.recipes.policy_run import PolicyRun
from rlhf_platform.recipes.run_roles import RunRoles, start_roles
from rlhf_platform.recipes.stats import TrainStats
from rlhf_platform.roles.executor import Executor, Placement
from rlhf_platform.roles.rank_group import RankGroup
from rlhf_platform.roles.reward_model_trainer import RewardModelTrainer
from rlhf_platform.types import Trajectory

if TYPE_CHECKING:
    from rlhf_platform.recipes.run import RunInputs


class RewardModelRecipe(PolicyRun):
    """`recipe=rm`: pairs -> held-out split -> Bradley-Terry steps -> pairwise accuracy.
    The model trained is a reward model, not the policy: no generation-based evaluation."""

    def __init__(self, inputs: "RunInputs") -> None:
        super().__init__(inputs)
        self.pairs, self.pair_counts = starting_pairs(self.checkpoints, inputs.pairs, self.resume_version)

    def setup(self, executor: Executor) -> None:
        """The reward model's ranks, and the sampling roles when pairs come from the task;
        a resumed run's checkpoint loaded into them."""
        cfg = self.cfg
        if self.inputs.pairs is None:
            self.roles = start_roles(executor, cfg, self.inputs.model_dir, self.inputs.train_prompts, train_policy=False)
        else:
            self.roles = RunRoles(executor, None, None, [], None, None, None, None)
        self.roles.policy = RankGroup(
            executor, RewardModelTrainer, "reward-model-trainer", cfg.trainer.num_ranks, str(self.inputs.model_dir),
            cfg.trainer, seed=cfg.run.seed, placement=Placement(num_cpus=cfg.trainer.num_cpus),
        )
        if self.resume_version is not None:
            self.resumed(self.checkpoints.load(self.roles, self.resume_version))

    def evaluate(self, when: str) -> EvalReport | None:
        return None  # scored on held-out pairs inside `train`, not by generation

    def score(self, held_out: list[Trajectory]) -> dict[str, float]:
        """Pairwise accuracy and mean score margin on `held_out` (every rank scores)."""
        return self.roles.policy.run("evaluate", held_out)[0]

    def train(self, on_step: Callable[[int, dict[str, float]], None]) -> TrainStats:
        """`trainer.max_steps` steps of `algo.preference.pairs_per_step` pairs; pairwise accuracy on
        the held-out pairs before (kept in checkpoints) and after."""
        cfg, group = self.cfg, self.roles.policy
        if self.pairs is None:
            self.pairs, self.pair_counts = preference_pairs(self.roles, cfg)
        train_pairs, held_out = split_pairs(self.pairs, cfg.algo.preference.rm_held_out, cfg.run.seed)
        if "pair_accuracy_before" not in self.pair_counts:
            before = self.score(held_out)
            self.pair_counts.update(pair_accuracy_before=before["pair_accuracy"], score_margin_before=before["score_margin"])
        state = preference_state(self.pairs, self.inputs.pairs is None, self.pair_counts)
        self.checkpoints.recipe_state = lambda: state
        self.guard.evaluator = lambda roles, version: GateMetrics(self.score(held_out)["pair_accuracy"], 0.0)
        self.stats, self.version = train_on_pairs(
            self.roles, cfg, train_pairs, group.train_step, False, on_step, self.guard, self.start
        )
        after = self.score(held_out)
        saved = group.run("save", str(self.inputs.run_dir / "reward_model"))[0]
        self.stats.extra = dict(
            self.pair_counts,
            train_pairs=len(train_pairs) // 2,
            held_out_pairs=len(held_out) // 2,
            pair_accuracy_after=after["pair_accuracy"],
            score_margin_after=after["score_margin"],
            reward_model_path=saved,
        )
        return self.stats

    def final_eval(self, after: EvalReport | None) -> dict[str, float | None]:
        """The reward model's held-out pairwise accuracy (the gate's `accuracy`) and margin."""
        extra = self.stats.extra
        return {
            **GateMetrics(extra["pair_accuracy_after"], 0.0).as_dict(),
            "pair_accuracy": extra["pair_accuracy_after"], "score_margin": extra["score_margin_after"],
        }
