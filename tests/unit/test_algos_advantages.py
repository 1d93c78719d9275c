import math

import pytest
import torch
from torch.testing import assert_close

from rlhf_platform.algos.advantages import (
    discounted_returns,
    dr_grpo_advantages,
    gae_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
    token_rewards,
)


def test_dr_grpo_subtracts_group_mean_without_std():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 5.0])
    groups = ["prompt-a", "prompt-a", "prompt-a", "prompt-a", "prompt-b", "prompt-b", "prompt-c"]
    # group a: mean (1+0+0+0)/4 = 0.25, no std division; b all equal -> 0; c size 1 -> 0
    expected = torch.tensor([1 - 0.25, -0.25, -0.25, -0.25, 0.0, 0.0, 0.0])
    assert_close(dr_grpo_advantages(rewards, groups), expected)


def test_dr_grpo_interleaved_string_ids():
    rewards = torch.tensor([3.0, 10.0, 1.0, 20.0])
    groups = ["q/17", "q/42", "q/17", "q/42"]
    # q/17: mean 2 -> [1, -1]; q/42: mean 15 -> [-5, 5]
    assert_close(dr_grpo_advantages(rewards, groups), torch.tensor([1.0, -5.0, -1.0, 5.0]))


def test_rloo_leave_one_out_baseline():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 4.0, 9.0, 3.0, 3.0, 7.0])
    groups = ["a", "a", "a", "a", "b", "b", "b", "c", "c", "d"]
    expected = torch.tensor(
        [
            1.0 - (0 + 0 + 0) / 3,  # a: = 4/3 * (1 - 0.25)
            0.0 - (1 + 0 + 0) / 3,
            0.0 - (1 + 0 + 0) / 3,
            0.0 - (1 + 0 + 0) / 3,
            2.0 - (4 + 9) / 2,  # b: -4.5
            4.0 - (2 + 9) / 2,  # -1.5
            9.0 - (2 + 4) / 2,  # 6
            0.0,  # c: all equal, 3 - 3
            0.0,
            0.0,  # d: size 1, no other sample
        ]
    )
    assert_close(rloo_advantages(rewards, groups), expected)


def test_rloo_pair():
    # group of two: each baseline is the other sample
    assert_close(rloo_advantages(torch.tensor([1.0, 3.0]), ["g", "g"]), torch.tensor([1.0 - 3.0, 3.0 - 1.0]))


@pytest.mark.parametrize("fn", [dr_grpo_advantages, rloo_advantages])
def test_group_estimators_reject_mismatched_ids(fn):
    with pytest.raises(ValueError, match="group ids"):
        fn(torch.tensor([1.0, 2.0]), ["a"])


def test_token_rewards_sparse_final_reward_and_kl_penalty():
    # row 0: prompt token masked, 3 response tokens, padding; row 1: 2 tokens; row 2: empty
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    final = torch.tensor([2.0, -1.0, 5.0])
    expected = torch.tensor([[0, 0, 0, 2.0, 0], [0, -1.0, 0, 0, 0], [0, 0, 0, 0, 0.0]])
    assert_close(token_rewards(final, mask), expected)

    kl = torch.tensor([[0.9, 0.1, 0.2, 0.3, 0.9], [0.4, 0.5, 0.9, 0.9, 0.9], [0.7, 0.7, 0.7, 0.7, 0.7]])
    expected = torch.tensor(
        [
            [0.0, -0.5 * 0.1, -0.5 * 0.2, 2.0 - 0.5 * 0.3, 0.0],  # kl only on valid tokens
            [-0.5 * 0.4, -1.0 - 0.5 * 0.5, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],  # zero-length: no reward, no penalty
        ]
    )
    assert_close(token_rewards(final, mask, kl, kl_coef=0.5), expected)


def test_discounted_returns_skip_masked_tokens():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[1, 0, 1, 1]])
    # t3: 4; t2: 3 + 0.5*4 = 5; t1 masked -> 0 (and skipped); t0: 1 + 0.5*5 = 3.5
    assert_close(discounted_returns(rewards, mask, gamma=0.5), torch.tensor([[3.5, 0.0, 5.0, 4.0]]))


def test_reinforce_pp_whitens_returns_over_batch():
    rewards = torch.tensor([1.0, 0.0])
    mask = torch.tensor([[1, 1], [1, 0]])
    # returns (gamma 1, no KL): [[1, 1], [0, pad]]; valid mean 2/3, centred [1/3, 1/3, -2/3]
    # population var (1/9 + 1/9 + 4/9)/3 = 2/9, std = sqrt(2)/3
    std = math.sqrt(2) / 3
    # = [[0.7071, 0.7071], [-1.4142, 0]]
    expected = torch.tensor([[(1 / 3) / std, (1 / 3) / std], [(-2 / 3) / std, 0.0]])
    assert_close(reinforce_pp_advantages(rewards, mask, eps=0.0), expected)


def test_reinforce_pp_kl_summed_to_go_and_empty_row():
    rewards = torch.tensor([1.0, 0.0, 3.0])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    kl = torch.tensor([[0.2, 0.4, 9.0], [0.1, 0.1, 0.1], [9.0, 9.0, 9.0]])
    # returns G_t = final reward - 0.5 * sum_{t' >= t} kl_t':
    # row 0: [1 - 0.5*(0.2+0.4), 1 - 0.5*0.4] = [0.7, 0.8]
    # row 1: [0 - 0.5*0.3, -0.5*0.2, -0.5*0.1] = [-0.15, -0.1, -0.05]; row 2 empty
    # mean over the 5 valid tokens (0.7+0.8-0.15-0.1-0.05)/5 = 0.24
    centred = [[0.46, 0.56, 0.0], [-0.39, -0.34, -0.29], [0.0, 0.0, 0.0]]
    std = math.sqrt((0.46**2 + 0.56**2 + 0.39**2 + 0.34**2 + 0.29**2) / 5)
    expected = torch.tensor(centred) / std
    assert_close(reinforce_pp_advantages(rewards, mask, kl, kl_coef=0.5, eps=0.0), expected)


def test_reinforce_pp_no_signal_cases():
    # all-equal returns, an all-empty batch and a single valid token all give zeros
    assert_close(reinforce_pp_advantages(torch.tensor([1.0, 1.0]), torch.ones(2, 3)), torch.zeros(2, 3))
    assert_close(reinforce_pp_advantages(torch.tensor([1.0, 2.0]), torch.zeros(2, 3)), torch.zeros(2, 3))
    assert_close(reinforce_pp_advantages(torch.tensor([4.0]), torch.tensor([[0, 1, 0]])), torch.zeros(1, 3))


def test_gae_by_hand_with_padding_and_empty_row():
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 99.0], [5.0, 5.0, 5.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 0.5, 99.0], [3.0, 3.0, 3.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    # row 0: t2 delta = 1 + 0 - 0.7 = 0.3 (bootstrap 0 at end), A2 = 0.3
    #        t1 delta = 0 + 0.9*0.7 - 0.6 = 0.03, A1 = 0.03 + 0.72*0.3 = 0.246
    #        t0 delta = 0 + 0.9*0.6 - 0.5 = 0.04, A0 = 0.04 + 0.72*0.246 = 0.21712
    # row 1: t2 is padding (its 99s ignored); t1 delta = 2 - 0.5 = 1.5, A1 = 1.5
    #        t0 delta = 0.9*0.5 - 1.0 = -0.55, A0 = -0.55 + 0.72*1.5 = 0.53
    # row 2: empty -> zeros
    adv, ret = gae_advantages(rewards, values, mask, gamma, lam)
    assert_close(adv, torch.tensor([[0.21712, 0.246, 0.3], [0.53, 1.5, 0.0], [0.0, 0.0, 0.0]]))
    # returns = A + V on valid tokens
    expected_returns = [[0.21712 + 0.5, 0.246 + 0.6, 0.3 + 0.7], [0.53 + 1.0, 1.5 + 0.5, 0.0], [0.0, 0.0, 0.0]]
    assert_close(ret, torch.tensor(expected_returns))


def test_gae_lambda_one_is_monte_carlo_and_holes_are_skipped():
    # gamma = lam = 1: A_t = (reward to go) - V_t
    rewards, values = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.6, 0.7]])
    adv, ret = gae_advantages(rewards, values, torch.ones(1, 3), 1.0, 1.0)
    assert_close(adv, torch.tensor([[1 - 0.5, 1 - 0.6, 1 - 0.7]]))
    assert_close(ret, torch.ones(1, 3))
    # a masked token inside the response: t1 is skipped, t0 bootstraps from t2
    # t2: A = 1 - 0.4 = 0.6; t0: delta = 0 + 0.4 - 0.2 = 0.2, A = 0.2 + 0.6 = 0.8
    rewards, values = torch.tensor([[0.0, 7.0, 1.0]]), torch.tensor([[0.2, 9.0, 0.4]])
    adv, ret = gae_advantages(rewards, values, torch.tensor([[1, 0, 1]]), 1.0, 1.0)
    assert_close(adv, torch.tensor([[0.8, 0.0, 0.6]]))
    assert_close(ret, torch.tensor([[1.0, 0.0, 1.0]]))


def test_equal_rewards_that_are_not_binary_fractions_get_no_advantage():
    """Eight samples of 0.7 each once got about +0.056 each (the float32 mean is off by
    rounding and the centred values were tested for exact zero)."""
    from rlhf_platform.algos.advantages import dr_grpo_advantages, group_normalized_advantages

    for value in (0.7, 0.3, 0.1):
        rewards = torch.full((8,), value)
        assert group_normalized_advantages(rewards, ["g"] * 8).abs().max() == 0.0
        assert dr_grpo_advantages(rewards, ["g"] * 8).abs().max() == 0.0
    mixed = group_normalized_advantages(torch.tensor([0.7] * 7 + [0.2]), ["g"] * 8)
    assert mixed[-1] < 0 < mixed[0] and float(mixed.sum()) == pytest.approx(0.0, abs=1e-5)


def test_whitening_equal_returns_gives_zero_not_a_rounding_artifact():
    """Returns all 0.9 once whitened to about -0.11 (eps 1e-6) or -0.92 (eps 1e-8)."""
    from rlhf_platform.algos.advantages import masked_whiten

    for eps in (1e-6, 1e-8):  # 8 replies x 24 tokens, as the cross-check had it
        assert masked_whiten(torch.full((8, 24), 0.9), torch.ones(8, 24), eps).abs().max() == 0.0
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    whitened = masked_whiten(torch.tensor([[0.9, 0.9, 0.1, 5.0], [0.1, 0.9, 7.0, 7.0]]), mask)
    valid = whitened[mask > 0]
    assert float(valid.mean()) == pytest.approx(0.0, abs=1e-6) and float(valid.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    assert whitened[0, 3] == 0 and whitened[1, 2] == 0
