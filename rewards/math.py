r"""Verifier for math answers: take the answer a reply commits to, compare it with the gold.

Extraction (`final_answer`): the first of these rules that finds an answer wins.

  1. the last `\boxed{...}` or `\fbox{...}`, braces matched (nested LaTeX stays whole);
  2. GSM8K's final-answer marker: the answer right after the last `####` (`#### 72`);
  3. a phrase "... answer is X" or a line "Answer: X": the first answer after the last one, on its
     line (after the line's last `=`, if any: "Answer: 48 + 24 = 72" is 72);
  4. otherwise the reply's last answer.

An answer is a math span (`$...$`, `$$...$$`, `\(...\)`, `\[...\]`), a bare `\frac{a}{b}` or a
number: an integer, a decimal or a fraction `a/b`, each with an exponent if it has one (`6.02e23`
is one number, never 6.02). Within a span or a box, only what follows the last `=` outside every
brace and parenthesis counts (`x = 5` is 5; `\sum_{i=1}^{3} i` and `P(X=1)` stay whole). In a span
or a box an unescaped `%` starts a LaTeX comment (`\boxed{41 % 42}` is 41). Unicode minus and dashes
that stand for a minus are read as `-`, zero-width characters are dropped (`4\u200b2` is 42);
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
are compared exactly, at any length. When one of them is a number, the other (at most
`MAX_SYMBOLIC_CHARS` characters) must have exactly its value: `1.2 \times 10^{-5}` is 0.000012,
never 0.0000123, and `e` is not 2.718281828459045 (math-verify's 6-decimal rounding is not used).
Otherwise math-verify compares them. An answer holding a relation or an `=` (outside the bounds
of a sum) never equals a gold that holds none. Values sympy could not compute in bounded time
(`10^{10^{10}}`, `(10^{10})!`: `_too_large`) score 0 before sympy sees them, on any thread.
Golds may be plain numbers, LaTeX, or GSM8K's "... #### 72"; a placeholder gold ("NaN", "None",
"-", "N/A") or a prose one ("see solution") accepts no answer.
"""
from __future__ import annotations

import math
import re
import threading
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, DecimalException
from fractions import Fraction

import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

MAX_SYMBOLIC_CHARS = 200  # longer answers are compared as plain numbers only: symbolic parsing of them is unbounded
SYMBOLIC_TIMEOUT_S = 2  # math-verify's own deadline per parse and comparison (main thread only: it uses SIGALRM)
# Off the main thread math-verify has no deadline, so what sympy would compute is bounded before it runs
# (`_too_large`): an answer whose value may have more digits than this, or an exponent, factorial or
# binomial past the limits below, is never evaluated (it scores 0): `10^{10^{10}}` would hold the GIL for hours.
MAX_VALUE_DIGITS = 100_000
MAX_EXPONENT = 10**6
MAX_FACTORIAL = 10**5
MAX_SUM_TERMS = 10**4
FLOAT_ROUNDING = 12  # decimals math-verify rounds floats to when it compares two expressions (its default, 6, passes 1.2e-5 for 1.23e-5)

_EXTRACTION = [LatexExtractionConfig(), ExprExtractionConfig()]
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)  # products of decimals without rounding
_MINUS = str.maketrans(dict.fromkeys("\u2212\u2010\u2011\u2012\u2013\ufe63\uff0d", "-"))  # not the em dash: punctuation
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))  # zero-width characters: `4\u200b2` is 42

# commas only as thousands grouping; an exponent belongs to the number (`6.02e23`, never 6.02)
_UNSIGNED = r"(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
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
# (a negation `\neg(x = 7)` too: it commits to no value)
_RELATION = re.compile(
    r"!=|<|>|\u2260|\u2264|\u2265|\u00ac"
    r"|\\(?:neq?|leq?|geq?|lt|gt|neg|lnot|not|notin|nexists|exists|forall|approx|equiv|sim|simeq|cong)(?![A-Za-z])"
)
_SEVERAL = re.compile(r",|\bor\b|\band\b|\\(?:lor|land|quad)")  # `a = 1, b = 2`, `x = 2 \text{ or } x = 3`
_ASIDE = re.compile(r"\(|\.\s|;")  # where a phrase's answer line turns to an aside: "15 (x = 3 gives 5*3)"
_TEXT_WRAP = re.compile(r"\\(?:text|mathrm|textbf|mbox)\{([^{}]*)\}")
_NUMBER_WITH_UNITS = re.compile(rf"\s*\\?\$?\s*({_NUMBER})\s*(?>[A-Za-z%]+\.?\s*)*")
_COMMENT = re.compile(r"(?<!\\)%[^\n]*")  # in LaTeX (a box, a math span) an unescaped % starts a comment
_BOUND = re.compile(r"[_^]\s*\{")  # a subscript or superscript group: `\sum_{i=1}^{3}`
# golds no reply can be checked against: placeholders for a missing answer, and prose (two or more
# words, no digit, no LaTeX), which math-verify reads as a product of one-letter symbols
_PLACEHOLDER = re.compile(
    r"[-+]?(?:nan|inf|infinity|none|null|nil|true|false|n/a|#n/a|tbd|unknown|undefined)|[-+?.*_/#\s]*", re.IGNORECASE
)
_PROSE_WORD = re.compile(r"[A-Za-z]{2,}")


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
    if _is_relation(candidate) and not _is_relation(gold):  # `P(X=1)`, `\neg(x = 7)`: no value
        return False
    if gold_number is not None:  # a number gold: the answer's exact value, never one rounded to 6 decimals
        return _equals_number(candidate, gold_number)
    if candidate_number is not None:
        return _equals_number(gold, candidate_number)
    return _verify(gold, candidate)


def math_answer(prompts: list[str], completions: list[str], answer: list[str], **_: object) -> list[float]:
    """1.0 where the completion's final answer verifies against `answer`, else 0.0.

    >>> math_answer(["What is 2 + 2?"] * 2, ["4", "The answer is 5"], answer=["4", "4"])
    [1.0, 0.0]
    """
    return [1.0 if is_correct(c, a) else 0.0 for c, a in zip(completions, answer)]


def _gold_answer(answer: str) -> str | None:
    """The gold: a boxed one, the one after GSM8K's `####`, or else the whole text; None for a gold
    no reply can be checked against (`NaN`, `None`, `-`, `N/A`, `see solution`: see `_PLACEHOLDER`)."""
    text = _normalise(answer)
    gold = _boxed(text) or _after_last(_GSM8K, text) or _clean(text)
    if gold is None or _PLACEHOLDER.fullmatch(gold.strip()):
        return None
    if not re.search(r"[\d\\]", gold) and len(_PROSE_WORD.findall(gold)) >= 2:
        return None
    return gold


def _normalise(text: str) -> str:
    """Minus signs as `-`; no zero-width characters; LaTeX digit grouping (`1{,}234`, `1\\,234`) as plain commas."""
    return _LATEX_GROUPING.sub(",", text.translate(_MINUS).translate(_INVISIBLE))


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
                return _clean(_COMMENT.sub("", text[box.end():brace.start()]))
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
    equals = _last_equals(text, start, end)
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
    if found["frac"]:
        return _clean(found["frac"])
    return _clean(_COMMENT.sub("", found[found.lastgroup or 0]))  # a math span: LaTeX, where % starts a comment


def _clean(text: str) -> str | None:
    """An answer without math delimiters, closing punctuation and a single `x =` in front
    (`x = 48/2 = 24` is 24; a system `a = 1, b = 2` or a relation `x \\le 5` stays whole, for
    math-verify); a number with units or words (`\\text{42 dollars}`) is the number.
    None if empty."""
    text = text.strip().strip("$").strip().rstrip(".,;").strip()
    equals = _last_equals(text)  # an `=` inside braces or parentheses (`\sum_{i=1}^{3}`, `P(X=1)`) splits nothing
    if equals >= 0 and not _RELATION.search(text) and not _SEVERAL.search(text):  # a chain `x = 48/2 = 24`
        text = text[equals + 1:].strip()
    unwrapped = _TEXT_WRAP.sub(r"\1", text)
    with_units = _NUMBER_WITH_UNITS.fullmatch(unwrapped)
    if with_units and _number(unwrapped.strip()) is None:
        text = with_units[1].replace(",", "")
    return text or None


def _last_equals(text: str, start: int = 0, end: int | None = None) -> int:
    """Where the last `=` of text[start:end] outside every brace, bracket and parenthesis is; -1 if none."""
    depth, found = 0, -1
    end = len(text) if end is None else end
    i = start
    while i < end:
        char = text[i]
        if char == "\\":  # `\{`, `\(`: an escaped delimiter still groups, a command name is skipped
            i += 2
            if text[i - 1:i] in ("{", "(", "["):
                depth += 1
            elif text[i - 1:i] in ("}", ")", "]"):
                depth = max(0, depth - 1)
            continue
        if char in "{([":
            depth += 1
        elif char in "})]":
            depth = max(0, depth - 1)
        elif char == "=" and depth == 0:
            found = i
        i += 1
    return found


def _is_relation(text: str) -> bool:
    """Whether an answer holds a relation or an `=` anywhere but a sub- or superscript's bounds
    (`\\sum_{i=1}^{3} i` is a value, `P(X=1)` and `x \\le 5` are not)."""
    if _RELATION.search(text):
        return True
    outside, position = [], 0
    for bound in _BOUND.finditer(text):
        if bound.start() < position:
            continue
        outside.append(text[position:bound.start()])
        depth, position = 1, bound.end()
        while position < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[position], 0) if text[position - 1] != "\\" else 0
            position += 1
    outside.append(text[position:])
    return "=" in "".join(outside)


def _number(text: str) -> tuple[Decimal, Decimal] | None:
    """A number, decimal fraction `a/b` or `\\frac{a}{b}` as (numerator, denominator); None for anything else."""
    found = _RATIO.fullmatch(text)
    if found is None:
        return None
    sign, numerator, denominator = ("", found[1], found[2] or "1") if found[1] else (found[3], found[4], found[5])
    try:
        numerator_value, denominator_value = (Decimal(part.replace(",", "")) for part in (numerator, denominator))
    except DecimalException:  # an exponent past what Decimal holds
        return None
    if denominator_value == 0:
        return None
    return (-numerator_value if sign else numerator_value), denominator_value


def _same_number(x: tuple[Decimal, Decimal], y: tuple[Decimal, Decimal]) -> bool:
    """Whether two (numerator, denominator) pairs are the same number, by exact cross-multiplication."""
    try:
        return _EXACT.multiply(x[0], y[1]) == _EXACT.multiply(y[0], x[1])
    except DecimalException:  # exponents past Decimal's range
        return False


def _timeout() -> int | None:
    return SYMBOLIC_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _parse(text: str) -> list:
    """math-verify's reading of an answer as LaTeX math; [] when it has none or its value is too
    large to compute (`_too_large`)."""
    parsed = parse(f"${text}$", extraction_config=_EXTRACTION, parsing_timeout=_timeout())
    if any(isinstance(p, sympy.Basic) and _too_large(p) for p in parsed):
        return []
    return parsed


def _equals_number(text: str, number: tuple[Decimal, Decimal]) -> bool:
    """Whether the answer `text` (not a plain number) has exactly the value `number`: its decimals
    read as the fractions they write (`1.2 \\times 10^{-5}` is 3/250000), no rounding."""
    if any(abs(part.adjusted()) > MAX_VALUE_DIGITS for part in number if part):
        return False
    parsed = _parse(text)
    expr = parsed[0] if parsed and isinstance(parsed[0], sympy.Expr) else None
    if expr is None:  # a set, a relation, a tuple or text is no number
        return False
    value = Fraction(number[0]) / Fraction(number[1])
    try:
        exact = sympy.nsimplify(expr.doit(), rational=True)  # floats as the decimals they print
        difference = exact - sympy.Rational(value.numerator, value.denominator)
        if difference.is_zero is not None:  # decided (always so for rationals: the usual case)
            return bool(difference.is_zero)
        return bool(difference.evalf(50, chop=True) == 0)  # irrational terms: 50 digits, not a 6-decimal rounding
    except Exception:  # sympy fails on odd input in many ways; an answer it cannot evaluate is not right
        return False


def _verify(gold: str, candidate: str) -> bool:
    """math-verify's equivalence of two short answers, each read as LaTeX math."""
    gold_parsed = _parse(gold)
    candidate_parsed = _parse(candidate) if gold_parsed else []
    return bool(
        gold_parsed and candidate_parsed
        and verify(gold_parsed, candidate_parsed, float_rounding=FLOAT_ROUNDING, timeout_seconds=_timeout())
    )


def _too_large(expr: sympy.Basic) -> bool:
    """Whether computing `expr` could take unbounded time or memory: a value of more than
    MAX_VALUE_DIGITS digits, an exponent above MAX_EXPONENT, a factorial above MAX_FACTORIAL, a
    binomial of more than MAX_EXPONENT, a sum or product of more than MAX_SUM_TERMS terms. Judged
    on math-verify's unevaluated parse, by bounds on each node's size, without computing it."""
    return _digits(expr, {}) > MAX_VALUE_DIGITS


def _digits(expr: sympy.Basic, bound: dict) -> float:
    """An upper bound on log10(1 + |value|) of `expr` (inf past the module's limits); a free
    symbol counts as 10, a summation index as its upper limit."""
    if isinstance(expr, sympy.Integer):
        return max(int(expr).bit_length(), 1) * 0.30103
    if isinstance(expr, sympy.Rational):
        return max(abs(expr.p).bit_length(), expr.q.bit_length(), 1) * 0.30103
    if isinstance(expr, sympy.Float):
        _, mantissa, exponent, bits = expr._mpf_ if len(expr._mpf_) == 4 else (0, 1, 0, 1)
        return max(abs(exponent + bits), 1) * 0.30103 if mantissa else 0.0
    if isinstance(expr, sympy.Symbol):
        return bound.get(expr, 1.0)
    if not expr.args:
        return 1.0  # pi, E, I, infinity, ...
    if isinstance(expr, (sympy.Sum, sympy.Product)):
        inner, terms = dict(bound), 1.0
        for limit in expr.limits:
            if len(limit) != 3:
                return math.inf
            top = max(_digits(limit[1], bound), _digits(limit[2], bound))
            if top > math.log10(MAX_SUM_TERMS) + 0.01:
                return math.inf
            inner[limit[0]], terms = top, terms * 10**top
        term = _digits(expr.function, inner)
        return term + math.log10(terms) if isinstance(expr, sympy.Sum) else term * terms
    if isinstance(expr, (sympy.Pow, sympy.exp)):
        base, exponent = (sympy.E, expr.args[0]) if isinstance(expr, sympy.exp) else expr.args
        power = _digits(exponent, bound)
        if power > math.log10(MAX_EXPONENT):
            return math.inf
        return max(_digits(base, bound), 0.5) * 10**power
    if isinstance(expr, (sympy.factorial, sympy.factorial2, sympy.subfactorial, sympy.gamma, sympy.RisingFactorial, sympy.FallingFactorial)):
        size = max(_digits(arg, bound) for arg in expr.args)
        return math.inf if size > math.log10(MAX_FACTORIAL) else 10**size * max(size, 1.0)
    if isinstance(expr, sympy.binomial):
        size = _digits(expr.args[0], bound)
        return math.inf if size > math.log10(MAX_EXPONENT) else 10**size * 0.30103 + 1
    sizes = [_digits(arg, bound) for arg in expr.args if isinstance(arg, sympy.Basic)]
    if isinstance(expr, sympy.Mul):
        return sum(sizes)
    return max(sizes, default=1.0) + math.log10(len(sizes) + 1)
