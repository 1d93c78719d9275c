"""Held-out scoring uses the task's own check, not always the math check."""
from __future__ import annotations

from rlhf_platform.config import RewardFunctionConfig, TaskConfig
from rlhf_platform.evaluation import score_answers, task_answer_check
from rlhf_platform.types import Trajectory


def answer(text: str, gold: str, reward: float, level: int = 0, **scores: float) -> Trajectory:
    return Trajectory("p", "g", [1], [2, 3], [], 4, "stop", response_text=text, answer=gold, difficulty=level,
                      reward=reward, reward_info=dict(scores))


def test_arithmetic_is_scored_by_the_math_check_whatever_the_reward_functions():
    check = task_answer_check(TaskConfig(name="arithmetic"), [RewardFunctionConfig(name="brevity")])
    result = score_answers([answer("7", "7", 0.5), answer("It is 8", "7", 0.2, level=1)], 4, check)
    assert result.accuracy == 0.5 and result.accuracy_by_level == {0: 1.0, 1: 0.0}
    assert result.reward_mean == 0.35 and result.response_length_mean == 2 and result.num_prompts == 2


def test_a_dataset_task_is_scored_by_its_configured_verifiers():
    functions = [RewardFunctionConfig(name="code_tests"), RewardFunctionConfig(name="math_answer", weight=0.5),
                 RewardFunctionConfig(name="brevity", weight=0.1), RewardFunctionConfig(name="reward_model", path="rm", weight=0.1)]
    check = task_answer_check(TaskConfig(name="dataset", train_path="x"), functions)
    answers = [
        answer("def f(): ...", "", 1.6, code_tests=1.0, math_answer=1.0, brevity=0.2, reward_model=0.9),  # every verifier passes
        answer("def f(): ...", "", 0.6, code_tests=1.0, math_answer=0.0, brevity=1.0, reward_model=2.0),  # one fails
        answer("7", "7", 0.0, code_tests=0.0, math_answer=1.0),  # one verifier says right; the task needs both
    ]
    result = score_answers(answers, 4, check)
    assert result.accuracy == 1 / 3  # shaping rewards and reward models never make an answer correct
    assert result.reward_mean == (1.6 + 0.6 + 0.0) / 3


def test_shaping_rewards_alone_give_no_accuracy():
    import math

    functions = [RewardFunctionConfig(name="brevity"), RewardFunctionConfig(name="reward_model", path="rm")]
    check = task_answer_check(TaskConfig(name="dataset", train_path="x"), functions)
    result = score_answers([answer("short", "", 0.5, brevity=0.5, reward_model=0.0)], 4, check)
    assert check is None and math.isnan(result.accuracy) and result.reward_mean == 0.5


def test_a_verifier_that_failed_never_makes_an_answer_correct():
    """Hostile-review finding E2: with reward.fallback=1.0 a verifier timeout scored 1.0, and the
    eval check (reward_info[name] >= 1.0) counted the answer correct, ignoring `<name>.error`."""
    from rlhf_platform.evaluation import score_samples

    check = task_answer_check(TaskConfig(name="dataset", train_path="x"), [RewardFunctionConfig(name="math_answer")])
    failed = {"math_answer": 1.0, "math_answer.error": "timed out after 60.0 s"}
    answers = [answer(r"\boxed{10^{10^{10}}}", "1", 1.0, **failed), answer("7", "7", 1.0, math_answer=1.0)]
    assert score_answers(answers, 0, check).accuracy == 0.5
    sampled = [Trajectory(f"p{i // 2}", f"g{i // 2}", [1], [2], [], 0, "stop", response_text="x", answer="1",
                          reward=1.0, reward_info=dict(failed)) for i in range(4)]
    assert score_samples(sampled, 2, check).pass_at_n == 0.0


def test_arithmetic_reuses_the_reward_services_math_verdict(monkeypatch):
    """Hostile-review finding M6: the driver re-ran is_correct, with no deadline off the main thread;
    the Reward service's verdict (scored in a killable worker) is reused where there is one."""
    import rlhf_platform.evaluation as evaluation

    def never(*_):
        raise AssertionError("is_correct re-run in the driver")

    check = task_answer_check(TaskConfig(name="arithmetic"), [RewardFunctionConfig(name="math_answer")])
    monkeypatch.setattr(evaluation, "is_correct", never)
    assert check(answer("7", "7", 1.0, math_answer=1.0)) is True
    assert check(answer("8", "7", 0.0, math_answer=0.0)) is False
    assert check(answer("7", "7", 1.0, math_answer=1.0, **{"math_answer.error": "timed out"})) is False
    monkeypatch.undo()
    assert check(answer("7", "7", 0.0)) is True  # not scored by the service: checked here
