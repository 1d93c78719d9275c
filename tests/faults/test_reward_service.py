"""The Reward service survives reward functions that raise, hang or misbehave: each bad
sample gets the fallback score with its error recorded and counted; the others keep
their scores; repeated (prompt, reply) pairs come from the cache."""
from __future__ import annotations

import time

import pytest

from rlhf_platform import rewards
from rlhf_platform.config import RewardConfig, RewardFunctionConfig
from rlhf_platform.roles.reward import RewardService
from rlhf_platform.types import Trajectory
from tests.faults.hostile_rewards import picky

@pytest.fixture
def service(monkeypatch):
    monkeypatch.setitem(rewards.REWARD_FUNCTIONS, "picky", picky)
    functions = [RewardFunctionConfig("picky", 1.0), RewardFunctionConfig("brevity", 0.0)]
    service = RewardService(functions, RewardConfig(functions=functions, timeout_s=1.0, fallback=-1.0))
    yield service
    service.workers.close()


def trajectories(*replies: str) -> list[Trajectory]:
    return [
        Trajectory(f"p{i}", f"p{i}", [1, 2, i], [3, len(r)], [0.0, 0.0], 0, "stop", response_text=r, prompt_text="q", answer="a")
        for i, r in enumerate(replies)
    ]


def test_an_exception_scores_only_the_bad_sample_by_fallback(service):
    scored = service.score(trajectories("ok", "boom!", "fine"))
    assert [t.reward for t in scored] == [2.0, -1.0, 4.0]
    assert scored[1].reward_info["picky.error"] == "RuntimeError: cannot parse 'boom!'"
    assert "picky.error" not in scored[0].reward_info
    assert service.get_stats().errors == {"picky": 1} and service.get_stats().timeouts == {}


def test_a_hanging_call_times_out_and_the_run_goes_on(service):
    started = time.monotonic()
    scored = service.score(trajectories("ok", "hang", "fine"))
    assert time.monotonic() - started < 5  # batch deadline + per-sample deadline, not 30 s
    assert [t.reward for t in scored] == [2.0, -1.0, 4.0]
    assert scored[1].reward_info["picky.error"] == "timed out after 1.0 s"
    assert service.get_stats().timeouts == {"picky": 1}


def test_scores_are_cached_by_prompt_reply_and_function(service):
    service.score(trajectories("ok", "fine"))
    calls = service.get_stats().calls
    again = service.score(trajectories("ok", "fine"))
    assert service.get_stats().calls == calls and [t.reward for t in again] == [2.0, 4.0]
    assert service.get_stats().cache_hits == 4  # two samples x two functions
    service.score(trajectories("new"))
    assert service.get_stats().calls == calls + 2  # one call per function


def test_failed_samples_are_not_cached(service):
    service.score(trajectories("boom"))
    service.score(trajectories("boom"))
    assert service.get_stats().errors == {"picky": 2}


def test_hangs_never_use_up_the_service(service):
    """Each hung call's worker is killed at the deadline: after more hangs than the old
    thread pool had threads, a good reply is still scored by the function, not the fallback."""
    started = time.monotonic()
    for round_ in range(2):  # 34 hangs: more than the 32 threads that used to be the limit
        scored = service.score(trajectories(*[f"hang {round_} {i}" for i in range(17)]))
        assert {t.reward for t in scored} == {-1.0}
    assert service.get_stats().timeouts == {"picky": 34}
    assert service.score(trajectories("fine"))[0].reward == 4.0
    assert service.workers.killed >= 34
    assert time.monotonic() - started < 120


def test_a_long_decimal_answer_is_verified_in_bounded_time():
    from rlhf_platform.rewards.math import math_answer

    started = time.monotonic()
    long_number = "0." + "3" * 20000
    assert math_answer(["q"] * 3, [long_number, "1/3", "12"], answer=[long_number, "0." + "3" * 20000 + "4", "12"]) == [
        1.0, 0.0, 1.0]
    assert time.monotonic() - started < 10
