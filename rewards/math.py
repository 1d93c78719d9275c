"""Verifier for math answers, through math-verify."""
from __future__ import annotations

import re
import threading
from decimal import Decimal, InvalidOperation

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_EXTRACTION = [LatexExtractionConfig(), ExprExtractionConfig()]
_PLAIN = re.compile(r"-?\d+(?:\.\d+)?")
MAX_SYMBOLIC_CHARS = 200  # longer answers are compared as plain numbers only: symbolic parsing of them is unbounded
SYMBOLIC_TIMEOUT_S = 2  # math-verify's own deadline per parse and comparison (main thread only: it uses SIGALRM)


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
    gold_text = str(answer).strip()
    if _PLAIN.fullmatch(gold_text):  # exact decimal comparison: fast at any length
        try:
            return Decimal(gold_text) == Decimal(candidate)
        except InvalidOperation:
            return False
    if len(gold_text) > MAX_SYMBOLIC_CHARS or len(candidate) > MAX_SYMBOLIC_CHARS:
        return False
    timeout = SYMBOLIC_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    gold = parse(gold_text, extraction_config=_EXTRACTION, parsing_timeout=timeout)
    pred = parse(candidate, extraction_config=_EXTRACTION, parsing_timeout=timeout)
    return bool(gold and pred and verify(gold, pred, timeout_seconds=timeout))


def math_answer(prompts: list[str], completions: list[str], answer: list[str], **_: object) -> list[float]:
    """1.0 where the completion's final answer verifies against `answer`, else 0.0.

    >>> math_answer(["What is 2 + 2?"] * 2, ["4", "The answer is 5"], answer=["4", "4"])
    [1.0, 0.0]
    """
    return [1.0 if is_correct(c, a) else 0.0 for c, a in zip(completions, answer)]
