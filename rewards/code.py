"""Code verifier: run model-written Python against the task's tests, in the sandbox."""
from __future__ import annotations

import re

from rlhf_platform.rewards.sandbox import SandboxLimits, run_sandboxed

_FENCED = re.compile(r"```(?:python|py)?[^\n]*\n(.*?)```", re.DOTALL)


def extract_code(completion: str) -> str:
    """The last fenced code block of a reply, or the whole reply when it has none."""
    blocks = _FENCED.findall(completion)
    return blocks[-1] if blocks else completion


def code_tests(
    prompts: list[str], completions: list[str], answer: list[str], limits: SandboxLimits = SandboxLimits(), **_: object
) -> list[float]:
    """1.0 where the reply's code followed by the task's tests (its `answer` field:
    Python asserts) runs to completion in the sandbox, else 0.0: a failed assert, an
    exception, a limit reached or anything the sandbox refused is a failure."""
    scores = []
    for completion, tests in zip(completions, answer):
        program = f"{extract_code(completion)}\n\n# --- tests ---\n{tests}\n"
        scores.append(1.0 if run_sandboxed(program, limits).ok else 0.0)
    return scores
