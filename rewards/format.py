"""Format rewards: shaping towards short, answer-only replies."""
from __future__ import annotations

import re

_ONLY_NUMBER = re.compile(r"^\s*-?\d[\d,]*(?:\.\d+)?\s*\.?\s*$")


def answer_only(prompts: list[str], completions: list[str], **_: object) -> list[float]:
    """1.0 where the reply is a bare number (as the arithmetic prompt asks), else 0.0.

    >>> answer_only(["q", "q"], ["42", "It is 42"])
    [1.0, 0.0]
    """
    return [1.0 if _ONLY_NUMBER.match(c) else 0.0 for c in completions]


def brevity(prompts: list[str], completions: list[str], **_: object) -> list[float]:
    """1 / (1 + words in the reply): shorter replies score higher. Mix it with a small
    weight next to a verifier to discourage rambling; alone it gives any model
    (even an untrained one) rewards that differ within a group.

    >>> brevity(["q", "q", "q"], ["", "42", "it is 42"])
    [1.0, 0.5, 0.25]
    """
    return [1.0 / (1 + len(c.split())) for c in completions]
