"""Answer extraction and equivalence, on hand-made cases and on the shipped data sets."""

from __future__ import annotations

import threading

import pytest

from engine.answers import answers_equal, extract_answer, group_answers, is_correct, last_boxed
from engine.errors import InvalidRequestError
from engine.problems import get_problem, load_problem_set


@pytest.mark.parametrize(
    "text, expected",
    [
        ("So the area is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("First \\boxed{3}, then corrected: \\boxed{4}", "4"),
        ("\\boxed{\\left\\{ 1, 2 \\right\\}}", "\\left\\{ 1, 2 \\right\\}"),
        ("\\boxed{x^{2}+\\sqrt{y_{1}}}", "x^{2}+\\sqrt{y_{1}}"),
        ("The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
        ("Therefore, the answer is 42.", "42"),
        ("The answer is: $18$", "18"),
        ("She has 5 + 3 = 8 apples.\n#### 8", "8"),
        ("He paid $1,250 in total for 3 items", "3"),
        ("Total: 1,250 dollars", "1250"),
        ("It is -0.5 degrees", "-0.5"),
        ("no digits at all", None),
        ("", None),
        ("\\boxed{unclosed", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_last_boxed_ignores_escaped_braces():
    assert last_boxed("\\boxed{a \\} b}") == "a \\} b"
    assert last_boxed("\\fbox{7}") == "7"


@pytest.mark.parametrize(
    "a, b, same",
    [
        ("72", "72.0", True),
        ("2,125", "2125", True),
        ("\\frac{1}{2}", "0.5", True),
        ("\\dfrac{3}{4}", "3/4", True),
        ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", True),
        ("10\\%", "10", True),
        ("90^\\circ", "90", True),
        ("\\text{(B)}", "(B)", True),
        ("x^2+2x+1", "(x+1)^2", True),
        ("5", "6", False),
        ("\\frac{1}{3}", "0.33", False),
        (None, "1", False),
    ],
)
def test_answers_equal(a, b, same):
    assert answers_equal(a, b) is same


def test_equivalence_works_off_the_main_thread():
    """math-verify's timeouts use signal.alarm; the engine's worker thread must still compare."""
    out = []
    t = threading.Thread(target=lambda: out.append(answers_equal("x^2+2x+1", "(x+1)^2")))
    t.start()
    t.join()
    assert out == [True]


def test_is_correct_reads_gsm8k_and_boxed_references():
    assert is_correct("18", "Janet sells 16 - 3 - 4 = 9 eggs... 9 * 2 = 18\n#### 18") is True
    assert is_correct("17", "#### 18") is False
    assert is_correct("\\frac12", "\\boxed{\\frac{1}{2}}") is True
    assert is_correct("3", None) is None and is_correct("3", "  ") is None


def test_group_answers_for_voting():
    groups = group_answers(["0.5", "\\frac{1}{2}", None, "2", "1/2", "2.0"])
    assert groups == [0, 0, None, 3, 0, 3]


def test_every_gsm8k_reference_extracts_to_its_final_number():
    rows = load_problem_set("gsm8k")
    assert len(rows) == 1319
    assert rows[0].question.startswith("Janet") and rows[0].reference == "18"
    for p in rows:
        final = p.solution.split("####")[-1].strip()
        assert answers_equal(p.reference, final), p.solution[-80:]
        assert is_correct(p.reference, p.solution) is True


def test_every_math500_solution_extracts_to_its_answer():
    rows = load_problem_set("math500")
    assert len(rows) == 500
    assert all(extract_answer(p.solution) == p.reference for p in rows)
    assert {p.meta["level"] for p in rows} == {1, 2, 3, 4, 5}


def test_problem_lookup_errors_are_clear():
    with pytest.raises(InvalidRequestError, match="choose one of gsm8k, math500"):
        get_problem("aime", 0)
    with pytest.raises(InvalidRequestError, match="problems 0 to 499; there is no #500"):
        get_problem("math500", 500)
    assert get_problem("gsm8k", 3).label == "gsm8k #3"


# --- rules that respect words (issue 27) -----------------------------------------------------------
# (text, answer read as any answer, answer read where the reference is a number)
ADVERSARIAL = [
    # the phrase inside a longer word is no phrase
    ("Wait, the answer isn't even 654. So we can have 654.", "654", "654"),
    ("The answer isn't 12; it is 14.", "14", "14"),
    ("The answer isnt obvious, but 7 works.", "7", "7"),
    ("My final answer isn't ready, still 3 steps left.", "3", "3"),
    ("The answers is 5", "5", "5"),
    ("Reanswer is 9 maybe", "9", "9"),
    ("Thefinal answer is 8, no wait 9", "8", "8"),  # "answer is" still stands as words
    # a phrase that names no number gives way where the reference is a number
    ("The answer is: answer", "answer", None),
    ("2 + 2 = 4. The answer is: answer", "answer", "4"),
    ("\\boxed{answer}", "answer", None),
    ("So 6 * 7 = 42, thus \\boxed{answer}", "answer", "42"),
    ("The final answer is $x$. Since x = 3, done.", "x", "3"),
    ("The answer is unknown, but we got 11 earlier.", "unknown, but we got 11 earlier", "11"),
    ("#### answer\nWe computed 15 before.", "answer", "15"),
    ("The answer is therefore 1,250 dollars.", "therefore 1,250 dollars", "1250"),
    ("the answer is probably 7.", "probably 7", "7"),
    # numbers with units and commas
    ("The answer is 38 apples.", "38", "38"),
    ("The answer is $1,234.50 per week.", "1234.50", "1234.50"),
    ("The answer is 18%.", "18", "18"),
    ("The answer is 5 m/s.", "5", "5"),
    ("The answer is -3 degrees.", "-3", "-3"),
    ("The answer is .75 of the cake", ".75", ".75"),
    ("The answer is 3/4 cups", "3/4", "3/4"),
    ("Total: 12,000 people", "12000", "12000"),
    ("She ran 5 km and then 3.5 km.", "3.5", "3.5"),
    ("The answer is 1,2,3 in order", "1,2,3", "1,2,3"),
    # numbers inside words are not numbers
    ("We need H2O and CO2 to make 6 cups", "6", "6"),
    ("Version v1.5 says 12", "12", "12"),
    ("x2 means twice; the total is 10", "10", "10"),
    ("5-3 is the difference", "3", "3"),
    ("x = -4", "-4", "-4"),
    # boxed answers stay first when they hold a number
    ("\\boxed{\\frac{1}{2}} because 3 halves", "\\frac{1}{2}", "\\frac{1}{2}"),
    ("The answer is 5. Actually \\boxed{6}", "6", "6"),
    ("\\boxed{42 \\text{ apples}}", "42 \\text{ apples}", "42 \\text{ apples}"),
    ("The final answer is $\\boxed{12}$", "12", "12"),
    # case and punctuation around the phrase
    ("THE ANSWER IS 99!", "99", "99"),
    ("Final Answer: the final answer is 4. I hope it is correct.", "4", "4"),
    ("the answer is:\n7", "7", "7"),
    ("no answer here at all", None, None),
]


@pytest.mark.parametrize("text, anything, numeric", ADVERSARIAL)
def test_answer_rules_respect_words(text, anything, numeric):
    assert extract_answer(text) == anything
    assert extract_answer(text, numeric=True) == numeric


def test_answers_read_as_numbers_where_the_reference_is_one():
    from engine.answers import is_numeric
    from engine.protocol import RunContext

    assert is_numeric("18") and is_numeric("#### 1,250") and is_numeric("\\boxed{-0.5}")
    assert not is_numeric("x^2+1") and not is_numeric("(B)") and not is_numeric(None)
    text = "2 + 2 = 4. The answer is: answer"
    assert RunContext("r", "q", reference="4").answer(text) == "4"
    assert RunContext("r", "q", reference="#### 4").answer(text) == "4"
    assert RunContext("r", "q", reference="x+1").answer(text) == "answer"
    assert RunContext("r", "q").answer(text) == "answer"
    assert is_correct(RunContext("r", "q", reference="4").answer(text), "4") is True
