"""Held-out evaluation results, scored by the task's own check.

The recipe layer generates the greedy answers (through the rollout engines) and scores
them with the Reward service; this module turns them into an `EvalResult`. What counts
as correct is the task's:

  arithmetic  the math check (the reply's final number verifies against the sum): the
              Reward service's `math_answer` verdict where it scored one (a failed one is
              incorrect), else `rewards.math.is_correct` run here
  count       the reply lists exactly the integers asked for (`rewards.listing`)
  dataset     every configured verifier (the `reward.functions` entries that verify an
              answer, `rewards.VERIFIERS`: math_answer, code_tests) gives it 1.0, and none
              of them failed on it (a timeout or an error, `reward_info["<name>.error"]`,
              is an incorrect answer whatever `reward.fallback` scored it); with
              no verifier configured, accuracy is not defined (NaN; null in summary.json);
              in a task.mixture, each dataset's own reward functions decide

The mean reward under the run's reward functions is reported beside it, and the eval
gate compares both with the champion's. With `eval.samples_per_prompt` = n > 1, n
sampled replies per prompt give pass@n (the share of prompts with a correct reply among
them) and mean@n (the share of correct replies, an unbiased pass@1), overall and by level.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from math import comb
from typing import Callable

from rlhf_platform.config import RewardFunctionConfig, TaskConfig
from rlhf_platform.rewards import VERIFIERS
from rlhf_platform.rewards.listing import lists_match
from rlhf_platform.rewards.math import is_correct
from rlhf_platform.types import Trajectory

AnswerCheck = Callable[[Trajectory], "bool | float"]  # NaN: no check for this answer (None: for the task)


@dataclass
class EvalResult:
    version: int
    accuracy: float
    num_prompts: int
    accuracy_by_level: dict[int, float] = field(default_factory=dict)
    response_length_mean: float = 0.0
    reward_mean: float | None = None  # mean of the Reward service's scores
    name: str = "held_out"  # the eval set (`eval.sets`; held_out: the task's own held-out split)
    samples: "SampledScores | None" = None  # with eval.samples_per_prompt > 1: pass@n and mean@n

    def figures(self) -> dict[str, float | None]:
        """This set's figures by metric name: accuracy (greedy), pass@n and mean@n (sampled),
        reward, and each per level (`accuracy/level1`, `pass@4/level1`, ...)."""
        out: dict[str, float | None] = {"accuracy": self.accuracy, "reward": self.reward_mean}
        out.update({f"accuracy/level{lvl}": acc for lvl, acc in self.accuracy_by_level.items()})
        if self.samples is not None:
            out.update(self.samples.figures())
        return out

    def metric(self, name: str) -> float:
        """The figure `name` (accuracy, pass@N or mean@N, N this set's samples per prompt)."""
        figures = self.figures()
        if name not in figures or figures[name] is None:
            raise KeyError(f"eval set {self.name!r} has no {name!r} (it has {sorted(k for k in figures if '/' not in k)})")
        return float(figures[name])


@dataclass
class SampledScores:
    """pass@n and mean@n of n sampled replies per prompt, overall and by level."""

    n: int
    pass_at_n: float
    mean_at_n: float
    pass_by_level: dict[int, float] = field(default_factory=dict)
    mean_by_level: dict[int, float] = field(default_factory=dict)

    def figures(self) -> dict[str, float]:
        out = {f"pass@{self.n}": self.pass_at_n, f"mean@{self.n}": self.mean_at_n}
        for lvl in self.pass_by_level:
            out[f"pass@{self.n}/level{lvl}"] = self.pass_by_level[lvl]
            out[f"mean@{self.n}/level{lvl}"] = self.mean_by_level[lvl]
        return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples of which `correct` are right (Chen
    et al. 2021): 1 - C(n - c, k) / C(n, k); with k = n, whether any is right.

    Computed exactly, rounded once: pass@1 of 1 in 10 is 0.1, not 0.09999999999999998.

    >>> pass_at_k(4, 0, 4), pass_at_k(4, 1, 4), pass_at_k(4, 1, 1), pass_at_k(5, 2, 2), pass_at_k(10, 1, 1)
    (0.0, 1.0, 0.25, 0.7, 0.1)
    """
    if not 0 <= correct <= n or not 1 <= k <= n:
        raise ValueError(f"pass@{k} from {correct} correct of {n} samples is not defined")
    return float(1 - Fraction(comb(n - correct, k), comb(n, k)))


def score_samples(trajectories: list[Trajectory], n: int, check: AnswerCheck) -> SampledScores:
    """pass@n and mean@n of `trajectories`, n sampled replies per prompt (grouped by
    their group), by the task's check."""
    groups: dict[str, list[Trajectory]] = {}
    for traj in trajectories:
        groups.setdefault(traj.group_id, []).append(traj)
    passed: dict[int, list[float]] = {}
    means: dict[int, list[float]] = {}
    for replies in groups.values():
        if len(replies) != n:
            raise ValueError(f"prompt {replies[0].prompt_id}: {len(replies)} sampled replies, expected eval.samples_per_prompt={n}")
        verdicts = [check(t) for t in replies]
        if any(v != v for v in verdicts):  # NaN: no check for this prompt's dataset
            continue
        correct = sum(bool(v) for v in verdicts)
        level = replies[0].difficulty
        passed.setdefault(level, []).append(pass_at_k(n, correct, n))
        means.setdefault(level, []).append(correct / n)
    every_pass = [x for xs in passed.values() for x in xs]
    every_mean = [x for xs in means.values() for x in xs]
    return SampledScores(
        n, _mean(every_pass), _mean(every_mean),
        {lvl: _mean(xs) for lvl, xs in sorted(passed.items())}, {lvl: _mean(xs) for lvl, xs in sorted(means.items())},
    )


EvalReport = dict[str, EvalResult]  # by eval set: the task's held_out first, then eval.sets


def task_answer_check(task: TaskConfig, functions: list[RewardFunctionConfig]) -> AnswerCheck | None:
    """Whether a scored answer is correct, by the task's own check (see the module);
    None when the task has none (a dataset task scored by shaping rewards or reward
    models only)."""
    if task.name == "arithmetic":
        return lambda traj: _verdict(traj, "math_answer", lambda: is_correct(traj.response_text, traj.answer))
    if task.name == "count":
        return lambda traj: lists_match(traj.response_text, traj.answer)
    verifiers = [f.name for f in functions if f.name in VERIFIERS]
    by_dataset = {d.name: [f.name for f in d.reward_functions if f.name in VERIFIERS] for d in task.mixture if d.reward_functions}
    if not verifiers and not any(by_dataset.values()):
        return None

    def check(traj: Trajectory) -> bool | float:
        names = by_dataset.get(traj.dataset, verifiers)  # a mixture dataset's own functions, if it has them
        if not names:
            return float("nan")  # this dataset has no verifier: its accuracy is not defined
        return all(_verdict(traj, name, lambda: False) for name in names)

    return check


def _verdict(traj: Trajectory, name: str, otherwise: Callable[[], bool]) -> bool:
    """Whether verifier `name` accepted the answer, as the Reward service scored it: a score
    of 1.0, and no error or timeout (`reward_info["<name>.error"]`: its score is then
    `reward.fallback`, which says nothing of the answer); `otherwise()` when it did not score it."""
    if f"{name}.error" in traj.reward_info:
        return False
    if name in traj.reward_info:
        return traj.reward_info[name] >= 1.0
    return otherwise()


def score_answers(trajectories: list[Trajectory], version: int, check: AnswerCheck | None) -> EvalResult:
    """Accuracy (overall and per difficulty level, over the answers that have a check:
    NaN where none has), mean reply length and mean reward of greedy answers the Reward
    service has scored."""
    if not trajectories:
        return EvalResult(version, float("nan"), 0)
    correct_by_level: dict[int, list[float]] = {}
    for traj in trajectories:
        verdict = float(check(traj)) if check else float("nan")
        levels = correct_by_level.setdefault(traj.difficulty, [])
        if verdict == verdict:  # NaN: this answer's dataset has no check; it does not count
            levels.append(verdict)
    flat = [c for cs in correct_by_level.values() for c in cs]
    rewards = [t.reward for t in trajectories if t.reward is not None]
    return EvalResult(
        version=min(t.weight_version for t in trajectories),
        accuracy=_mean(flat),
        num_prompts=len(trajectories),
        accuracy_by_level={lvl: _mean(cs) for lvl, cs in sorted(correct_by_level.items())},
        response_length_mean=sum(t.response_length for t in trajectories) / len(trajectories),
        reward_mean=sum(rewards) / len(rewards) if rewards else None,
    )
