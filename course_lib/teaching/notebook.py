"""Cell, tag and exercise-metadata parsing shared by the notebook build and the autograder.

:mod:`course_lib.teaching.assign` builds the notebooks from their sources and
:mod:`course_lib.teaching.grading` reads the submissions; both read cells the same way with the
functions here. Standard library only at import time: the exercise process of the grader loads this
file by path (see :mod:`course_lib.teaching.grading.child`).
"""

from __future__ import annotations

import ast
import re

__all__ = [
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
        body = ast.parse(source).body
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


def check_calls(source: str) -> dict[str, str]:
    """``{exercise_id: expression}`` of the ``check("id", expr)`` calls in a code cell."""
    try:
        tree = ast.parse(source)
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
        tree = ast.parse(strip_magics(source))
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
