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
