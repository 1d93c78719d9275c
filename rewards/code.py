"""Code verifiers: run model-written Python against the task's tests, in the sandbox."""
from __future__ import annotations

import ast

from rlhf_platform.rewards.sandbox import SandboxLimits, run_tests
from rlhf_platform.rewards.sandbox_harness import strict_checks

FENCE = "```"


def _fenced_blocks(completion: str) -> list[str]:
    """The fenced blocks of a reply, in order: from a line opening with ``` (any info
    string after it, up to the line's end) to the next ```. A scan in linear time (a
    regex such as ```[^\n]*\n(.*?)``` is quadratic on a reply of backticks)."""
    blocks, at = [], 0
    while (start := completion.find(FENCE, at)) >= 0:
        newline = completion.find("\n", start + len(FENCE))
        if newline < 0:
            break
        end = completion.find(FENCE, newline + 1)
        if end < 0:
            break
        blocks.append(completion[newline + 1:end])
        at = end + len(FENCE)
    return blocks


def extract_code(completion: str) -> str:
    """The last fenced code block of a reply, or the whole reply when it has none."""
    blocks = _fenced_blocks(completion)
    return blocks[-1] if blocks else completion


def code_tests(
    prompts: list[str], completions: list[str], answer: list[str], limits: SandboxLimits = SandboxLimits(),
    strict: bool = False, **_: object,
) -> list[float]:
    """1.0 where the reply's code passes the task's tests (its `answer` field: Python
    statements with asserts) in the sandbox, else 0.0. The verdict is the harness's, given
    only after every test ran (`run_tests`): a failed assert, an exception, ending early,
    a limit reached or anything the sandbox refused is a failure. Tests with no assert
    are refused (ValueError): they would pass any program; so are strict tests
    `strict_checks` refuses. Every row's tests are checked before any code runs."""
    for tests in answer:
        _require_an_assert(str(tests))
        if strict:
            strict_checks(str(tests))
    scores = []
    for completion, tests in zip(completions, answer):
        scores.append(1.0 if run_tests(extract_code(completion), str(tests), limits, strict=strict).passed else 0.0)
    return scores


def _require_an_assert(tests: str) -> None:
    """Tests that check nothing would pass any program: refuse them (ValueError)."""
    try:
        tree = ast.parse(tests)
    except SyntaxError as err:
        raise ValueError(f"code tests do not parse: {err}") from None
    if not any(isinstance(node, ast.Assert) for node in ast.walk(tree)):
        raise ValueError(f"code tests must contain an assert statement, got {tests[:80]!r}")


def code_tests_strict(prompts: list[str], completions: list[str], answer: list[str], **fields: object) -> list[float]:
    """`code_tests` in strict mode: every assert is a top-level `assert EXPR == LITERAL`
    (none inside a loop, `if`, function...), and EXPR's value must equal the literal by
    exact type and repr, compared outside the sandbox, so an object with a forged `__eq__`
    (or a patched comparison helper) cannot pass."""
    return code_tests(prompts, completions, answer, strict=True, **fields)
