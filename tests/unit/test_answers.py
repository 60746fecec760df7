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
