"""The eval gate's rule: does a candidate's held-out result pass against the champion's?

`gate_failures` compares a candidate's held-out results with the champion's (the
newest promoted version) under the configured gates. It is pure, so the recipe
decides what to do (promote, reject, roll back).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from rlhf_platform.config import GateConfig

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

    @classmethod
    def from_eval(cls, record: dict[str, Any]) -> "GateMetrics":
        """The gate's figures of a registry eval record (which may hold more: a reward
        model's records also keep its score margin)."""
        return cls(**{f.name: record[f.name] for f in fields(cls) if f.name in record})


def gate_failures(candidate: GateMetrics, champion: GateMetrics, cfg: GateConfig) -> list[str]:
    """The gates `candidate` fails against `champion` (empty: it passes)."""
    failures = []
    if math.isnan(candidate.accuracy) and not math.isnan(champion.accuracy):
        failures.append(f"accuracy is not defined (no answer could be checked) vs champion {champion.accuracy:.3f}")
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
