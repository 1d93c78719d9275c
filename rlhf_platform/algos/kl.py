"""KL between the policy and the reference: per-token estimators (Schulman's k1, k2, k3),
the KL-as-loss term, and controllers for the KL coefficient."""
from __future__ import annotations

import torch

from rlhf_platform.algos.losses import aggregate


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled-token logprobs.

    k1 = log r, k2 = (log r)^2 / 2, k3 = exp(-log r) - 1 + log r, with log r = logp - ref_logp.
    k3 is unbiased and never negative.
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    if estimator == "k3":
        return torch.exp(-log_ratio) - 1.0 + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; choose k1, k2 or k3")


def kl_penalty_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    estimator: str = "k3",
    loss_agg: str = "token_mean",
    denominator: float | None = None,
    constant: float | None = None,
) -> torch.Tensor:
    """KL to the reference as a loss term (GRPO style), aggregated like the policy loss.

    Multiply by the KL coefficient and add to the loss. The other form, KL as a
    per-token reward penalty, is `advantages.token_rewards`.
    """
    return aggregate(kl_estimate(logprobs, ref_logprobs, estimator), mask, loss_agg, denominator, constant)


class FixedKLController:
    """A constant KL coefficient, with the same interface as AdaptiveKLController."""

    def __init__(self, coef: float) -> None:
        self.coef = coef

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.coef


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019): steer the measured KL towards `target`.

    error = clip(current_kl / target - 1, -0.2, 0.2); coef *= 1 + error * n_steps / horizon.
    `n_steps` is how many samples (or steps) the KL was measured over, `horizon` sets
    how fast the coefficient moves.
    """

    def __init__(self, init_coef: float, target: float, horizon: float) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be positive, got {target} and {horizon}")
        self.coef = init_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.coef *= 1.0 + error * n_steps / self.horizon
        return self.coef
