"""Predictions and short answers (course_lib.teaching.responses): the cell convention, the student build,
the lint, the grader's rows and the answers files."""

from __future__ import annotations

import csv
import textwrap

import nbformat
import pytest

from course_lib.teaching import assign
from course_lib.teaching.grading import gradebook
from course_lib.teaching.grading.course import CourseNotebook, ResponseSpec
from course_lib.teaching.grading.grader import response_rows
from course_lib.teaching.notebook import ANSWER_PLACEHOLDER, answer_text, read_prediction
from course_lib.teaching.responses import reveal


def _code(source: str, **metadata):
    return nbformat.v4.new_code_cell(source=textwrap.dedent(source), metadata=metadata)


def _md(source: str, **metadata):
    return nbformat.v4.new_markdown_cell(source=source, metadata=metadata)


@pytest.mark.parametrize("source, choices, value", [
    ('p = "b"', "a,b,c", "b"), ("p = 'B '", "a,b,c", "b"), ('p = "(c)"', "a,b,c", "c"),
    ("p = 3", "number", 3.0), ("p = -0.25  # my guess", "number", -0.25),
])
def test_read_prediction_accepts_committed_values(source, choices, value):
    assert read_prediction(source, choices) == (value, None)


@pytest.mark.parametrize("source, choices, words", [
    ("p = None", "a,b,c", "still says None"), ('p = "d"', "a,b,c", "one of a, b, c"),
    ("p = __import__('os').getcwd()", "a,b,c", "plain value"), ("p = 1 +", "a,b,c", "not valid Python"),
    ("p = 'a'\nq = 'b'", "a,b,c", "exactly one assignment"), ("p = 'x'", "number", "finite number"),
    ("p = float('inf')", "number", "plain value"), ("p = 1e999", "number", "finite number"),
    ("p = " + "9" * 400, "number", "finite number"), ("p = True", "number", "finite number"),
])
def test_read_prediction_refuses_everything_else_without_running_it(source, choices, words):
    value, problem = read_prediction(source, choices)
    assert value is None and words in problem


def test_reveal_prints_the_comparison(capsys):
    assert reveal("00.x", None, "b") is None
    assert "not committed a prediction" in capsys.readouterr().out
    assert reveal("00.x", "B", "b") is True
    assert "as you predicted" in capsys.readouterr().out
    assert reveal("00.x", 1.0, 2.0) is False
    assert "which step of your reasoning failed" in capsys.readouterr().out
    assert reveal("00.x", 1.9, 2.0) is True


def _notebook(prediction="p = None  # a, b or c", reveal_call=True, rubric=True, answer="model answer"):
    cells = [_code(prediction, prediction="00.guess", points=1, choices="a,b,c"),
             _code('reveal("00.guess", p, "a")' if reveal_call else "print(1)"),
             _md(answer, answer="00.why", points=2)]
    if rubric:
        cells.append(_md("1 point for X, 1 for Y", rubric="00.why"))
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    return nb


def test_lint_and_student_build():
    assert assign.lint_responses(_notebook(), "00_x") == []
    problems = " ".join(assign.lint_responses(_notebook('p = "a"', False, False, " "), "00_x"))
    for words in ("`name = None`", 'reveal("00.guess"', "rubric cell", "model answer"):
        assert words in problems
    student = assign.build_student_notebook(_notebook(), "00_x")
    texts = [c.source for c in student.cells]
    assert ANSWER_PLACEHOLDER in texts and "model answer" not in texts
    assert not any("1 point for X" in t for t in texts)  # rubrics are instructor material
    assert any(c.metadata.get("prediction") == "00.guess" and c.metadata.get("choices") == "a,b,c"
               for c in student.cells)


def _course():
    responses = [ResponseSpec("00.guess", "prediction", 1, choices="a,b,c", name="p"),
                 ResponseSpec("00.why", "answer", 2, rubric="1 point for X, 1 for Y")]
    return CourseNotebook("00_x", [], "", set(), responses)


def test_response_rows_read_predictions_and_collect_answers():
    cnb = _course()
    cells = [_code('p = "c"', prediction="00.guess"), _md(ANSWER_PLACEHOLDER + "\nBecause X and Y.", answer="00.why")]
    rows = {r.exercise: r for r in response_rows("ann", cnb, cells, {})}
    assert (rows["00.guess"].status, rows["00.guess"].points, rows["00.guess"].message) == ("pass", 1.0,
                                                                                         "prediction: c")
    assert rows["00.why"].status == "manual" and rows["00.why"].points == 0 and rows["00.why"].answer == \
        "Because X and Y."
    # metadata lost: the prediction is found by its variable; an untouched answer is missing
    rows = {r.exercise: r for r in response_rows("bob", cnb, [_code('p = "a"'), _md(ANSWER_PLACEHOLDER,
                                                                                    answer="00.why")], {})}
    assert rows["00.guess"].status == "pass" and rows["00.why"].status == "missing"
    rows = {r.exercise: r for r in response_rows("cy", cnb, [_code("p = None", prediction="00.guess")], {})}
    assert rows["00.guess"].points == 0 and "still says None" in rows["00.guess"].message
    assert answer_text(ANSWER_PLACEHOLDER + "  ") == ""


def test_answers_files_keep_manual_points_apart_and_neutralise_hostile_text(tmp_path):
    cnb = _course()
    hostile = "=HYPERLINK(\"http://x\")\n```\n# heading\n" + "x" * 10_000
    cells = [_code('p = "a"', prediction="00.guess"), _md(hostile, answer="00.why")]
    rows = response_rows("=evil", cnb, cells, {})
    graded = [gradebook.Graded("=evil", "00_x", rows)]
    gradebook.write_outputs(tmp_path, graded, {"00_x": cnb})
    with open(tmp_path / "totals.csv", newline="") as fh:
        totals = list(csv.DictReader(fh))
    assert totals == [{"student": "'=evil", "notebook": "00_x", "points": "1.00", "max_points": "1",
                       "manual_max_points": "2"}]
    with open(tmp_path / "answers.csv", newline="") as fh:
        answers = list(csv.DictReader(fh))
    assert answers[0]["student"] == "'=evil" and answers[0]["answer"].startswith("'=HYPERLINK")
    assert len(answers[0]["answer"]) <= gradebook.ANSWER_LIMIT + 100
    md = (tmp_path / "answers" / "00_x.md").read_text()
    assert "1 point for X, 1 for Y" in md and "````" in md  # the answer is fenced longer than its backticks
    feedback = next((tmp_path / "feedback").glob("*.md")).read_text()
    assert "by hand / 2" in feedback and "Total: 1.00 / 1 points" in feedback


def test_an_unanswered_short_answer_stays_out_of_the_auto_graded_maximum(tmp_path):
    cnb = _course()
    rows = response_rows("dee", cnb, [_code('p = "b"', prediction="00.guess"), _md(ANSWER_PLACEHOLDER,
                                                                                  answer="00.why")], {})
    gradebook.write_outputs(tmp_path, [gradebook.Graded("dee", "00_x", rows)], {"00_x": cnb})
    with open(tmp_path / "totals.csv", newline="") as fh:
        assert list(csv.DictReader(fh)) == [{"student": "dee", "notebook": "00_x", "points": "1.00",
                                             "max_points": "1", "manual_max_points": "2"}]
