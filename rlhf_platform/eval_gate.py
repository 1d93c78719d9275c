"""The eval gate and the divergence watch: what decides that an update is bad.

`gate_failures` compares a candidate's held-out results with the champion's (the
newest promoted version) under the configured gates. `DivergenceWatch` reads every
step's training metrics for the failures users meet between evals: a non-finite
loss or gradient, KL to the reference exploding, the reward collapsing, the entropy
collapsing. Both are pure, so the recipe decides what to do (promote, reject, roll back).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field

from rlhf_platform.config import GateConfig

KL_KEYS = ("train/kl_ref", "rollout/kl_ref_per_token")  # per-token KL to the reference: loss mode, reward mode


@dataclass
class GateMetrics:
    """A version's held-out results and its recent training statistics."""

    accuracy: float
    response_length: float
    reward: float | None = None  # mean reward of the held-out answers under the run's reward functions
    kl: float | None = None  # mean KL to the reference over the steps since the last gate
    entropy: float | None = None  # mean token entropy over the same steps

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


def gate_failures(candidate: GateMetrics, champion: GateMetrics, cfg: GateConfig) -> list[str]:
    """The gates `candidate` fails against `champion` (empty: it passes)."""
    failures = []
    if candidate.accuracy < champion.accuracy - cfg.accuracy_tolerance:
        failures.append(
            f"accuracy {candidate.accuracy:.3f} < champion {champion.accuracy:.3f} - {cfg.accuracy_tolerance}"
        )
    if cfg.reward_tolerance is not None and None not in (candidate.reward, champion.reward):
        if candidate.reward < champion.reward - cfg.reward_tolerance:
            failures.append(
                f"mean reward {candidate.reward:.3f} < champion {champion.reward:.3f} - {cfg.reward_tolerance}"
            )
    if cfg.max_kl is not None and candidate.kl is not None and candidate.kl > cfg.max_kl:
        failures.append(f"KL to reference {candidate.kl:.4f} > gate.max_kl {cfg.max_kl}")
    if cfg.min_entropy is not None and candidate.entropy is not None and candidate.entropy < cfg.min_entropy:
        failures.append(f"entropy {candidate.entropy:.4f} < gate.min_entropy {cfg.min_entropy}")
    if cfg.max_length_drift is not None and champion.response_length > 0:
        drift = abs(candidate.response_length / champion.response_length - 1.0)
        if drift > cfg.max_length_drift:
            failures.append(
                f"reply length {candidate.response_length:.1f} drifted {100 * drift:.0f}% from the champion's "
                f"{champion.response_length:.1f} (gate.max_length_drift {cfg.max_length_drift})"
            )
    return failures


@dataclass
class DivergenceWatch:
    """Per-step checks; `check` returns why training diverged, or None."""

    cfg: GateConfig
    rewards: deque = field(default_factory=lambda: deque(maxlen=8))
    kls: list[float] = field(default_factory=list)  # since the last gate, for GateMetrics
    entropies: list[float] = field(default_factory=list)

    def check(self, metrics: dict[str, float]) -> str | None:
        for key in ("train/loss", "train/grad_norm", "critic/loss"):
            if key in metrics and not math.isfinite(metrics[key]):
                return f"{key} is {metrics[key]} (non-finite)"
        kl = max((metrics[k] for k in KL_KEYS if k in metrics), default=None)
        if kl is not None:
            self.kls.append(kl)
            if kl > self.cfg.divergence_max_kl:
                return f"KL to reference exploded: {kl:.4g} > gate.divergence_max_kl {self.cfg.divergence_max_kl}"
        entropy = metrics.get("train/entropy")
        if entropy is not None:
            self.entropies.append(entropy)
            if entropy < self.cfg.divergence_min_entropy:
                return f"entropy collapsed: {entropy:.4g} < gate.divergence_min_entropy {self.cfg.divergence_min_entropy}"
        reward = metrics.get("rollout/reward_mean")
        if reward is not None:
            window = self.cfg.divergence_reward_window
            if len(self.rewards) >= window:
                recent = list(self.rewards)[-window:]
                baseline = sum(recent) / len(recent)
                floor = baseline * (1.0 - self.cfg.divergence_reward_drop)
                if baseline > self.cfg.divergence_reward_min_baseline and reward < floor:
                    return (
                        f"reward collapsed: {reward:.3f} < {floor:.3f} ({100 * self.cfg.divergence_reward_drop:.0f}% "
                        f"below the mean {baseline:.3f} of the last {window} steps)"
                    )
            self.rewards.append(reward)
        return None

    def recent(self) -> tuple[float | None, float | None]:
        """Mean KL and entropy since the last call (a gate), then start afresh."""
        mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
        out = (mean(self.kls), mean(self.entropies))
        self.kls, self.entropies = [], []
        return out

    def reset(self) -> None:
        """After a rollback: forget the diverged steps."""
        self.rewards.clear()
        self.kls, self.entropies = [], []
