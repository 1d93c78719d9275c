"""The divergence watch: failures users meet between evals, read from every step's
training metrics (a non-finite loss or gradient, KL to the reference exploding, the
reward collapsing, the entropy collapsing). Pure, so the recipe decides what to do."""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from rlhf_platform.config import GateConfig

KL_KEYS = ("train/kl_ref", "rollout/kl_ref_per_token")  # per-token KL to the reference: loss mode, reward mode


@dataclass
class DivergenceWatch:
    """Per-step checks; `check` returns why training diverged, or None."""

    cfg: GateConfig
    rewards: deque = field(init=False)  # the last gate.divergence_reward_window steps' rewards
    kls: list[float] = field(default_factory=list)  # since the last gate, for GateMetrics
    entropies: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rewards = deque(maxlen=self.cfg.divergence_reward_window)

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
