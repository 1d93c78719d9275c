import pytest

from rlhf_platform.freshness import split_by_freshness
from rlhf_platform.roles.advantage_builder import AdvantageBuilder
from rlhf_platform.types import Trajectory


def traj(version, group="g", reward=1.0):
    return Trajectory("p", group, [1, 2], [3], [-0.5], version, "stop", reward=reward)


def test_freshness_bounds():
    trajs = [traj(v) for v in (0, 1, 2, 3)]
    fresh, stale = split_by_freshness(trajs, current_version=3, max_lag=0)
    assert [t.weight_version for t in fresh] == [3] and len(stale) == 3
    fresh, stale = split_by_freshness(trajs, current_version=3, max_lag=1)
    assert [t.weight_version for t in fresh] == [2, 3]


def test_builder_counts_dropped_and_sets_advantages():
    builder = AdvantageBuilder(max_lag=1)
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
    from rlhf_platform.config import AdvantageConfig, AlgoConfig, DAPOConfig, KLConfig

    def advantages(name):
        builder = AdvantageBuilder(max_lag=0, algo=AlgoConfig(advantage=AdvantageConfig(estimator=name)))
        batch = builder.build(_group("a", [1.0, 0.0, 0.0, 0.0]), current_version=0)
        # one value per sample (REINFORCE++ is per token: with gamma=1 every token has its sequence's)
        return pytest.approx([t.advantage if t.advantage is not None else t.token_advantages[0] for t in batch.trajectories], abs=1e-4)

    # mean 0.25; unbiased std sqrt(0.25 * 4/3 * 0.75) = 0.5
    assert [1.5, -0.5, -0.5, -0.5] == advantages("group_norm")
    assert [0.75, -0.25, -0.25, -0.25] == advantages("dr_grpo")
    # leave-one-out baselines: 0 for the first, 1/3 for the others
    assert [1.0, -1 / 3, -1 / 3, -1 / 3] == advantages("rloo")
    # batch-whitened with the population std sqrt(0.1875) = 0.4330
    assert [3**0.5, -(3**-0.5), -(3**-0.5), -(3**-0.5)] == advantages("reinforce_pp")


def test_builder_overlong_penalty_shapes_advantages_not_the_reported_reward():
    from rlhf_platform.config import AdvantageConfig, AlgoConfig, DAPOConfig, KLConfig

    algo = AlgoConfig(dapo=DAPOConfig(overlong_buffer=4, overlong_penalty=1.0))
    builder = AdvantageBuilder(max_lag=0, algo=algo, max_new_tokens=8)
    # lengths 4 (no penalty), 6 (-0.5), 8 (-1.0); all correct
    batch = builder.build(_group("a", [1.0, 1.0, 1.0], [4, 6, 8]), current_version=0)
    assert [t.reward_info["overlong_penalty"] for t in batch.trajectories] == [0.0, -0.5, -1.0]
    assert batch.metrics["reward_mean"] == 1.0
    adv = [t.advantage for t in batch.trajectories]
    assert adv[0] > 0 and adv[2] < 0 and abs(adv[1]) < 1e-6  # shaped rewards 1, 0.5, 0


def test_builder_dynamic_sampling_drops_uniform_groups():
    from rlhf_platform.config import AdvantageConfig, AlgoConfig, DAPOConfig, KLConfig

    builder = AdvantageBuilder(max_lag=0, algo=AlgoConfig(dapo=DAPOConfig(dynamic_sampling=True)))
    trajs = _group("all-right", [1.0, 1.0]) + _group("mixed", [1.0, 0.0]) + _group("all-wrong", [0.0, 0.0])
    batch = builder.build(trajs, current_version=0)
    assert {t.group_id for t in batch.trajectories} == {"mixed"}
    assert batch.metrics["dropped_uniform_groups"] == 2 and builder.dropped_uniform_groups_total == 2


def _ppo_sample(values=(0.5, 0.5), ref=(-1.5, -1.0)) -> Trajectory:
    t = Trajectory("p", "g", [1, 2], [3, 4], [-1.0, -1.0], 0, "stop", reward=1.0)
    t.values, t.ref_logprobs = list(values), list(ref)
    return t


def test_builder_gae_by_hand_without_and_with_kl_reward():
    from rlhf_platform.config import AdvantageConfig, AlgoConfig, DAPOConfig, KLConfig

    # No KL: token rewards [0, 1]; delta = [0 + 0.5 - 0.5, 1 - 0.5] = [0, 0.5]; lambda=1 -> A = [0.5, 0.5]
    algo = AlgoConfig(name="ppo", advantage=AdvantageConfig(estimator="gae", lam=1.0, whiten=False))
    (t,) = AdvantageBuilder(0, algo).build([_ppo_sample()], 0).trajectories
    assert t.token_advantages == pytest.approx([0.5, 0.5]) and t.returns == pytest.approx([1.0, 1.0])
    # KL as reward: k1 = behaviour - ref = [0.5, 0] -> token rewards [-0.05, 1]; A = [0.45, 0.5]
    algo = AlgoConfig(name="ppo", advantage=AdvantageConfig(estimator="gae", lam=1.0, whiten=False), kl=KLConfig(mode="reward", coef=0.1, estimator="k1"))
    batch = AdvantageBuilder(0, algo).build([_ppo_sample()], 0)
    (t,) = batch.trajectories
    assert t.token_advantages == pytest.approx([0.45, 0.5]) and t.returns == pytest.approx([0.95, 1.0])
    assert batch.metrics["kl_ref_per_sequence"] == pytest.approx(0.5) and batch.metrics["kl_coef"] == pytest.approx(0.1)


def test_builder_adaptive_kl_moves_the_coefficient_towards_the_target():
    from rlhf_platform.config import AdvantageConfig, AlgoConfig, DAPOConfig, KLConfig

    algo = AlgoConfig(name="ppo", advantage=AdvantageConfig(estimator="gae"), kl=KLConfig(mode="reward", coef=0.1, estimator="k1", target=0.25, horizon=10))
    builder = AdvantageBuilder(0, algo)
    builder.build([_ppo_sample()], 0)  # KL 0.5 = 2x the target: error clipped to 0.2
    assert builder.kl.coef == pytest.approx(0.1 * (1 + 0.2 * 1 / 10))
    batch = builder.build([_ppo_sample(ref=(-1.0, -1.0))], 0)  # KL 0: error -0.2
    assert batch.metrics["kl_coef"] == pytest.approx(0.102)
    assert builder.kl.coef == pytest.approx(0.102 * (1 - 0.2 / 10))


def test_builder_gae_whitens_and_names_missing_values():
    from rlhf_platform.config import AdvantageConfig, AlgoConfig, DAPOConfig, KLConfig

    algo = AlgoConfig(name="ppo", advantage=AdvantageConfig(estimator="gae"))
    samples = [_ppo_sample(values=(0.0, 0.0)), _ppo_sample(values=(0.9, 0.9))]
    advantages = [a for t in AdvantageBuilder(0, algo).build(samples, 0).trajectories for a in t.token_advantages]
    assert sum(advantages) == pytest.approx(0.0, abs=1e-6)
    assert sum(a * a for a in advantages) / len(advantages) == pytest.approx(1.0, abs=1e-4)
    bare = _ppo_sample()
    bare.values = None
    with pytest.raises(ValueError, match="no values.*Critic"):
        AdvantageBuilder(0, algo).build([bare], 0)


def test_reinforce_pp_discounts_with_gamma_on_the_default_kl_loss_path():
    """algo.advantage.gamma was ignored for REINFORCE++ unless kl.mode=reward."""
    from rlhf_platform.config import AdvantageConfig, AlgoConfig

    def token_advantages(gamma):
        algo = AlgoConfig(advantage=AdvantageConfig(estimator="reinforce_pp", gamma=gamma))
        trajs = [Trajectory("p", "a", [1, 2], [3, 4, 5], [-0.5] * 3, 0, "stop", reward=r) for r in (1.0, 0.0)]
        return [t.token_advantages for t in AdvantageBuilder(max_lag=0, algo=algo).build(trajs, current_version=0).trajectories]

    flat = token_advantages(1.0)
    assert flat[0][0] == pytest.approx(flat[0][2]) and flat[0][0] > 0 > flat[1][0]
    discounted = token_advantages(0.5)[0]  # returns 0.25, 0.5, 1 on the rewarded reply, then whitened
    assert discounted[0] < discounted[1] < discounted[2]
