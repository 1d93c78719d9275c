r"""Verifier for math answers: take the answer a reply commits to, compare it with the gold.

Extraction (`final_answer`): the first of these rules that finds an answer wins.

  1. the last `\boxed{...}` or `\fbox{...}`, braces matched (nested LaTeX stays whole);
  2. GSM8K's final-answer marker: the answer right after the last `####` (`#### 72`);
  3. a phrase "... answer is X" or a line "Answer: X": the first answer after the last one, on its
     line (after the line's last `=`, if any: "Answer: 48 + 24 = 72" is 72);
  4. otherwise the reply's last answer.

An answer is a math span (`$...$`, `$$...$$`, `\(...\)`, `\[...\]`), a bare `\frac{a}{b}` or a
number: an integer, a decimal or a fraction `a/b`. Within a span or a box, only what follows the
last `=` counts (`x = 5` is 5). Unicode minus and dashes that stand for a minus are read as `-`;
a `-` right after a word or a digit is a subtraction, not a sign (`3-5` ends in 5).

Choices:
  commas   only thousands grouping (`1,234,567`) belongs to a number; any other comma separates
           numbers, so `1,2` is the list 1, 2: its last answer is 2, never 12 (a boxed `1,2` is a set).
  units    currency, units and words around a number are not part of it: `$42`, `42 dollars` and
           `\boxed{42\text{ dollars}}` are all 42.
  percent  a percent sign is a unit too: `42%` is 42 (GSM8K golds write percentages as plain
           numbers), never 0.42.
  lists    a reply is judged by the one answer it commits to, the last: listing candidates wins
           only if the right one comes last, and never by a match anywhere else in the list.
           After "the answer is", the first answer counts (listing more gains nothing).
  equals   `x = 5` and a chain `x = 48/2 = 24` are their last value; a system (`a = 1, b = 2`,
           `x = 2 or x = 3`) or a relation (`x != 5`, `x \le 5`) stays whole and math-verify
           compares it, so one value of a system or the bound of an inequality never passes.
           A phrase's line ends at an aside: "15 (x = 3 ...)" is 15.
  grouping LaTeX digit grouping (`1{,}234`, `1\,234`) is a thousands comma.

Comparison (`is_correct`): when the gold and the answer are both numbers (fractions included) they
are compared exactly, at any length; otherwise math-verify compares them, for answers of at most
`MAX_SYMBOLIC_CHARS` characters. Golds may be plain numbers, LaTeX, or GSM8K's "... #### 72".
"""
from __future__ import annotations

import re
import threading
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

MAX_SYMBOLIC_CHARS = 200  # longer answers are compared as plain numbers only: symbolic parsing of them is unbounded
SYMBOLIC_TIMEOUT_S = 2  # math-verify's own deadline per parse and comparison (main thread only: it uses SIGALRM)

_EXTRACTION = [LatexExtractionConfig(), ExprExtractionConfig()]
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)  # products of decimals without rounding
_MINUS = str.maketrans(dict.fromkeys("\u2212\u2010\u2011\u2012\u2013\ufe63\uff0d", "-"))  # not the em dash: punctuation

_UNSIGNED = r"(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"  # commas only as thousands grouping
_NUMBER = rf"(?<![\w.])-?{_UNSIGNED}(?:/{_UNSIGNED})?"
_RATIO = re.compile(rf"(-?{_UNSIGNED})(?:/({_UNSIGNED}))?|(-?)\\[dt]?frac\{{(-?{_UNSIGNED})\}}\{{(-?{_UNSIGNED})\}}")
# One answer. A span's body stops at the next opener, so unclosed openers cost linear time, not quadratic.
_ANSWER = re.compile(
    r"\$\$(?P<display>[^$]+)\$\$"
    r"|\$(?!\s)(?P<inline>[^$]+)(?<!\s)\$(?!\d)"  # Pandoc's rule: `$5 and $6` is currency, not math
    r"|\\\((?P<paren>(?:(?!\\[()]).)+)\\\)"
    r"|\\\[(?P<bracket>(?:(?!\\[\[\]]).)+)\\\]"
    r"|(?P<frac>-?\\[dt]?frac\{[^{}]{1,50}\}\{[^{}]{1,50}\})"
    rf"|(?P<number>{_NUMBER})",
    re.DOTALL,
)
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"\\[{}]|[{}]")
_GSM8K = re.compile(r"####[ \t]*(?=[-$\\.\d])")  # followed by an answer: "#### Step 2" is a Markdown heading
_PHRASE = re.compile(r"\banswer\s+is\b[ \t:]*|^[ \t*_#>-]*(?:final\s+)?answer[ \t*_]*:", re.IGNORECASE | re.MULTILINE)
_SPACE = re.compile(r"\s*")
_LATEX_GROUPING = re.compile(r"(?<=\d)(?:\{,\}|\\,)(?=\d{3})")
# a relation, not an equation: `x != 5`, `x \le 5` commit to no single value
_RELATION = re.compile(r"!=|<|>|\u2260|\u2264|\u2265|\\(?:neq?|leq?|geq?|lt|gt)(?![A-Za-z])")
_SEVERAL = re.compile(r",|\bor\b|\band\b|\\(?:lor|land|quad)")  # `a = 1, b = 2`, `x = 2 \text{ or } x = 3`
_ASIDE = re.compile(r"\(|\.\s|;")  # where a phrase's answer line turns to an aside: "15 (x = 3 gives 5*3)"
_TEXT_WRAP = re.compile(r"\\(?:text|mathrm|textbf|mbox)\{([^{}]*)\}")
_NUMBER_WITH_UNITS = re.compile(rf"\s*\\?\$?\s*({_NUMBER})\s*(?:[A-Za-z%]+\.?\s*)*")


def final_answer(completion: str) -> str | None:
    r"""The answer a reply commits to (see the module for the rules), or None.

    >>> final_answer("48/2 = <<48/2=24>>24 clips in May.\n#### 72")
    '72'
    >>> final_answer(r"So $x = \frac{3}{4}$, i.e. \boxed{\frac{\sqrt{3}}{2}}.")
    '\\frac{\\sqrt{3}}{2}'
    >>> final_answer("The answer is 1,234 apples."), final_answer("It is either 1,2"), final_answer("\u22125")
    ('1234', '2', '-5')
    >>> final_answer("no digits") is None
    True
    """
    text = _normalise(completion)
    return _boxed(text) or _after_last(_GSM8K, text) or _after_last(_PHRASE, text) or _last_answer(text)


def is_correct(completion: str, answer: str) -> bool:
    r"""Whether the reply's answer equals the gold `answer`: exactly for numbers, else by math-verify.

    >>> is_correct("The sum is 12", "12"), is_correct("12, no 13", "12"), is_correct("It is 1,2", "12")
    (True, False, False)
    >>> is_correct(r"\boxed{0.5}", r"\frac{1}{2}"), is_correct("So 3/4.", "Half of 3/2.\n#### 0.75")
    (True, True)
    """
    candidate, gold = final_answer(completion), _gold_answer(str(answer))
    if candidate is None or gold is None:
        return False
    gold_number, candidate_number = _number(gold), _number(candidate)
    if gold_number is not None and candidate_number is not None:  # exact: fast at any length
        return _same_number(gold_number, candidate_number)
    if len(gold) > MAX_SYMBOLIC_CHARS or len(candidate) > MAX_SYMBOLIC_CHARS:
        return False
    return _verify(gold, candidate)


def math_answer(prompts: list[str], completions: list[str], answer: list[str], **_: object) -> list[float]:
    """1.0 where the completion's final answer verifies against `answer`, else 0.0.

    >>> math_answer(["What is 2 + 2?"] * 2, ["4", "The answer is 5"], answer=["4", "4"])
    [1.0, 0.0]
    """
    return [1.0 if is_correct(c, a) else 0.0 for c, a in zip(completions, answer)]


def _gold_answer(answer: str) -> str | None:
    """The gold: a boxed one, the one after GSM8K's `####`, or else the whole text."""
    text = _normalise(answer)
    return _boxed(text) or _after_last(_GSM8K, text) or _clean(text)


def _normalise(text: str) -> str:
    """Minus signs as `-`; LaTeX digit grouping (`1{,}234`, `1\\,234`) as plain commas."""
    return _LATEX_GROUPING.sub(",", text.translate(_MINUS))


def _boxed(text: str) -> str | None:
    """The contents of the last `\\boxed{}` / `\\fbox{}`; None if there is none or it is never closed."""
    box = None
    for box in _BOX.finditer(text):
        pass
    if box is None:
        return None
    depth = 1
    for brace in _BRACE.finditer(text, box.end()):
        if brace.group() in ("{", "}"):  # `\{` and `\}` are literal braces
            depth += 1 if brace.group() == "{" else -1
            if depth == 0:
                return _clean(text[box.end():brace.start()])
    return None


def _after_last(marker: re.Pattern[str], text: str) -> str | None:
    """The answer after the last match of `marker`, if there is one."""
    found = None
    for found in marker.finditer(text):
        pass
    return _after(text, found.end()) if found else None


def _after(text: str, position: int) -> str | None:
    """The first answer on the line from `position`, or after the last `=` before the
    line turns to an aside ("Answer: 48 + 24 = 72" is 72, "15 (x = 3 ...)" is 15); a
    relation there (`x != 5`) is the answer as written. None if that line has none."""
    start = _SPACE.match(text, position).end()  # "Answer:\n42" puts the answer on the next line
    line_end = text.find("\n", start)
    line_end = len(text) if line_end < 0 else line_end
    aside = _ASIDE.search(text, start, line_end)
    end = aside.start() if aside else line_end
    if _RELATION.search(text, start, end):
        return _clean(text[start:end])
    equals = text.rfind("=", start, end)
    found = _ANSWER.search(text, equals + 1 if equals >= 0 else start)
    return _answer_text(found) if found and found.start() < line_end else None


def _last_answer(text: str) -> str | None:
    """The reply's last answer (module docstring: what an answer is)."""
    found = None
    for found in _ANSWER.finditer(text):
        pass
    return _answer_text(found) if found else None


def _answer_text(found: re.Match[str]) -> str | None:
    """An `_ANSWER` match as answer text: a number without its grouping commas, a span's contents."""
    if found["number"]:
        return found["number"].replace(",", "")
    return _clean(found[found.lastgroup or 0])


def _clean(text: str) -> str | None:
    """An answer without math delimiters, closing punctuation and a single `x =` in front
    (`x = 48/2 = 24` is 24; a system `a = 1, b = 2` or a relation `x \\le 5` stays whole, for
    math-verify); a number with units or words (`\\text{42 dollars}`) is the number.
    None if empty."""
    text = text.strip().strip("$").strip().rstrip(".,;").strip()
    if "=" in text and not _RELATION.search(text) and not _SEVERAL.search(text):  # a chain `x = 48/2 = 24`
        text = text.rpartition("=")[2].strip()
    unwrapped = _TEXT_WRAP.sub(r"\1", text)
    with_units = _NUMBER_WITH_UNITS.fullmatch(unwrapped)
    if with_units and _number(unwrapped.strip()) is None:
        text = with_units[1].replace(",", "")
    return text or None


def _number(text: str) -> tuple[Decimal, Decimal] | None:
    """A number, decimal fraction `a/b` or `\\frac{a}{b}` as (numerator, denominator); None for anything else."""
    found = _RATIO.fullmatch(text)
    if found is None:
        return None
    sign, numerator, denominator = ("", found[1], found[2] or "1") if found[1] else (found[3], found[4], found[5])
    numerator_value, denominator_value = (Decimal(part.replace(",", "")) for part in (numerator, denominator))
    if denominator_value == 0:
        return None
    return (-numerator_value if sign else numerator_value), denominator_value


def _same_number(x: tuple[Decimal, Decimal], y: tuple[Decimal, Decimal]) -> bool:
    """Whether two (numerator, denominator) pairs are the same number, by exact cross-multiplication."""
    return _EXACT.multiply(x[0], y[1]) == _EXACT.multiply(y[0], x[1])


def _verify(gold: str, candidate: str) -> bool:
    """math-verify's equivalence of two short answers, each read as LaTeX math."""
    timeout = SYMBOLIC_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    gold_parsed = parse(f"${gold}$", extraction_config=_EXTRACTION, parsing_timeout=timeout)
    candidate_parsed = parse(f"${candidate}$", extraction_config=_EXTRACTION, parsing_timeout=timeout)
    return bool(gold_parsed and candidate_parsed and verify(gold_parsed, candidate_parsed, timeout_seconds=timeout))
