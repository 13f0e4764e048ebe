"""Cell, tag and exercise-metadata parsing shared by the notebook build and the autograder.

:mod:`course_lib.teaching.assign` builds the notebooks from their sources and
:mod:`course_lib.teaching.grading` reads the submissions; both read cells the same way with the
functions here. Standard library only at import time: the exercise process of the grader loads this
file by path (see :mod:`course_lib.teaching.grading.child`).
"""

from __future__ import annotations

import ast
import math
import re
import threading

_AST_LOCK = threading.Lock()


def parse_python(source: str, mode: str = "exec") -> ast.AST:
    """``ast.parse``, one thread at a time, retried on a spurious ``SystemError``.

    CPython 3.11's AST constructor can raise ``SystemError: AST constructor recursion depth mismatch`` for valid
    source (CPython gh-106905: its depth bookkeeping goes wrong on an error path; seen rarely, in threaded
    programs). The grader parses submissions in parallel threads (``--jobs``) and met it once on a valid
    submission; a parse behind one lock, retried twice on that message, keeps it from becoming a verdict."""
    for _retry in range(2):
        try:
            with _AST_LOCK:
                return ast.parse(source, mode=mode)
        except SystemError as err:
            if "recursion depth mismatch" not in str(err):
                raise
    with _AST_LOCK:  # the third try: whatever it raises is the answer
        return ast.parse(source, mode=mode)


__all__ = [
    "parse_python",
    "BADGE_TAG",
    "SETUP_TAG",
    "HIDDEN_TAG",
    "cell_source",
    "cell_tags",
    "is_import_only",
    "import_cells",
    "exercise_cells",
    "check_calls",
    "check_target",
    "exercise_registry",
    "exercise_title",
    "strip_magics",
    "defined_names",
    "prediction_cells",
    "read_prediction",
    "answer_cells",
    "rubric_cells",
    "ANSWER_PLACEHOLDER",
    "answer_text",
]

BADGE_TAG = "course-badge"
SETUP_TAG = "course-setup"
HIDDEN_TAG = "hidden"


def cell_source(cell) -> str:
    """The source of a cell as one string (nbformat keeps it as a string or a list of lines)."""
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def cell_tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []) or [])


def is_import_only(source: str) -> bool:
    """True when ``source`` parses and is made only of ``import x`` / ``from x import y`` statements."""
    try:
        body = parse_python(source).body
    except SyntaxError:
        return False
    return bool(body) and all(isinstance(stmt, (ast.Import, ast.ImportFrom)) for stmt in body)


def import_cells(cells, skip_tags: tuple[str, ...] = ()) -> list[str]:
    """Sources of the import-only code cells, leaving out exercise cells and cells tagged ``skip_tags``."""
    chunks = []
    for cell in cells:
        if cell.get("cell_type") != "code" or cell.get("metadata", {}).get("exercise"):
            continue
        if any(tag in skip_tags for tag in cell_tags(cell)):
            continue
        source = cell_source(cell)
        if is_import_only(source):
            chunks.append(source)
    return chunks


# --------------------------------------------------------------------------------------------
# exercises: ``exercise``/``points`` metadata and the ``check("id", expr)`` cell after them
# --------------------------------------------------------------------------------------------


def exercise_cells(nb) -> list[tuple[str, int, str]]:
    """``(exercise_id, points, source)`` of every exercise (solution) cell, in notebook order."""
    out = []
    for cell in nb.cells:
        md = cell.get("metadata", {})
        if cell.get("cell_type") == "code" and md.get("exercise"):
            out.append((str(md["exercise"]), int(md.get("points", 0)), cell_source(cell)))
    return out


# --------------------------------------------------------------------------------------------
# predictions (``prediction="NN.name" points=1 choices="a,b,c"`` code cells) and short answers
# (``answer="NN.name" points=2`` markdown cells, with a ``rubric="NN.name"`` markdown cell for the instructor)
# --------------------------------------------------------------------------------------------

#: what the student version of an answer cell holds until the student writes there
ANSWER_PLACEHOLDER = "*Your answer (double-click this cell to edit it):*"


def prediction_cells(nb) -> list[tuple[str, int, str, str]]:
    """``(prediction_id, points, choices, source)`` of every prediction cell, in notebook order.

    ``choices`` is the cell's ``choices`` metadata: letters separated by commas (``"a,b,c"``) or
    ``"number"`` for a numeric prediction.
    """
    out = []
    for cell in nb.cells:
        md = cell.get("metadata", {})
        if cell.get("cell_type") == "code" and md.get("prediction"):
            out.append((str(md["prediction"]), int(md.get("points", 0)), str(md.get("choices", "")),
                        cell_source(cell)))
    return out


def read_prediction(source: str, choices: str) -> tuple[object, str | None]:
    """``(value, None)`` for a committed prediction, ``(None, problem)`` otherwise.

    The cell must be one assignment ``name = <literal>`` (read with :func:`ast.literal_eval`, never run):
    a letter among ``choices`` (case and spaces ignored) or, for ``choices="number"``, a finite number.
    """
    try:
        body = parse_python(strip_magics(source)).body
    except SyntaxError as exc:
        return None, f"the prediction cell is not valid Python ({exc.msg}, line {exc.lineno})"
    assigns = [n for n in body if isinstance(n, ast.Assign)]
    if len(assigns) != 1:
        return None, "the prediction cell must hold exactly one assignment `name = your prediction`"
    try:
        value = ast.literal_eval(assigns[0].value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None, "write the prediction as a plain value (a letter in quotes, or a number), not an expression"
    if value is None or value == "" or value is Ellipsis:
        return None, "no prediction committed (the cell still says None)"
    if choices == "number":
        try:
            number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        except OverflowError:  # an integer literal beyond the float range
            number = None
        if number is None or not math.isfinite(number):
            return None, f"the prediction must be a finite number, got {str(value)[:40]!r}"
        return number, None
    allowed = [c.strip().lower() for c in choices.split(",") if c.strip()]
    letter = str(value).strip().strip("()").lower()
    if letter not in allowed:
        return None, f"the prediction must be one of {', '.join(allowed)}, got {str(value)[:40]!r}"
    return letter, None


def answer_cells(nb) -> list[tuple[str, int, str]]:
    """``(answer_id, points, text)`` of every short-answer (markdown) cell, in notebook order."""
    out = []
    for cell in nb.cells:
        md = cell.get("metadata", {})
        if cell.get("cell_type") == "markdown" and md.get("answer"):
            out.append((str(md["answer"]), int(md.get("points", 0)), cell_source(cell)))
    return out


def answer_text(text: str) -> str:
    """The student's words in an answer cell: the placeholder removed, whitespace trimmed ("" if unanswered)."""
    return text.replace(ANSWER_PLACEHOLDER, "").strip()


def rubric_cells(nb) -> dict[str, str]:
    """``{answer_id: rubric text}`` of the instructor's rubric cells (markdown, ``rubric="NN.name"``)."""
    return {str(c["metadata"]["rubric"]): cell_source(c) for c in nb.cells
            if c.get("cell_type") == "markdown" and c.get("metadata", {}).get("rubric")}


def check_calls(source: str) -> dict[str, str]:
    """``{exercise_id: expression}`` of the ``check("id", expr)`` calls in a code cell."""
    try:
        tree = parse_python(source)
    except SyntaxError:
        return {}
    out = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or len(node.args) < 2:
            continue
        func = node.func
        name = getattr(func, "id", None) if isinstance(func, ast.Name) else getattr(func, "attr", None)
        first = node.args[0]
        if name == "check" and isinstance(first, ast.Constant) and isinstance(first.value, str):
            out.setdefault(first.value, ast.unparse(node.args[1]))
    return out


def check_target(nb, exercise_id: str) -> str | None:
    """The expression checked by ``check("<exercise_id>", expr)`` in the code cell after the exercise.

    Returns ``None`` when the next code cell has no such call.
    """
    cells = nb.cells
    for i, cell in enumerate(cells):
        if cell.get("cell_type") == "code" and cell.get("metadata", {}).get("exercise") == exercise_id:
            nxt = next((c for c in cells[i + 1 :] if c.get("cell_type") == "code"), None)
            return None if nxt is None else check_calls(cell_source(nxt)).get(exercise_id)
    return None


def exercise_registry() -> dict:
    """The exercise registry (:data:`course_lib.teaching.checks.EXERCISES`) with every checker module imported."""
    from course_lib.teaching import checks, exercises

    exercises.load_checkers()
    return checks.EXERCISES


def exercise_title(exercise_id: str) -> str | None:
    """The title an exercise's checker was registered with (None: no checker)."""
    ex = exercise_registry().get(exercise_id)
    return ex.title if ex is not None else None


# --------------------------------------------------------------------------------------------
# code cells as the grader runs them
# --------------------------------------------------------------------------------------------


def strip_magics(source: str) -> str:
    """IPython line magics and shell escapes (``%timeit``, ``!pip``) commented out."""
    return "\n".join(re.sub(r"^(\s*)([%!])", r"\1# \2", line) for line in source.split("\n"))


def defined_names(source: str) -> list[str]:
    """Top-level names a cell defines (functions, classes, assignments)."""
    try:
        tree = parse_python(strip_magics(source))
    except SyntaxError:
        return re.findall(r"^(?:def|class)\s+([A-Za-z_]\w*)", source, flags=re.MULTILINE)
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names += [n.id for n in ast.walk(t) if isinstance(n, ast.Name)]
    return names
