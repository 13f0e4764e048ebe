"""The course and the submissions: instructor notebooks, their exercises and points; submitted files.

The points come from the ``points`` cell metadata of the instructor source notebooks
(``notebooks/NN_slug.py``), never from a submission. In a submission, :func:`find_exercise_cell`
finds each exercise cell (by its ``exercise`` metadata, else by the function name).
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from dataclasses import dataclass, field

from course_lib.teaching.notebook import (
    SETUP_TAG,
    answer_cells,
    cell_source,
    check_target,
    defined_names,
    exercise_cells,
    exercise_title,
    import_cells,
    parse_python,
    prediction_cells,
    rubric_cells,
)

__all__ = [
    "ExerciseSpec",
    "ResponseSpec",
    "CourseNotebook",
    "load_course",
    "read_notebook",
    "identify",
    "Located",
    "find_exercise_cell",
    "check_call_pattern",
    "submission_imports",
]


@dataclass
class ExerciseSpec:
    id: str
    points: int
    target: str  # the expression checked in the instructor notebook, e.g. "symmetrize"
    name: str  # the name the student defines
    title: str


@dataclass
class ResponseSpec:
    """A prediction (``kind="prediction"``, ``choices``) or a short answer (``kind="answer"``, ``rubric``)."""

    id: str
    kind: str
    points: int
    choices: str = ""
    rubric: str = ""
    name: str = ""  # the variable a prediction cell assigns (to find the cell when its metadata is lost)


@dataclass
class CourseNotebook:
    slug: str
    exercises: list[ExerciseSpec]
    imports: str  # the import-only cells of the instructor notebook
    student_sources: set[str]  # stripped code-cell sources of the distributed student notebook
    responses: list[ResponseSpec] = field(default_factory=list)  # predictions and short answers, in order

    @property
    def number(self) -> str:
        return self.slug[:2]

    @property
    def max_points(self) -> int:
        """The auto-graded points: exercises and predictions (short answers are marked by hand)."""
        return sum(e.points for e in self.exercises) + sum(r.points for r in self.responses if r.kind == "prediction")


def name_in_target(expr: str) -> str:
    """The name the student defines, from the checked expression (``"symmetrize"``, ``"Model(3).forward"``)."""
    try:
        tree = parse_python(expr, mode="eval")
    except SyntaxError:
        return expr
    names = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name)]
    return names[0] if names else expr


def load_course(notebook_dir=None) -> dict[str, CourseNotebook]:
    """The course notebooks with exercises, read from the instructor sources ``NN_slug.py``."""
    from course_lib.teaching import assign

    course = {}
    for source in assign.source_files(notebook_dir):
        slug = source.stem
        nb = assign.read_source(source)
        exercises = []
        for exercise_id, points, _ in exercise_cells(nb):
            target = check_target(nb, exercise_id) or exercise_id.split(".", 1)[-1]
            exercises.append(ExerciseSpec(exercise_id, points, target, name_in_target(target),
                                          exercise_title(exercise_id) or ""))
        rubrics = rubric_cells(nb)
        responses = [ResponseSpec(pid, "prediction", points, choices=choices, name=_assigned_name(source))
                     for pid, points, choices, source in prediction_cells(nb)]
        responses += [ResponseSpec(aid, "answer", points, rubric=rubrics.get(aid, ""))
                      for aid, points, _ in answer_cells(nb)]
        if not exercises and not responses:
            continue
        student = assign.build_student_notebook(nb, slug)
        sources = {cell_source(c).strip() for c in student.cells if c.get("cell_type") == "code"}
        sources |= {setup.strip() for setup in assign.setup_sources()}  # from an older student notebook too
        course[slug] = CourseNotebook(slug, exercises, assign.imports_source(nb), sources, responses)
    return course


def _assigned_name(source: str) -> str:
    try:
        body = parse_python(source).body
    except SyntaxError:
        return ""
    names = [t.id for n in body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
    return names[0] if names else ""


def read_notebook(data: bytes):
    """``(notebook, None)`` or ``(None, problem)`` for the bytes of an ``.ipynb`` file."""
    import warnings

    import nbformat

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})"
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, (f"the file is not valid notebook JSON ({exc.msg}: line {exc.lineno}, column {exc.colno}): "
                      "it is truncated or damaged; download it again (Colab: File > Download > Download .ipynb)")
    if not isinstance(raw, dict) or not isinstance(raw.get("cells", raw.get("worksheets")), list):
        return None, "the file is JSON but not a Jupyter notebook (no list of cells)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nb = nbformat.reads(text, as_version=4)
    except Exception as exc:  # noqa: BLE001 - any malformed notebook becomes a message
        return None, f"the file is not a readable Jupyter notebook ({type(exc).__name__}: {exc})"
    for cell in nb.cells:
        if "source" not in cell:
            cell["source"] = ""
        if not isinstance(cell.get("metadata"), dict):
            cell["metadata"] = {}
    return nb, None


def identify(text: str, course: dict[str, CourseNotebook]) -> str | None:
    """The slug of the course notebook that ``text`` (notebook JSON, possibly broken) is, or None."""
    votes: Counter = Counter()
    for slug, cnb in course.items():
        votes[slug] += 3 * text.count(slug)
        for e in cnb.exercises:
            votes[slug] += text.count(f'"{e.id}"') + text.count(f"Exercise {e.id}")
        for r in cnb.responses:
            votes[slug] += text.count(f'"{r.id}"')
    ranked = [(v, s) for s, v in votes.items() if v > 0]
    ranked.sort(reverse=True)
    if not ranked or (len(ranked) > 1 and ranked[0][0] == ranked[1][0]):
        return None
    return ranked[0][1]


# --------------------------------------------------------------------------------------------
# the exercise cells of a submission
# --------------------------------------------------------------------------------------------


def check_call_pattern(exercise_id: str) -> re.Pattern:
    """Matches the self-check call ``check("<exercise_id>", ...)`` in a cell."""
    return re.compile(r"check\(\s*['\"]" + re.escape(exercise_id) + r"['\"]")


@dataclass
class Located:
    """Where an exercise cell was found in a submission (``index`` None: not found)."""

    index: int | None
    source: str = ""
    how: str = "metadata"  # "metadata" | "name" | "missing" | "renamed"
    notes: list[str] = field(default_factory=list)
    problem: str = ""


def find_exercise_cell(cells: list, exercise_id: str, target_name: str) -> Located:
    """Find the solution cell of ``exercise_id`` among ``cells`` (the code cells of a notebook).

    First the code cell whose ``exercise`` metadata is ``exercise_id`` (the last one defining
    ``target_name`` when the cell was duplicated); when the metadata was lost, the last cell that
    defines ``target_name`` (or holds the exercise's stub) before its ``check("<id>", ...)`` cell.
    """
    code = [(i, c) for i, c in enumerate(cells) if c.get("cell_type") == "code"]
    tagged = [(i, c) for i, c in code if str(c.get("metadata", {}).get("exercise", "")) == exercise_id]
    check_re = check_call_pattern(exercise_id)
    check_cells = [i for i, c in code if check_re.search(cell_source(c))]

    def defines(c) -> bool:
        return target_name in defined_names(cell_source(c))

    if tagged:
        good = [(i, c) for i, c in tagged if defines(c)]
        i, c = (good or tagged)[-1]
        loc = Located(i, cell_source(c))
        if len(tagged) > 1:
            loc.notes.append(f"{len(tagged)} cells carry the metadata exercise={exercise_id}; graded cell {i}")
        if not good:
            defined = ", ".join(f"`{n}`" for n in defined_names(loc.source)) or "nothing"
            loc.how = "renamed"
            loc.problem = (f"the exercise cell (cell {i}) no longer defines `{target_name}` (it defines {defined}): "
                           f"keep the name `{target_name}` of the distributed notebook")
    else:
        stub = f"Exercise {exercise_id}"
        candidates = [(i, c) for i, c in code if defines(c) or stub in cell_source(c)]
        if check_cells:
            before = [(i, c) for i, c in candidates if i < check_cells[0]]
            candidates = before or candidates
        if not candidates:
            return Located(None, how="missing", problem=(
                f"no exercise cell for {exercise_id}: no cell carries its metadata or defines `{target_name}` "
                "(deleted, or the function renamed?); restore the cell from the distributed notebook"))
        i, c = candidates[-1]
        loc = Located(i, cell_source(c), how="name")
        loc.notes.append(f"the exercise metadata of cell {i} was lost; found the cell by its name `{target_name}`")
    if check_cells and loc.index is not None and all(k < loc.index for k in check_cells):
        loc.notes.append(f"the exercise cell (cell {loc.index}) comes after its check cell (cell {check_cells[0]})")
    return loc


def submission_imports(cells, instructor_imports: str) -> list[str]:
    """The submission's import-only code cells that are not already among the instructor's imports."""
    known = {line.strip() for line in instructor_imports.split("\n")}
    return [source for source in import_cells(cells, skip_tags=(SETUP_TAG,))
            if not all(line.strip() in known for line in source.split("\n"))]
