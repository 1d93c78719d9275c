import math

import pytest
import torch

from rlhf_platform.algos.advantages import group_normalized_advantages
from rlhf_platform.algos.importance import importance_weights
from rlhf_platform.algos.kl import kl_estimate
from rlhf_platform.algos.losses import aggregate, clipped_policy_loss


def test_group_norm_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 5.0])
    groups = ["a", "a", "a", "a", "b", "b", "c"]
    adv = group_normalized_advantages(rewards, groups, eps=0.0)
    # group a: mean 0.25, sample std sqrt(0.25) = 0.5
    assert adv[:4].tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5])
    # all-equal group and group of size 1 carry no signal
    assert adv[4:].tolist() == [0.0, 0.0, 0.0]


def test_group_norm_rejects_mismatched_ids():
    with pytest.raises(ValueError, match="group ids"):
        group_normalized_advantages(torch.tensor([1.0, 2.0]), ["a"])


def test_kl_estimators_by_hand():
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    log_r = math.log(2.0)
    assert kl_estimate(lp, ref, "k1").item() == pytest.approx(log_r)
    assert kl_estimate(lp, ref, "k2").item() == pytest.approx(0.5 * log_r**2)
    assert kl_estimate(lp, ref, "k3").item() == pytest.approx(0.5 - 1 + log_r)
    with pytest.raises(ValueError):
        kl_estimate(lp, ref, "k4")


def test_aggregate_modes_and_padding():
    values = torch.tensor([[1.0, 3.0, 100.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert aggregate(values, mask, "token_mean").item() == pytest.approx(2.0)  # (1+3+2)/3
    assert aggregate(values, mask, "seq_mean_token_mean").item() == pytest.approx(2.0)  # (2+2)/2
    assert aggregate(values, mask, "token_mean", denominator=6).item() == pytest.approx(1.0)
    empty = torch.zeros(1, 3)
    assert aggregate(values[:1], empty, "token_mean").item() == 0.0  # zero-length response


def test_clipped_loss_by_hand():
    # ratio exp(0.5)=1.6487 > 1+0.2 with positive advantage: clipped at 1.2
    lp = torch.tensor([[0.5, 0.0]])
    old = torch.zeros(1, 2)
    adv = torch.tensor([[1.0, -1.0]])
    mask = torch.ones(1, 2)
    out = clipped_policy_loss(lp, old, adv, mask, 0.2, 0.2)
    assert out.loss.item() == pytest.approx((-1.2 + 1.0) / 2)
    assert out.clip_fraction.item() == pytest.approx(0.5)
    # clip-higher: eps_high 0.7 lets the ratio through
    out = clipped_policy_loss(lp, old, adv, mask, 0.2, 0.7)
    assert out.loss.item() == pytest.approx((-math.exp(0.5) + 1.0) / 2)


def test_truncated_importance_weight():
    lp = torch.zeros(1, 2, requires_grad=True)
    behaviour = torch.tensor([[math.log(0.25), 0.0]])  # old/behaviour ratio 4 and 1
    weights = importance_weights(lp, behaviour, torch.ones(1, 2), "token", "truncate", cap=2.0)
    out = clipped_policy_loss(lp, lp.detach(), torch.ones(1, 2), torch.ones(1, 2), is_weights=weights.weights)
    assert weights.weight_mean.item() == pytest.approx(1.5)  # min(4, 2) and 1
    assert weights.ratio_mean.item() == pytest.approx(2.5) and weights.ratio_max.item() == pytest.approx(4.0)
    assert out.loss.item() == pytest.approx(-(2.0 + 1.0) / 2)
    out.loss.backward()
    assert lp.grad[0].tolist() == pytest.approx([-1.0, -0.5])
