"""Training on preference pairs, shared by DPO and reward models: where the pairs come
from (task.pairs_path, or sampled from the task and verified), what a checkpoint keeps
of them, and the step loop with the guard (periodic checkpoints, the eval gate,
rollback, stop) that continues a resumed run with the batches it would have taken."""
from __future__ import annotations

from typing import Any, Callable

from rlhf_platform.checkpoint_dir import CheckpointError
from rlhf_platform.config import Config
from rlhf_platform.pairs import pair_batches, pair_rows, pairs_fingerprint, pairs_from_rows, pairs_from_scored_samples
from rlhf_platform.recipes.checkpointing import RunCheckpoints, RunState
from rlhf_platform.recipes.guard import Guard
from rlhf_platform.recipes.rollout import generate_across
from rlhf_platform.recipes.run_roles import RunRoles
from rlhf_platform.recipes.stats import TrainStats, merge_rank_metrics
from rlhf_platform.sampling import SamplingSpec
from rlhf_platform.types import TrainBatch, Trajectory

StepFn = Callable[[TrainBatch, int], list[dict[str, float]]]  # (batch, pairs in it) -> each rank's metrics


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


def preference_pairs(roles: RunRoles, cfg: Config) -> tuple[list[Trajectory], dict[str, float]]:
    """Pairs sampled from the task (with counts for the summary); an error if none."""
    pairs, extra = sample_pairs(roles, cfg)
    if not pairs:
        raise RuntimeError(
            "no preference pairs: no sampled prompt had both a correct and a wrong reply "
            f"(algo.preference.pair_prompts={cfg.algo.preference.pair_prompts}); raise it or rollout.temperature, or give task.pairs_path"
        )
    return pairs, extra


def preference_state(pairs: list[Trajectory], sampled: bool, extra: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint keeps so that a resumed run trains on the same pairs: pairs
    sampled from the task themselves, pairs from `task.pairs_path` their fingerprint."""
    return {"fingerprint": pairs_fingerprint(pairs), "pairs": pair_rows(pairs) if sampled else None, "extra": extra}


def resumed_pairs(state: dict[str, Any], given: list[Trajectory] | None, version: int) -> tuple[list[Trajectory], dict[str, Any]]:
    """The pairs checkpoint `version` trained on (and its counts), checked: a resumed run
    must train on the same pairs, in the same order, or say why it cannot."""
    if (
        set(state) != {"fingerprint", "pairs", "extra"}
        or not isinstance(state["fingerprint"], str)
        or not isinstance(state["pairs"], (list, type(None)))
        or not isinstance(state["extra"], dict)
    ):
        raise CheckpointError(f"resume: checkpoint {version}'s recipe state is not a pair-training state (fingerprint, pairs, extra)")
    if state["pairs"] is not None:
        if given is not None:
            raise CheckpointError(f"resume: checkpoint {version} trained on pairs sampled from the task; unset task.pairs_path")
        try:
            pairs = pairs_from_rows(state["pairs"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"resume: checkpoint {version}'s saved pairs are unreadable ({err!r:.200})") from err
    elif given is None:
        raise CheckpointError(f"resume: checkpoint {version} trained on task.pairs_path pairs; set task.pairs_path to that file")
    else:
        pairs = given
    if pairs_fingerprint(pairs) != state["fingerprint"]:
        raise CheckpointError(
            f"resume: task.pairs_path holds different pairs from those checkpoint {version} trained on "
            "(rows, their order or tokenisation changed); resume with the file the run started with"
        )
    return pairs, state["extra"]


def starting_pairs(
    checkpoints: RunCheckpoints, given: list[Trajectory] | None, resume_version: int | None
) -> tuple[list[Trajectory] | None, dict[str, Any]]:
    """The pairs a run starts with, checked before any role starts: those its resumed
    checkpoint trained on, else `given` (task.pairs_path), else None (sampled from the
    task once the roles run); with the counts its summary reports."""
    if resume_version is None:
        return given, {}
    return resumed_pairs(checkpoints.saved_recipe_state(resume_version), given, resume_version)


def next_version(step: int, published: int) -> int:
    """The version the weights of `step` are published as: the step, or one past the
    newest published version when a rollback already republished past it."""
    return max(step, published + 1)


def train_on_pairs(
    roles: RunRoles,
    cfg: Config,
    pairs: list[Trajectory],
    train_step: StepFn,
    publishes: bool,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    guard: Guard | None = None,
    start: RunState | None = None,
) -> tuple[TrainStats, int]:
    """Steps up to `trainer.max_steps`, each `train_step` on `algo.preference.pairs_per_step`
    of `pairs` (cycling, reshuffled each epoch; after `start`'s step when resuming, the
    batches it trained skipped). A policy (`publishes`) is published every
    `trainer.sync_every` steps, at gate steps and after the last; the `guard`
    checkpoints, gates and rolls back. Returns the counts and the weight version."""
    step, version = (start.step, start.weight_version) if start else (0, 0)
    stats = TrainStats(steps=step)
    batches = pair_batches(pairs, cfg.algo.preference.pairs_per_step, cfg.run.seed)
    for _ in range(step):  # the order the run before the checkpoint took
        next(batches)
    if guard is not None:
        guard.start(roles, step, version)
    while step < cfg.trainer.max_steps:
        step += 1
        batch = TrainBatch(next(batches), version=version, dropped_stale=0)
        num_pairs = len(batch) // 2
        spike = cfg.faults.lr_spike_step == step  # fault injection: one bad update
        lr = guard.lr if guard else cfg.trainer.lr
        if spike:
            roles.policy.set_lr(lr * cfg.faults.lr_spike_factor)
        metrics = merge_rank_metrics(train_step(batch, num_pairs))
        if spike:
            roles.policy.set_lr(lr)
        # a policy's weights get a new version when published; a reward model's (nothing
        # serves them) every step
        if not publishes or step % cfg.trainer.sync_every == 0 or step == cfg.trainer.max_steps or (guard is not None and guard.judges_at(step)):
            version = next_version(step, version)
            if publishes:
                roles.policy.publish(version)
        verdict = guard.after_step(roles, step, version, metrics) if guard else None
        if verdict is not None and verdict.action == "rollback":
            version += 1
            guard.roll_back(roles, step, version if publishes else None, verdict.reason)
            metrics["guard/rolled_back"] = 1.0
            stats.rollbacks.append({"step": step, "reason": verdict.reason})
        stats.record_step(step, num_pairs, metrics, version, on_step)
        if verdict is not None and verdict.action == "stop":
            stats.stopped = verdict.reason
            break
    return stats, version
