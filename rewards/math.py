"""Verifier for math answers, through math-verify."""
from __future__ import annotations

import re

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_EXTRACTION = [LatexExtractionConfig(), ExprExtractionConfig()]


def final_answer(completion: str) -> str | None:
    """The last number in a reply, commas dropped: the answer a short reply commits to.

    >>> final_answer("3 + 4 = 7.")
    '7'
    >>> final_answer("no digits") is None
    True
    """
    numbers = _NUMBER.findall(completion)
    return numbers[-1].replace(",", "") if numbers else None


def is_correct(completion: str, answer: str) -> bool:
    """Whether the reply's final answer equals `answer`, compared by math-verify.

    >>> is_correct("The sum is 12", "12"), is_correct("12, no 13", "12")
    (True, False)
    """
    candidate = final_answer(completion)
    if candidate is None:
        return False
    gold = parse(str(answer), extraction_config=_EXTRACTION, parsing_timeout=None)
    pred = parse(candidate, extraction_config=_EXTRACTION, parsing_timeout=None)
    return bool(gold and pred and verify(gold, pred, timeout_seconds=None))


def math_answer(prompts: list[str], completions: list[str], answer: list[str], **_: object) -> list[float]:
    """1.0 where the completion's final answer verifies against `answer`, else 0.0.

    >>> math_answer(["What is 2 + 2?"] * 2, ["4", "The answer is 5"], answer=["4", "4"])
    [1.0, 0.0]
    """
    return [1.0 if is_correct(c, a) else 0.0 for c, a in zip(completions, answer)]
