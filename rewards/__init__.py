"""Reward functions and verifiers: plain functions `(prompts, completions, **fields) -> list[float]`.

Config names them (`reward.functions: [{name: math_answer, weight: 1.0}]`); this table
is the one place a name maps to a function.
"""
from __future__ import annotations

from typing import Callable

from rlhf_platform.rewards.code import code_tests, code_tests_strict
from rlhf_platform.rewards.listing import count_answer
from rlhf_platform.rewards.math import math_answer
from rlhf_platform.rewards.format import answer_only, brevity

RewardFunction = Callable[..., list[float]]

REWARD_FUNCTIONS: dict[str, RewardFunction] = {
    "math_answer": math_answer,
    "answer_only": answer_only,
    "brevity": brevity,
    "code_tests": code_tests,
    "code_tests_strict": code_tests_strict,
    "count_answer": count_answer,
}

# The functions that verify an answer (1.0: correct) rather than shape a reward; a
# dataset task's held-out accuracy is the share of answers every configured verifier accepts.
VERIFIERS = frozenset({"math_answer", "code_tests", "code_tests_strict", "count_answer"})

__all__ = [
    "REWARD_FUNCTIONS", "VERIFIERS", "RewardFunction", "math_answer", "answer_only", "brevity", "code_tests", "code_tests_strict", "count_answer",
]
