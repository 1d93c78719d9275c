import math

import pytest
import torch
from torch.testing import assert_close

from rlhf_platform.algos.dapo import filter_uniform_groups, overlong_penalty
from rlhf_platform.algos.kl import AdaptiveKLController, FixedKLController, kl_penalty_loss


def test_overlong_penalty_soft_ramp():
    # max_len 16, buffer 4: no penalty up to 12, then (12 - len)/4, -1 at 16 and beyond
    lengths = [10, 12, 13, 14, 16, 17, 20]
    expected = torch.tensor([0.0, 0.0, (12 - 13) / 4, (12 - 14) / 4, -1.0, -1.0, -1.0])
    assert_close(overlong_penalty(lengths, max_len=16, buffer=4), expected)
    assert_close(overlong_penalty(torch.tensor(lengths), 16, 4), expected)


def test_overlong_penalty_hard_form_and_bad_buffer():
    assert_close(overlong_penalty([0, 16, 17], max_len=16, buffer=0), torch.tensor([0.0, 0.0, -1.0]))
    with pytest.raises(ValueError, match="buffer"):
        overlong_penalty([1], max_len=4, buffer=5)


def test_filter_uniform_groups():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.5, 0.3, 0.3 + 1e-9, 2.0, 0.0, 2.0])
    groups = ["p1", "p1", "p2", "p2", "p3", "p4", "p4", "p5", "p5", "p5"]
    out = filter_uniform_groups(rewards, groups)
    # p1 varies (kept), p2 all equal, p3 size 1, p4 equal within tol (dropped), p5 varies (kept)
    assert_close(out.kept, torch.tensor([0, 1, 7, 8, 9]))
    assert (out.dropped_groups, out.kept_groups) == (3, 2)


def test_filter_uniform_groups_interleaved_and_all_dropped():
    out = filter_uniform_groups(torch.tensor([1.0, 1.0, 0.0, 1.0]), ["a", "b", "a", "b"])
    assert_close(out.kept, torch.tensor([0, 2]))  # a varies; b is all 1
    assert (out.dropped_groups, out.kept_groups) == (1, 1)
    out = filter_uniform_groups(torch.tensor([0.0, 0.0]), ["a", "a"])
    assert out.kept.numel() == 0 and out.dropped_groups == 1


def test_adaptive_kl_controller_proportional_rule():
    ctl = AdaptiveKLController(init_coef=0.1, target=6.0, horizon=10000)
    # error = 9/6 - 1 = 0.5, clipped to 0.2: coef = 0.1 * (1 + 0.2 * 256/10000) = 0.100512
    assert ctl.update(9.0, 256) == pytest.approx(0.100512)
    # error = 5.4/6 - 1 = -0.1: coef = 0.100512 * (1 - 0.1 * 1000/10000) = 0.09950688
    assert ctl.update(5.4, 1000) == pytest.approx(0.09950688)
    # error = -1 clipped to -0.2: coef *= 1 - 0.2 * 0.5 = 0.9
    assert ctl.update(0.0, 5000) == pytest.approx(0.09950688 * 0.9)
    assert ctl.coef == pytest.approx(0.089556192)
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, target=0.0, horizon=1)


def test_fixed_kl_controller():
    ctl = FixedKLController(0.05)
    assert ctl.update(100.0, 1000) == 0.05 and ctl.coef == 0.05


def test_kl_penalty_loss_by_hand():
    lp = torch.tensor([[math.log(0.5), math.log(0.25), 5.0]])
    ref = torch.tensor([[math.log(0.25), math.log(0.5), 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    # k3 per token: log r = log 2 -> 0.5 - 1 + log 2; log r = -log 2 -> 2 - 1 - log 2; padding ignored
    expected = ((0.5 - 1 + math.log(2)) + (2 - 1 - math.log(2))) / 2  # = 0.25
    assert_close(kl_penalty_loss(lp, ref, mask), torch.tensor(expected))
    # k1: (log 2 - log 2)/2 = 0
    assert_close(kl_penalty_loss(lp, ref, mask, estimator="k1"), torch.tensor(0.0))
    # seq_sum_const with constant 4: (sum of k3 = 0.5) / 4 / 1 sequence
    assert_close(kl_penalty_loss(lp, ref, mask, loss_agg="seq_sum_const", constant=4), torch.tensor(0.5 / 4))
    # zero-length response
    assert_close(kl_penalty_loss(lp, ref, torch.zeros(1, 3)), torch.tensor(0.0))
