"""rewards.math reads answers as benchmarks write them: GSM8K's `####`, MATH's `\\boxed{}`,
LaTeX fractions, Unicode minus, thousands commas; and resists cheap wins (the `1,2` hack,
candidate lists, two boxes, long adversarial replies)."""
from __future__ import annotations

import time

import pytest

from rlhf_platform.rewards.math import final_answer, is_correct, math_answer

GSM8K_REPLY = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n"
    "#### 72"
)
GSM8K_GOLD = GSM8K_REPLY  # GSM8K's answer field is the worked solution ending in `#### 72`


@pytest.mark.parametrize(
    "reply, expected",
    [
        pytest.param(GSM8K_REPLY, "72", id="gsm8k-marker"),
        pytest.param("#### 1,234 dollars", "1234", id="gsm8k-marker-thousands"),
        pytest.param("#### $-5", "-5", id="gsm8k-marker-currency-negative"),
        pytest.param("#### Step 3: add\n48 + 24 = 72", "72", id="markdown-heading-is-no-marker"),
        pytest.param(r"So $p = \frac{1}{2}$ and \boxed{\frac{1}{2}}.", r"\frac{1}{2}", id="boxed-frac"),
        pytest.param(r"Hence \boxed{-\frac{2}{3}}", r"-\frac{2}{3}", id="boxed-negative-frac"),
        pytest.param(r"Hence \boxed{\frac{\sqrt{3}}{2}}.", r"\frac{\sqrt{3}}{2}", id="boxed-nested-braces"),
        pytest.param(r"Hence \fbox{\sqrt{2}}", r"\sqrt{2}", id="fbox"),
        pytest.param(r"\boxed{x = 5}", "5", id="boxed-equation-rhs"),
        pytest.param(r"\boxed{\{1,2\}}", r"\{1,2\}", id="boxed-escaped-braces"),
        pytest.param(r"First \boxed{3}, then on reflection \boxed{4}.", "4", id="last-box-wins"),
        pytest.param(r"\boxed{7} and a trailing 9", "7", id="box-beats-later-number"),
        pytest.param(r"\boxed{7}" + "\n#### 8", "7", id="box-beats-gsm8k-marker"),
        pytest.param(r"The ratio is $\frac{3}{4}$.", r"\frac{3}{4}", id="inline-dollar-latex"),
        pytest.param(r"The ratio is \(\frac{3}{4}\).", r"\frac{3}{4}", id="paren-latex"),
        pytest.param("We get\n\\[ x = \\frac{48}{2} = 24 \\]", "24", id="display-equation-rhs"),
        pytest.param(r"so x = -\frac{2}{3}", r"-\frac{2}{3}", id="bare-frac"),
        pytest.param("The ratio is 1/2", "1/2", id="slash-fraction"),
        pytest.param("x = -3/4.", "-3/4", id="negative-slash-fraction"),
        pytest.param("x = \u22125", "-5", id="unicode-minus"),
        pytest.param("x = \u20133.5", "-3.5", id="en-dash-minus"),
        pytest.param("3-5", "5", id="subtraction-is-not-a-sign"),
        pytest.param("About 1,234,567 people", "1234567", id="thousands-commas"),
        pytest.param("It is either 1,2", "2", id="bad-grouping-is-a-list"),
        pytest.param("1,2345", "2345", id="four-digit-group-is-a-list"),
        pytest.param("She paid $42.", "42", id="currency"),
        pytest.param("costs $5 and $6 in total", "6", id="two-currencies-are-not-math"),
        pytest.param("That is 42 dollars", "42", id="unit-word"),
        pytest.param("It rose by 42%", "42", id="percent"),
        pytest.param("It is 0.5 or .25", ".25", id="leading-dot-decimal"),
        pytest.param("The answer is 5. Check: 2 + 3 = 5, 6 left.", "5", id="answer-is-phrase"),
        pytest.param("The answer is: 48 + 24 = 72 clips", "72", id="answer-is-phrase-equation"),
        pytest.param("Answer:\n42\nthen 7", "42", id="answer-line-next-line"),
        pytest.param("**Final Answer**: 7 (and 8)", "7", id="markdown-answer-line"),
        pytest.param("To find the answer: 3 + 4 = 7", "7", id="mid-line-answer-colon-is-no-marker"),
        pytest.param("The answer is unclear.\nBut 6 * 7 = 42", "42", id="phrase-without-answer-falls-through"),
    ],
)
def test_final_answer_extraction(reply, expected):
    assert final_answer(reply) == expected


@pytest.mark.parametrize("reply", ["", "no digits at all", r"\boxed{}", r"\boxed{   }"], ids=["empty", "words", "empty-box", "blank-box"])
def test_no_answer(reply):
    assert final_answer(reply) is None
    assert not is_correct(reply, "0")


@pytest.mark.parametrize(
    "reply, gold",
    [
        pytest.param(GSM8K_REPLY, "72", id="gsm8k-reply-plain-gold"),
        pytest.param(GSM8K_REPLY, GSM8K_GOLD, id="gsm8k-reply-raw-gold"),
        pytest.param("So she sold 72 clips.", GSM8K_GOLD, id="plain-reply-raw-gold"),
        pytest.param("#### 1234", "Add them.\n#### 1,234", id="raw-gold-thousands"),
        pytest.param(r"Thus $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}", id="boxed-frac-latex-gold"),
        pytest.param(r"\boxed{\frac{1}{2}}", "0.5", id="boxed-frac-decimal-gold"),
        pytest.param(r"\boxed{0.5}", r"\frac{1}{2}", id="boxed-decimal-latex-gold"),
        pytest.param(r"\boxed{\dfrac{1}{2}}", "1/2", id="dfrac-slash-gold"),
        pytest.param(r"\boxed{-\frac{2}{3}}", r"-\frac{2}{3}", id="boxed-negative-frac"),
        pytest.param(r"\boxed{\frac{-2}{3}}", r"-\frac{2}{3}", id="sign-inside-frac"),
        pytest.param(r"The ratio is $\frac{3}{4}$.", "0.75", id="inline-frac-decimal-gold"),
        pytest.param("The ratio is 1/2", r"\frac{1}{2}", id="slash-latex-gold"),
        pytest.param("The ratio is 2/4", "0.5", id="unreduced-fraction"),
        pytest.param("x = \u22123/4", r"-\frac{3}{4}", id="unicode-minus-fraction"),
        pytest.param("The change is \u22125 degrees", "-5", id="unicode-minus"),
        pytest.param("x = 5", "\u22125 + 10", id="symbolic-gold-with-unicode-minus"),
        pytest.param(r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}", id="nested-braces"),
        pytest.param(r"The area is $3\pi$.", r"3\pi", id="pi"),
        pytest.param(r"\boxed{\pi \cdot 3}", r"3\pi", id="equivalent-form"),
        pytest.param(r"\boxed{2\sqrt{2}}", r"\sqrt{8}", id="equivalent-radicals"),
        pytest.param("There are 1,234,567 of them.", "1234567", id="thousands-commas"),
        pytest.param("It is 42 dollars.", "42", id="unit-word"),
        pytest.param("It costs $42.50", "42.5", id="currency-decimal"),
        pytest.param("A rise of 25%", "25", id="percent-is-a-unit"),
        pytest.param(r"\boxed{25\%}", "25", id="boxed-percent"),
        pytest.param(r"\boxed{42 \text{ dollars}}", "42", id="boxed-text-unit"),
        pytest.param(r"\boxed{\$42}", "42", id="boxed-currency"),
        pytest.param("The answer is 5.", "5", id="answer-phrase"),
        pytest.param(r"\boxed{1,234}", "1234", id="boxed-thousands"),
        pytest.param("That's -.5", "-1/2", id="leading-dot"),
        pytest.param("7.0", "7", id="trailing-zero"),
    ],
)
def test_right_answers_score(reply, gold):
    assert is_correct(reply, gold)
    assert math_answer(["q"], [reply], answer=[gold]) == [1.0]


@pytest.mark.parametrize(
    "reply, gold",
    [
        pytest.param(GSM8K_REPLY.replace("#### 72", "#### 73"), GSM8K_GOLD, id="gsm8k-wrong-marker"),
        pytest.param(r"\boxed{\frac{1}{3}}", r"\frac{1}{2}", id="wrong-frac"),
        pytest.param(r"\boxed{\frac{2}{3}}", r"-\frac{2}{3}", id="lost-sign"),
        pytest.param("x = 5", "-5", id="lost-unicode-sign"),
        pytest.param("3-5", "-5", id="subtraction-is-not-negative"),
        pytest.param("It is either 1,2", "12", id="comma-hack-list"),
        pytest.param(r"\boxed{1,2}", "12", id="comma-hack-boxed-set"),
        pytest.param("1,2", "1.2", id="comma-is-no-decimal-point"),
        pytest.param("It rose by 42%", "0.42", id="percent-is-not-a-fraction"),
        pytest.param(r"\boxed{3\pi}", r"3", id="pi-is-not-dropped"),
        pytest.param(r"\boxed{\sqrt{2}}", r"2", id="sqrt-is-not-dropped"),
        pytest.param("The answer is 5.", "4", id="wrong-phrase"),
        pytest.param("7", "Half of 14.\n#### 8", id="wrong-against-raw-gold"),
        pytest.param("1/0", "1", id="zero-denominator"),
    ],
)
def test_wrong_answers_score_zero(reply, gold):
    assert not is_correct(reply, gold)
    assert math_answer(["q"], [reply], answer=[gold]) == [0.0]


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(r"\boxed{72}, or maybe \boxed{71}", id="two-boxes-last-wrong"),
        pytest.param("It could be 72, 73 or 74", id="candidate-list-last-wrong"),
        pytest.param(" ".join(str(n) for n in range(100, 0, -1)), id="countdown-through-gold"),
        pytest.param("#### 71\nthough 72 is also possible", id="marker-commits"),
        pytest.param("The answer is 71, not 72", id="phrase-commits"),
    ],
)
def test_only_the_committed_answer_counts(reply):
    """Last-committed-answer semantics: a right answer anywhere but the committed place scores 0."""
    assert not is_correct(reply, "72")


def test_a_list_ending_in_the_gold_is_judged_by_its_last_number():
    """The documented limit of last-answer semantics: the list's last number is the answer."""
    assert final_answer(" ".join(str(n) for n in range(1, 73))) == "72"


def test_long_numbers_compare_exactly():
    long_third = "0." + "3" * 20000
    assert math_answer(["q"] * 3, [long_third, "1/3", "#### " + long_third], answer=[long_third, long_third + "4", long_third]) == [
        1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param("\\(" * 50000, id="unclosed-parens"),
        pytest.param("\\[x" * 33000, id="unclosed-brackets"),
        pytest.param("$" * 100000, id="dollars"),
        pytest.param("$a " * 33000, id="currency-like"),
        pytest.param("\\boxed{" * 14000, id="unclosed-boxes"),
        pytest.param("\\frac{" * 16000, id="unclosed-fracs"),
        pytest.param("1," * 50000, id="comma-run"),
        pytest.param("1,234" * 20000, id="grouping-run"),
        pytest.param("1/" * 50000, id="slash-run"),
        pytest.param("\n" * 100000, id="newlines"),
        pytest.param("answer is " * 10000, id="phrases"),
        pytest.param("#### " * 20000, id="markers"),
        pytest.param("#" * 100000, id="hashes"),
        pytest.param("Answer:\n" * 12000, id="answer-lines"),
        pytest.param("$5 " * 33000, id="currency-run"),
        pytest.param("-" * 100000 + "1", id="dashes"),
        pytest.param("9" * 100000, id="digits"),
    ],
)
def test_long_adversarial_replies_are_fast(reply):
    started = time.perf_counter()
    assert not is_correct(reply, "12")
    assert time.perf_counter() - started < 1.0  # ~0.05 s here: no quadratic scan


@pytest.mark.parametrize(
    "reply,gold",
    [
        pytest.param(r"\boxed{4}", "a=3, b=4", id="one-value-of-a-system"),
        pytest.param(r"\boxed{a = 7, b = 4}", "a=3, b=4", id="system-with-a-wrong-value"),
        pytest.param(r"\boxed{3}", r"x=2 \text{ or } x=3", id="one-root-of-two"),
        pytest.param(r"\boxed{x = 3}", "x = -1, x = 3", id="one-assignment-of-two"),
        pytest.param(r"\boxed{x != 5}", "5", id="not-equal-relation"),
        pytest.param(r"\boxed{x \le 5}", "5", id="latex-relation"),
        pytest.param("The answer is x >= 5", "5", id="relation-after-phrase"),
    ],
)
def test_relations_and_systems_are_not_read_as_their_last_value(reply, gold):
    """Hostile-review finding: only what followed the last `=` was kept, on both sides."""
    assert not is_correct(reply, gold)


@pytest.mark.parametrize(
    "reply,gold",
    [
        pytest.param("The answer is 15 (x = 3 gives 5*3).", "15", id="aside-after-the-answer"),
        pytest.param("The answer is 1{,}234.", "1234", id="latex-braced-comma"),
        pytest.param(r"\boxed{1\,234}", "1234", id="latex-thin-space"),
        pytest.param(r"\boxed{\text{42 dollars}}", "42", id="number-in-text"),
        pytest.param(r"$$x = \frac{48}{2} = 24$$", "24", id="chain-of-equalities"),
        pytest.param(r"\boxed{x \le 5}", r"x \le 5", id="relation-gold"),
        pytest.param(r"\boxed{(2, 3)}", "x = 2, y = 3", id="pair-for-a-system"),
    ],
)
def test_answers_benchmarks_write_that_were_missed(reply, gold):
    assert is_correct(reply, gold)


@pytest.mark.parametrize(
    "reply,gold,expected",
    [
        pytest.param(r"\boxed{\sum_{i=1}^{3} i}", "1", False, id="subscript-equals-is-no-equation"),
        pytest.param(r"\boxed{\sum_{i=1}^{3} i}", "6", True, id="sum-is-its-value"),
        pytest.param(r"The answer is $\sum_{i=1}^{3} i$", "1", False, id="subscript-equals-after-phrase"),
        pytest.param(r"\boxed{\prod_{k=1}^{4} k}", "4", False, id="product-bound"),
        pytest.param(r"\boxed{P(X=1)}", "1", False, id="equals-in-parentheses"),
        pytest.param(r"\boxed{f(x=2)}", "2", False, id="equals-in-call"),
        pytest.param(r"\boxed{\neg(x=7)}", "7", False, id="negation"),
        pytest.param(r"\boxed{\lnot(x=7)}", "7", False, id="lnot"),
        pytest.param(r"\boxed{\{x = 3\}}", "3", False, id="equals-in-escaped-braces"),
        pytest.param(r"\boxed{x = \sum_{i=1}^{3} i}", "6", True, id="top-level-equals-still-splits"),
    ],
)
def test_an_equals_sign_splits_only_at_the_top_level(reply, gold, expected):
    """Hostile-review finding M1: `=` inside a sub/superscript, braces or parentheses was an equation split."""
    assert is_correct(reply, gold) is expected


@pytest.mark.parametrize(
    "reply,gold,expected",
    [
        pytest.param("1e3", "1", False, id="not-the-mantissa"),
        pytest.param("6.02e23", "6.02", False, id="avogadro-mantissa"),
        pytest.param("1e3", "1000", True, id="plain-exponent"),
        pytest.param(r"\boxed{1e3}", "1000", True, id="boxed-exponent"),
        pytest.param("It is 2.5E-3 m", "0.0025", True, id="negative-exponent-with-unit"),
        pytest.param("1e99999999999999999999999", "1", False, id="exponent-past-decimal"),
        pytest.param(r"\boxed{6.02 \times 10^{23}}", "602000000000000000000000", True, id="times-ten-power-exact"),
        pytest.param(r"\boxed{6.02 \times 10^{23}}", "602000000000000000000001", False, id="times-ten-power-off-by-one"),
    ],
)
def test_scientific_notation_is_one_number(reply, gold, expected):
    """Hostile-review finding M2: `1e3` was read as its mantissa 1."""
    assert is_correct(reply, gold) is expected


@pytest.mark.parametrize(
    "reply,gold,expected",
    [
        pytest.param(r"\boxed{1.2 \times 10^{-5}}", "0.0000123", False, id="scientific-off-by-a-digit"),
        pytest.param(r"\boxed{1.23 \times 10^{-5}}", "0.0000123", True, id="scientific-right"),
        pytest.param(r"\boxed{10^{-7}}", "0.0000002", False, id="power-of-ten"),
        pytest.param(r"\boxed{10^{-7}}", r"\frac{1}{5000000}", False, id="power-vs-frac"),
        pytest.param(r"\boxed{0.1234567 \cdot 1}", "0.1234568", False, id="decimal-dressed-as-expression"),
        pytest.param(r"\boxed{0 \cdot 1}", "0.0000004", False, id="zero-expression"),
        pytest.param(r"\boxed{e}", "2.718281828459045", False, id="e-is-not-its-decimals"),
        pytest.param(r"\boxed{\sqrt{2}}", "1.414214", False, id="root-is-not-its-decimals"),
        pytest.param(r"\boxed{\frac{1}{2} + 0}", "0.5", True, id="expression-equal-to-decimal"),
        pytest.param(r"\boxed{\frac{3}{4}}", "0.75", True, id="frac-vs-decimal"),
        pytest.param(r"\boxed{\frac{1}{2}}", "0.5", True, id="half"),
        pytest.param(r"\boxed{2^{10}}", "1024", True, id="power-value"),
        pytest.param(r"\boxed{\{5\}}", "5", False, id="a-set-is-not-a-number"),
    ],
)
def test_a_number_gold_is_compared_exactly(reply, gold, expected):
    """Hostile-review finding M3: answers that were not plain numbers got math-verify's 6-decimal rounding."""
    assert is_correct(reply, gold) is expected


@pytest.mark.parametrize(
    "reply,gold,expected",
    [
        pytest.param(r"\boxed{41 % 42}", "42", False, id="comment-hides-the-rest"),
        pytest.param(r"\boxed{41 % 42}", "41", True, id="comment-stripped"),
        pytest.param(r"$41 % 42$", "42", False, id="comment-in-span"),
        pytest.param(r"\boxed{25\%}", "25", True, id="escaped-percent"),
        pytest.param("It rose by 42%", "42", True, id="plain-text-percent"),
    ],
)
def test_a_latex_comment_is_not_the_answer(reply, gold, expected):
    """Hostile-review finding M4: `%` starts a comment in LaTeX; what follows it is not what the reply shows."""
    assert is_correct(reply, gold) is expected


@pytest.mark.parametrize(
    "gold", ["NaN", "nan", "-inf", "Infinity", "None", "null", "true", "False", "-", "N/A", "?", "see solution", "no answer given"]
)
def test_placeholder_golds_accept_no_reply(gold):
    """Hostile-review finding M5: a reply echoing a placeholder gold scored 1."""
    assert not is_correct(rf"\boxed{{{gold}}}", gold) and not is_correct(gold, gold)


@pytest.mark.parametrize("gold", [r"\text{Evelyn}", "x", r"\pi", "(2, 3)"])
def test_non_numeric_golds_still_verify(gold):
    assert is_correct(rf"\boxed{{{gold}}}", gold)


def test_zero_width_characters_are_not_separators():
    assert final_answer("4\u200b2") == "42" and is_correct("The answer is 4\u200b2", "42")
    assert not is_correct("4\u200b2", "2")


@pytest.mark.parametrize(
    "reply",
    [r"\boxed{10^{10^{10}}}", r"\boxed{(10^{10})!}", r"\boxed{\binom{10^{12}}{5 \cdot 10^{11}}}", r"\boxed{9^{9^{9}}}",
     r"\boxed{(x+1)^{10^{10}}}", r"\boxed{\prod_{i=1}^{10^{9}} i}", r"\boxed{e^{10^{10}}}", r"\boxed{2^{10^{6}} - 1}"],
)
def test_huge_values_are_never_computed_off_the_main_thread(reply):
    """Hostile-review finding M6: off the main thread math-verify has no deadline, and sympy holds the GIL."""
    import threading

    verdicts = []
    worker = threading.Thread(target=lambda: verdicts.append(is_correct(reply, "1")), daemon=True)
    started = time.perf_counter()
    worker.start()
    worker.join(10)
    assert verdicts == [False] and time.perf_counter() - started < 5


def test_small_powers_and_factorials_still_compute():
    assert is_correct(r"\boxed{2^{2^{2}}}", "16") and is_correct(r"\boxed{5!}", "120") and is_correct(r"\boxed{\binom{5}{2}}", "10")


@pytest.mark.timeout(30)
def test_a_number_followed_by_many_letters_is_read_in_linear_time():
    """Units after a number were matched by a pattern that backtracked exponentially
    (24 letters took seconds, 40 would take hours): a reward-hacking denial of service."""
    from rewards.math import is_correct

    for letters in (40, 400, 4000):
        assert is_correct(r"\boxed{5 " + "a" * letters + "!}", "7") is False
