import doctest

import pytest

import rlhf_platform.rewards.format as fmt
import rlhf_platform.rewards.listing as listing
import rlhf_platform.rewards.math as math_reward
import rlhf_platform.algos.advantages as advantages


@pytest.mark.parametrize("module", [math_reward, fmt, listing, advantages])
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_math_answer_cases():
    r = math_reward.math_answer(["q"] * 4, ["7", "The answer is 1,234.", "8", ""], answer=["7", "1234", "7", "7"])
    assert r == [1.0, 1.0, 0.0, 0.0]


def test_count_answer_wants_exactly_the_list():
    from rlhf_platform.rewards import REWARD_FUNCTIONS, VERIFIERS

    score = REWARD_FUNCTIONS["count_answer"]
    completions = ["3 4 5 6", "3, 4, 5, 6", "3 4 5", "3 4 5 6 7", "The numbers: 3 4 5 6", "", "6 5 4 3"]
    assert score([""] * 7, completions, answer=["3 4 5 6"] * 7) == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert "count_answer" in VERIFIERS
