"""The eval gate's decisions and the divergence watch, on hand-made numbers."""
from __future__ import annotations

import math

from rlhf_platform.config import GateConfig
from rlhf_platform.divergence import DivergenceWatch
from rlhf_platform.gate import GateMetrics, gate_failures

CHAMPION = GateMetrics(accuracy=0.50, response_length=10.0, reward=0.5, kl=0.01, entropy=0.8)


def test_gate_passes_within_tolerance_and_names_each_failure():
    cfg = GateConfig(accuracy_tolerance=0.02, reward_tolerance=0.1, max_kl=0.1, min_entropy=0.2, max_length_drift=0.5)
    assert gate_failures(GateMetrics(0.48, 12.0, 0.45, 0.05, 0.5), CHAMPION, cfg) == []
    failures = gate_failures(GateMetrics(0.47, 16.0, 0.3, 0.2, 0.1), CHAMPION, cfg)
    assert len(failures) == 5
    assert failures[0] == "accuracy 0.470 < champion 0.500 - 0.02"
    assert failures[1] == "mean reward 0.300 < champion 0.500 - 0.1"
    assert "gate.max_kl 0.1" in failures[2] and "gate.min_entropy 0.2" in failures[3]
    assert "drifted 60%" in failures[4]


def test_gates_that_are_off_or_unmeasured_do_not_fail():
    cfg = GateConfig(max_kl=None, min_entropy=None, max_length_drift=None)
    assert gate_failures(GateMetrics(0.5, 100.0, 0.0, 9.0, 0.0), CHAMPION, cfg) == []
    unmeasured = GateConfig(reward_tolerance=0.0, max_kl=0.1, min_entropy=0.1)
    assert gate_failures(GateMetrics(0.5, 10.0, None, None, None), CHAMPION, unmeasured) == []


def test_watch_catches_non_finite_loss_and_kl_explosion():
    watch = DivergenceWatch(GateConfig(divergence_max_kl=1.0))
    assert watch.check({"train/loss": 0.3, "train/grad_norm": 2.0, "train/kl_ref": 0.01}) is None
    assert "train/loss is nan" in watch.check({"train/loss": math.nan})
    assert "train/grad_norm is inf" in watch.check({"train/loss": 0.1, "train/grad_norm": math.inf})
    # reward mode reports train/kl_ref = 0 and the rollout KL: the larger counts
    reason = watch.check({"train/loss": 0.1, "train/kl_ref": 0.0, "rollout/kl_ref_per_token": 3.0})
    assert reason.startswith("KL to reference exploded: 3 > gate.divergence_max_kl 1.0")


def test_watch_catches_reward_collapse_only_after_a_baseline():
    watch = DivergenceWatch(GateConfig(divergence_reward_window=3, divergence_reward_drop=0.5))
    for reward in (0.6, 0.62, 0.58):
        assert watch.check({"rollout/reward_mean": reward}) is None
    assert watch.check({"rollout/reward_mean": 0.35}) is None  # above half of 0.6
    reason = watch.check({"rollout/reward_mean": 0.1})
    assert reason.startswith("reward collapsed: 0.100 <")
    low = DivergenceWatch(GateConfig(divergence_reward_window=2, divergence_reward_min_baseline=0.05))
    for reward in (0.02, 0.03, 0.0):  # a model that never earned reward has nothing to collapse
        assert low.check({"rollout/reward_mean": reward}) is None


def test_watch_catches_entropy_collapse_and_reports_recent_means():
    watch = DivergenceWatch(GateConfig(divergence_min_entropy=0.05))
    assert watch.check({"train/entropy": 0.5, "train/kl_ref": 0.02}) is None
    assert watch.check({"train/entropy": 0.3, "train/kl_ref": 0.04}) is None
    kl, entropy = watch.recent()
    assert math.isclose(kl, 0.03) and math.isclose(entropy, 0.4)
    assert watch.recent() == (None, None)
    assert "entropy collapsed" in watch.check({"train/entropy": 0.01})
