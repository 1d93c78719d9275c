import pytest

from rlhf_platform.freshness import split_by_freshness
from rlhf_platform.roles.advantage_builder import AdvantageBuilder
from rlhf_platform.types import Trajectory


def traj(version, group="g", reward=1.0):
    return Trajectory("p", group, [1, 2], [3], [-0.5], version, "stop", reward=reward)


def test_freshness_bounds():
    trajs = [traj(v) for v in (0, 1, 2, 3)]
    fresh, stale = split_by_freshness(trajs, current_version=3, max_staleness=0)
    assert [t.weight_version for t in fresh] == [3] and len(stale) == 3
    fresh, stale = split_by_freshness(trajs, current_version=3, max_staleness=1)
    assert [t.weight_version for t in fresh] == [2, 3]


def test_builder_counts_dropped_and_sets_advantages():
    builder = AdvantageBuilder(max_staleness=1)
    trajs = [traj(0, "old"), traj(2, "a", 1.0), traj(2, "a", 0.0)]
    batch = builder.build(trajs, current_version=2)
    assert batch.dropped_stale == 1 and builder.dropped_stale_total == 1
    assert [t.group_id for t in batch.trajectories] == ["a", "a"]
    assert batch.trajectories[0].advantage > 0 > batch.trajectories[1].advantage


def _group(prompt: str, rewards: list[float], lengths: list[int] | None = None) -> list[Trajectory]:
    lengths = lengths or [1] * len(rewards)
    return [
        Trajectory(prompt, prompt, [1, 2], [3] * n, [-0.5] * n, 0, "stop", reward=r)
        for r, n in zip(rewards, lengths)
    ]


def test_builder_advantage_estimators():
    from rlhf_platform.config import AlgoConfig

    def advantages(name):
        builder = AdvantageBuilder(max_staleness=0, algo=AlgoConfig(advantage=name))
        batch = builder.build(_group("a", [1.0, 0.0, 0.0, 0.0]), current_version=0)
        return pytest.approx([t.advantage for t in batch.trajectories], abs=1e-4)

    # mean 0.25; unbiased std sqrt(0.25 * 4/3 * 0.75) = 0.5
    assert [1.5, -0.5, -0.5, -0.5] == advantages("group_norm")
    assert [0.75, -0.25, -0.25, -0.25] == advantages("dr_grpo")
    # leave-one-out baselines: 0 for the first, 1/3 for the others
    assert [1.0, -1 / 3, -1 / 3, -1 / 3] == advantages("rloo")
    # batch-whitened with the population std sqrt(0.1875) = 0.4330
    assert [3**0.5, -(3**-0.5), -(3**-0.5), -(3**-0.5)] == advantages("reinforce_pp")


def test_builder_overlong_penalty_shapes_advantages_not_the_reported_reward():
    from rlhf_platform.config import AlgoConfig

    algo = AlgoConfig(overlong_buffer=4, overlong_penalty=1.0)
    builder = AdvantageBuilder(max_staleness=0, algo=algo, max_new_tokens=8)
    # lengths 4 (no penalty), 6 (-0.5), 8 (-1.0); all correct
    batch = builder.build(_group("a", [1.0, 1.0, 1.0], [4, 6, 8]), current_version=0)
    assert [t.reward_info["overlong_penalty"] for t in batch.trajectories] == [0.0, -0.5, -1.0]
    assert batch.metrics["reward_mean"] == 1.0
    adv = [t.advantage for t in batch.trajectories]
    assert adv[0] > 0 and adv[2] < 0 and abs(adv[1]) < 1e-6  # shaped rewards 1, 0.5, 0


def test_builder_dynamic_sampling_drops_uniform_groups():
    from rlhf_platform.config import AlgoConfig

    builder = AdvantageBuilder(max_staleness=0, algo=AlgoConfig(dynamic_sampling=True))
    trajs = _group("all-right", [1.0, 1.0]) + _group("mixed", [1.0, 0.0]) + _group("all-wrong", [0.0, 0.0])
    batch = builder.build(trajs, current_version=0)
    assert {t.group_id for t in batch.trajectories} == {"mixed"}
    assert batch.metrics["dropped_uniform_groups"] == 2 and builder.dropped_uniform_groups_total == 2
