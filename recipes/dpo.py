"""Offline DPO: preference pairs -> reference logprobs -> DPO steps -> publish.

Pairs come from `task.pairs_path`, or, by default, from the task itself: the rollout
engine samples `rollout.samples_per_prompt` replies to each of `algo.preference.pair_prompts`
training prompts with the initial weights, the verifier scores them, and in each
prompt with both a correct and a wrong reply one of each becomes a pair. The
Reference's logprobs are computed once; every step takes `algo.preference.pairs_per_step` pairs
(cycling through them, reshuffled each epoch) and the weights are published to the
engines every `trainer.sync_every` steps and at the end, so held-out evaluation sees
the trained model.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from rlhf_platform.config import Config
from rlhf_platform.pairs import pair_batches, pairs_from_scored_samples
from rlhf_platform.recipes.policy_run import PolicyRun
from rlhf_platform.recipes.rollout import generate_across
from rlhf_platform.recipes.run_roles import RunRoles
from rlhf_platform.recipes.stats import TrainStats, merge_rank_metrics
from rlhf_platform.sampling import SamplingSpec
from rlhf_platform.types import TrainBatch, Trajectory

if TYPE_CHECKING:
    from rlhf_platform.recipes.run import RunInputs


def sample_pairs(roles: RunRoles, cfg: Config) -> tuple[list[Trajectory], dict[str, float]]:
    """Pairs built by sampling the initial policy on task prompts and verifying."""
    pairs: list[Trajectory] = []
    unpaired = 0
    remaining = cfg.algo.preference.pair_prompts
    while remaining > 0:
        count = min(remaining, cfg.rollout.prompts_per_step * len(roles.engines))
        lease = roles.queue.lease(count).result()
        spec = SamplingSpec.for_rollout(cfg.rollout, lease.seed)
        scored = roles.reward.score(*generate_across(roles.engines, lease.prompts, spec, 0))
        batch_pairs, batch_unpaired = pairs_from_scored_samples(scored.result(), cfg.run.seed)
        pairs.extend(batch_pairs)
        unpaired += batch_unpaired
        roles.queue.ack(lease.lease_id)
        remaining -= count
    return pairs, {"pairs_built": float(len(pairs) // 2), "prompts_without_pair": float(unpaired)}


def preference_pairs(
    roles: RunRoles | None, cfg: Config, pairs: list[Trajectory] | None
) -> tuple[list[Trajectory], dict[str, float]]:
    """The given pairs, or pairs sampled from the task (with counts for the summary)."""
    extra: dict[str, float] = {}
    if pairs is None:
        pairs, extra = sample_pairs(roles, cfg)
    if not pairs:
        raise RuntimeError(
            "no preference pairs: no sampled prompt had both a correct and a wrong reply "
            f"(algo.preference.pair_prompts={cfg.algo.preference.pair_prompts}); raise it or rollout.temperature, or give task.pairs_path"
        )
    return pairs, extra


def train(
    roles: RunRoles,
    cfg: Config,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    pairs: list[Trajectory] | None = None,
) -> TrainStats:
    """Run `trainer.max_steps` DPO steps over `pairs` (two trajectories each), or over
    pairs sampled from the task when none are given. Weights are published every
    `trainer.sync_every` steps and after the last; the weight version is the step."""
    stats = TrainStats()
    pairs, stats.extra = preference_pairs(roles, cfg, pairs)
    pairs = roles.reference.annotate(pairs).result()
    batches = pair_batches(pairs, cfg.algo.preference.pairs_per_step, cfg.run.seed)
    algo = cfg.algo
    for step in range(1, cfg.trainer.max_steps + 1):
        batch = TrainBatch(next(batches), version=step - 1, dropped_stale=0)
        num_pairs = len(batch) // 2
        results = roles.policy.train_step(
            batch, num_pairs, algo.preference.beta, algo.preference.loss, algo.preference.label_smoothing, method="train_preference_step"
        )
        if step % cfg.trainer.sync_every == 0 or step == cfg.trainer.max_steps:
            roles.policy.publish(step)
        stats.record_step(step, num_pairs, merge_rank_metrics(results), step, on_step)
    return stats


class DPORecipe(PolicyRun):
    """`recipe=dpo`: offline DPO (or IPO) against the Reference's logprobs."""

    def train(self, on_step: Callable[[int, dict[str, float]], None]) -> TrainStats:
        self.stats = train(self.roles, self.cfg, on_step, self.inputs.pairs)
        self.version = self.stats.steps
        return self.stats

    def summary(self) -> dict[str, Any]:
        return {"weight_version": self.version}
