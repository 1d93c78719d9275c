"""Verifier for the count task's answers: the exact list of integers asked for."""
from __future__ import annotations

import re

_INTEGER = re.compile(r"-?\d+")


def integers_in(text: str) -> list[int]:
    """The integers a reply lists, in order.

    >>> integers_in("3, 4, 5 and 6")
    [3, 4, 5, 6]
    """
    return [int(x) for x in _INTEGER.findall(text)]


def lists_match(completion: str, answer: str) -> bool:
    """Whether the reply lists exactly the answer's integers, in order (separators free).

    >>> lists_match("7 8 9", "7 8 9"), lists_match("7, 8, 9, 10", "7 8 9"), lists_match("7 9", "7 8 9")
    (True, False, False)
    """
    return bool(answer.strip()) and integers_in(completion) == integers_in(answer)


def count_answer(prompts: list[str], completions: list[str], answer: list[str], **_: object) -> list[float]:
    """1.0 where the completion lists exactly the integers of `answer`, else 0.0 (task=count)."""
    return [1.0 if lists_match(c, a) else 0.0 for c, a in zip(completions, answer)]
