import math

import pytest
import torch
from torch.testing import assert_close

from rlhf_platform.algos.preference import bradley_terry_loss, dpo_loss, sequence_logprob_sums


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# pair 0: chosen log ratio -1 - (-1.5) = 0.5, rejected -3 - (-2) = -1, h = 1.5
# pair 1: chosen log ratio -2 - (-2) = 0,  rejected -1 - (-2) = 1,  h = -1
REF_C, REF_R = torch.tensor([-1.5, -2.0]), torch.tensor([-2.0, -2.0])


def _policy():
    return torch.tensor([-1.0, -2.0], requires_grad=True), torch.tensor([-3.0, -1.0], requires_grad=True)


def test_dpo_sigmoid_by_hand():
    pc, pr = _policy()
    out = dpo_loss(pc, pr, REF_C, REF_R, beta=0.5)
    # -log sigmoid(beta h) = log(1 + exp(-beta h)), beta h = 0.75 and -0.5
    expected = (math.log(1 + math.exp(-0.75)) + math.log(1 + math.exp(0.5))) / 2
    assert_close(out.loss, torch.tensor(expected))
    assert_close(out.chosen_rewards, torch.tensor([0.5 * 0.5, 0.5 * 0.0]))
    assert_close(out.rejected_rewards, torch.tensor([0.5 * -1.0, 0.5 * 1.0]))
    assert_close(out.reward_accuracy, torch.tensor(0.5))  # pair 0 right, pair 1 wrong
    assert_close(out.margin, torch.tensor(((0.25 + 0.5) + (0.0 - 0.5)) / 2))  # 0.125


def test_dpo_gradient_signs():
    pc, pr = _policy()
    dpo_loss(pc, pr, REF_C, REF_R, beta=0.5).loss.backward()
    # d/d logp_c of mean(-log sigmoid(beta h)) = -(1/2) * beta * sigmoid(-beta h); opposite for rejected
    expected_c = torch.tensor([-0.25 * _sigmoid(-0.75), -0.25 * _sigmoid(0.5)])
    assert_close(pc.grad, expected_c)
    assert_close(pr.grad, -expected_c)
    assert bool((pc.grad < 0).all()) and bool((pr.grad > 0).all())  # raise chosen, lower rejected


def test_dpo_label_smoothing():
    pc, pr = _policy()
    out = dpo_loss(pc, pr, REF_C, REF_R, beta=0.5, label_smoothing=0.1)
    # 0.9 * log(1 + e^{-beta h}) + 0.1 * log(1 + e^{beta h})
    pair0 = 0.9 * math.log(1 + math.exp(-0.75)) + 0.1 * math.log(1 + math.exp(0.75))
    pair1 = 0.9 * math.log(1 + math.exp(0.5)) + 0.1 * math.log(1 + math.exp(-0.5))
    assert_close(out.loss, torch.tensor((pair0 + pair1) / 2))


def test_ipo_by_hand_and_bad_args():
    pc, pr = _policy()
    out = dpo_loss(pc, pr, REF_C, REF_R, beta=0.5, loss_type="ipo")
    # (h - 1/(2 beta))^2 with 1/(2*0.5) = 1: (1.5 - 1)^2 = 0.25, (-1 - 1)^2 = 4
    assert_close(out.loss, torch.tensor((0.25 + 4.0) / 2))
    with pytest.raises(ValueError):
        dpo_loss(pc, pr, REF_C, REF_R, loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError):
        dpo_loss(pc, pr, REF_C, REF_R, loss_type="hinge")


def test_bradley_terry_by_hand():
    chosen = torch.tensor([2.0, 0.0, 1.0], requires_grad=True)
    rejected = torch.tensor([1.0, 1.0, 1.0])
    out = bradley_terry_loss(chosen, rejected)
    # diffs [1, -1, 0]: mean of log(1 + e^{-d})
    assert_close(out.loss, torch.tensor((math.log(1 + math.exp(-1)) + math.log(1 + math.e) + math.log(2)) / 3))
    assert_close(out.accuracy, torch.tensor(1 / 3))  # a tie is not a win
    out.loss.backward()
    # d/d s_chosen = -sigmoid(-d) / 3
    assert_close(chosen.grad, torch.tensor([-_sigmoid(-1) / 3, -_sigmoid(1) / 3, -0.5 / 3]))


def test_sequence_logprob_sums_with_padding():
    lp = torch.tensor([[-1.0, -2.0, -50.0], [-0.5, -0.25, -9.0], [-3.0, -3.0, -3.0]])
    mask = torch.tensor([[1, 1, 0], [0, 1, 0], [0, 0, 0]])
    assert_close(sequence_logprob_sums(lp, mask), torch.tensor([-1.0 - 2.0, -0.25, 0.0]))
