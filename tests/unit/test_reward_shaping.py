"""Reward shaping before the estimators (clip, batch and running normalisation), the
REINFORCE++ group-baseline estimator, and the Advantage Builder's checkpointed state
and stale_fraction metric. Plain classes: no Ray, no models."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from rlhf_platform.algos.advantages import (
    RunningRewardStats,
    reinforce_pp_advantages,
    reinforce_pp_baseline_advantages,
    shape_rewards,
)
from rlhf_platform.config import AdvantageConfig, AlgoConfig, ConfigError, KLConfig
from rlhf_platform.roles.advantage_builder import AdvantageBuilder
from rlhf_platform.types import Trajectory


def test_reward_clip_bounds_both_sides_and_leaves_the_input():
    rewards = torch.tensor([-5.0, -0.5, 0.0, 2.0, 9.0])
    assert_close(shape_rewards(rewards, clip=1.0), torch.tensor([-1.0, -0.5, 0.0, 1.0, 1.0]))
    assert rewards[0] == -5.0  # a new tensor
    assert_close(shape_rewards(rewards), rewards)  # clip None, norm none: unchanged


def test_batch_norm_by_hand_and_all_equal_gives_zeros():
    # mean 2, population std sqrt((1 + 1 + 0) / 3) = sqrt(2/3)
    std = math.sqrt(2 / 3)
    expected = torch.tensor([-1 / std, 1 / std, 0.0])
    assert_close(shape_rewards(torch.tensor([1.0, 3.0, 2.0]), norm="batch", eps=0.0), expected)
    # clip first, then whiten: [5, -5] -> [1, -1] -> [1, -1] (std 1)
    assert_close(shape_rewards(torch.tensor([5.0, -5.0]), clip=1.0, norm="batch", eps=0.0), torch.tensor([1.0, -1.0]))
    # equal rewards that are not binary fractions: zeros, not rounding noise
    assert_close(shape_rewards(torch.full((8,), 0.7), norm="batch"), torch.zeros(8))


def test_running_norm_matches_numpy_over_all_batches_and_state_round_trips():
    first, second = [1.0, 0.0, 0.0, 3.5], [2.0, -1.0, 0.25]
    stats = RunningRewardStats()
    shape_rewards(torch.tensor(first), norm="running", running=stats)
    scaled = shape_rewards(torch.tensor(second), norm="running", running=stats, eps=0.0)
    both = np.array(first + second)
    assert stats.count == 7
    assert stats.mean == pytest.approx(both.mean(), abs=1e-12)
    assert stats.std == pytest.approx(both.std(), abs=1e-12)  # population std (ddof=0)
    assert_close(scaled, torch.tensor(second) / float(both.std()))  # this batch included, no mean shift
    restored = RunningRewardStats.from_state(json.loads(json.dumps(stats.state())))
    assert restored == stats
    # one reward seen (std 0): passed unscaled, not divided by eps
    assert_close(shape_rewards(torch.tensor([4.0]), norm="running", running=RunningRewardStats()), torch.tensor([4.0]))


def test_shape_rewards_refuses_unknown_norm_and_running_without_stats():
    with pytest.raises(ValueError, match="reward_norm"):
        shape_rewards(torch.tensor([1.0]), norm="minmax")
    with pytest.raises(ValueError, match="RunningRewardStats"):
        shape_rewards(torch.tensor([1.0]), norm="running")


def test_reinforce_pp_baseline_by_hand():
    # group a: rewards 1, 0 (mean 0.5) -> 0.5, -0.5; group b: 3, 1 (mean 2) -> 1, -1
    rewards = torch.tensor([1.0, 3.0, 0.0, 1.0])
    groups = ["a", "b", "a", "b"]
    mask = torch.tensor([[1, 1], [1, 1], [1, 0], [1, 1]])
    # gamma 0.5, reward on the last valid token: returns [0.25, 0.5], [0.5, 1], [-0.5, pad], [-0.5, -1]
    returns = [0.25, 0.5, 0.5, 1.0, -0.5, -0.5, -1.0]
    mean = sum(returns) / 7  # 0.25 / 7
    std = math.sqrt(sum((g - mean) ** 2 for g in returns) / 7)
    w = lambda g: (g - mean) / std  # noqa: E731
    expected = torch.tensor([[w(0.25), w(0.5)], [w(0.5), w(1.0)], [w(-0.5), 0.0], [w(-0.5), w(-1.0)]])
    assert_close(reinforce_pp_baseline_advantages(rewards, groups, mask, gamma=0.5, eps=0.0), expected)
    # it is REINFORCE++ on the group-centred rewards (with the KL penalty passed through)
    kl = torch.full((4, 2), 0.1)
    centred = torch.tensor([0.5, 1.0, -0.5, -1.0])
    assert_close(
        reinforce_pp_baseline_advantages(rewards, groups, mask, kl, 0.5, gamma=0.5),
        reinforce_pp_advantages(centred, mask, kl, 0.5, gamma=0.5),
    )


def test_builder_runs_reinforce_pp_baseline_on_shaped_rewards():
    algo = AlgoConfig(advantage=AdvantageConfig(estimator="reinforce_pp_baseline", reward_clip=1.0))
    trajs = [Trajectory("p", g, [1], [3, 4], [-0.5] * 2, 0, "stop", reward=r) for g, r in (("a", 5.0), ("a", 0.0), ("b", 1.0), ("b", 1.0))]
    batch = AdvantageBuilder(0, algo).build(trajs, 0)
    # clipped to 1, 0 | 1, 1 -> centred 0.5, -0.5 | 0, 0 (returns, gamma 1); mean 0, std sqrt(0.25 * 4 / 8)
    got = [t.token_advantages for t in batch.trajectories]
    root2 = pytest.approx([2**0.5] * 2, abs=1e-4)  # norm_eps 1e-6 in the denominator
    assert got == [root2, [-a for a in got[0]], [0.0, 0.0], [0.0, 0.0]]
    assert batch.metrics["reward_mean"] == pytest.approx(1.75)  # the raw task rewards


def _kl_sample(ref=(-1.5, -1.0)) -> Trajectory:
    t = Trajectory("p", "g", [1, 2], [3, 4], [-1.0, -1.0], 0, "stop", reward=1.0)
    t.ref_logprobs = list(ref)
    return t


def test_builder_state_round_trips_the_adaptive_kl_coef_and_reward_moments():
    algo = AlgoConfig(
        advantage=AdvantageConfig(estimator="reinforce_pp", reward_norm="running"),
        kl=KLConfig(mode="reward", coef=0.1, estimator="k1", target=0.25, horizon=10),
    )
    builder = AdvantageBuilder(0, algo)
    builder.build([_kl_sample(), _kl_sample()], 0)  # KL 0.5 per sequence = 2x the target: coef up
    assert builder.kl.coef == pytest.approx(0.1 * (1 + 0.2 * 2 / 10))
    state = json.loads(json.dumps(builder.get_state()))  # as the checkpoint writes it
    fresh = AdvantageBuilder(0, algo)
    assert fresh.kl.coef == 0.1
    fresh.load_state(state)
    assert fresh.kl.coef == builder.kl.coef and fresh.reward_stats == builder.reward_stats
    assert fresh.reward_stats.count == 2
    # the restored builder goes on from there, exactly like the original
    a, b = builder.build([_kl_sample()], 0), fresh.build([_kl_sample()], 0)
    assert a.metrics["kl_coef"] == b.metrics["kl_coef"] and builder.kl.coef == fresh.kl.coef
    # a fixed controller keeps this run's coefficient (a resume may change it, or turn it off)
    for coef in (0.05, 0.0):
        fixed = AdvantageBuilder(0, AlgoConfig(advantage=AdvantageConfig(estimator="reinforce_pp"), kl=KLConfig(mode="reward", coef=coef)))
        fixed.load_state(state)
        assert fixed.kl.coef == coef


def test_a_non_finite_reward_does_not_poison_the_running_moments():
    stats = RunningRewardStats()
    stats.update(torch.tensor([1.0, float("inf"), 3.0, float("nan")]))
    assert stats.count == 2 and stats.mean == 2.0 and stats.std == pytest.approx(1.0)


def test_builder_stale_fraction_counts_samples_older_than_the_current_weights():
    trajs = [Trajectory("p", "g", [1], [3], [-0.5], v, "stop", reward=float(v % 2)) for v in (1, 2, 3, 3, 0)]
    batch = AdvantageBuilder(max_lag=2).build(trajs, current_version=3)  # version 0 is dropped (lag 3)
    assert batch.dropped_stale == 1
    assert batch.metrics["stale_fraction"] == pytest.approx(2 / 4)  # versions 1, 2 of 1, 2, 3, 3
    assert batch.metrics["staleness_mean"] == pytest.approx((2 + 1 + 0 + 0) / 4)


@pytest.mark.parametrize(
    "advantage, key",
    [
        (AdvantageConfig(reward_norm="minmax"), "algo.advantage.reward_norm"),
        (AdvantageConfig(reward_clip=0.0), "algo.advantage.reward_clip"),
        (AdvantageConfig(reward_clip=-1.0), "algo.advantage.reward_clip"),
    ],
)
def test_config_names_the_reward_shaping_key(advantage, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        AlgoConfig(advantage=advantage).validate()


def test_config_accepts_the_reward_shaping_settings():
    for norm in ("none", "batch", "running"):
        AlgoConfig(advantage=AdvantageConfig(estimator="reinforce_pp_baseline", reward_norm=norm, reward_clip=5.0)).validate()
    AlgoConfig(advantage=AdvantageConfig(estimator="reinforce_pp_baseline"), kl=KLConfig(mode="reward", coef=0.1)).validate()


class _NoModels:
    """A stand-in for the trainer rank group: no weights to save or load."""

    def start(self, method: str, path: str) -> list:
        return []

    def publish(self, version: int) -> None:
        self.published = version


def _roles(with_builder: bool = True):
    from rlhf_platform.recipes.run_roles import RunRoles
    from rlhf_platform.roles.inprocess import InProcessExecutor
    from rlhf_platform.roles.prompt_queue import PromptQueue
    from rlhf_platform.types import Prompt

    algo = AlgoConfig(
        advantage=AdvantageConfig(estimator="reinforce_pp", reward_norm="running"),
        kl=KLConfig(mode="reward", coef=0.1, estimator="k1", target=0.25, horizon=10),
    )
    executor = InProcessExecutor()
    queue = executor.start_role(PromptQueue, "prompt-queue", [Prompt("q", "q", (1,), "a")])
    builder = executor.start_role(AdvantageBuilder, "advantage-builder", 0, algo) if with_builder else None
    return RunRoles(executor, None, queue, [], None, None, builder, _NoModels())


def test_checkpoint_saves_and_restores_the_builder_state_and_skips_it_when_absent(tmp_path):
    from rlhf_platform.config import CheckpointConfig, Config
    from rlhf_platform.recipes.checkpointing import BUILDER_STATE, RunCheckpoints
    from rlhf_platform.registry import SQLiteRegistry

    cfg = Config(checkpoint=CheckpointConfig(every=1, keep_last=5))
    checkpoints = RunCheckpoints(cfg, tmp_path / "run", SQLiteRegistry(tmp_path / "run"))
    roles = _roles()
    roles.builder.build([_kl_sample(), _kl_sample()], 0).result()
    saved = roles.builder.get_state().result()
    record = checkpoints.save(roles, step=1, weight_version=1, metrics={})
    assert json.loads((tmp_path / "run" / "checkpoints" / "step000001-w000001" / BUILDER_STATE).read_text()) == saved
    fresh = _roles()
    checkpoints.restore(fresh, record.id)
    assert fresh.builder.get_state().result() == saved and saved["kl_coef"] == pytest.approx(0.104)
    # a checkpoint without the file (written before it existed): the builder keeps its own state
    older = checkpoints.save(_roles(with_builder=False), step=2, weight_version=2, metrics={})
    untouched = _roles()
    checkpoints.restore(untouched, older.id)
    assert untouched.builder.get_state().result()["kl_coef"] == 0.1
