"""The Reward service survives reward functions that raise, hang or misbehave: each bad
sample gets the fallback score with its error recorded and counted; the others keep
their scores; repeated (prompt, reply) pairs come from the cache."""
from __future__ import annotations

import threading
import time

import pytest

from rlhf_platform import rewards
from rlhf_platform.config import RewardConfig, RewardFunctionConfig
from rlhf_platform.roles.reward import RewardService
from rlhf_platform.types import Trajectory

CALLS: list[list[str]] = []
RELEASE = threading.Event()


def picky(prompts, completions, **_):
    """Raises on replies containing "boom", hangs on "hang", else scores the length."""
    CALLS.append(list(completions))
    for c in completions:
        if "boom" in c:
            raise RuntimeError(f"cannot parse {c!r}")
        if "hang" in c:
            RELEASE.wait(30)
    return [float(len(c)) for c in completions]


@pytest.fixture
def service(monkeypatch):
    monkeypatch.setitem(rewards.REWARD_FUNCTIONS, "picky", picky)
    CALLS.clear()
    RELEASE.clear()
    functions = [RewardFunctionConfig("picky", 1.0), RewardFunctionConfig("brevity", 0.0)]
    yield RewardService(functions, RewardConfig(functions=functions, timeout_s=1.0, fallback=-1.0))
    RELEASE.set()


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
    calls = len(CALLS)
    again = service.score(trajectories("ok", "fine"))
    assert len(CALLS) == calls and [t.reward for t in again] == [2.0, 4.0]
    assert service.get_stats().cache_hits == 4  # two samples x two functions
    service.score(trajectories("new"))
    assert len(CALLS) == calls + 1


def test_failed_samples_are_not_cached(service):
    service.score(trajectories("boom"))
    service.score(trajectories("boom"))
    assert service.get_stats().errors == {"picky": 2}
