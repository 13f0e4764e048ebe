"""No solution body in what students get: the pip-installed package (a wheel built from this checkout) and
the student notebooks (``notebooks/student/*.ipynb``).

For every exercise, the function bodies of its solution cell in the instructor source notebook
(``notebooks/NN_slug.py``) and of the reference solutions (``grading/hidden/reference/nbNN.py``) are
normalised (``ast.dump`` of the statements, docstrings left out); no block of statements of any ``.py`` file
of the wheel, nor of any code cell of a student notebook, may contain one of them as a contiguous run. The
stored expected outputs (package data) must be plain numeric arrays (no pickles, no text).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path

import nbformat
import numpy as np
import pytest

from course_lib.teaching import assign
from course_lib.teaching.notebook import cell_source, exercise_cells, strip_magics

REPO = Path(__file__).resolve().parents[1]
REFERENCES = REPO / "grading" / "hidden" / "reference"

#: notebooks whose checkers still hold their reference solutions in course_lib/teaching/exercises/nbNN.py
#: (issue 14: not converted to stored expected outputs yet). The name test is a strict xfail for them:
#: converting one makes it pass, and then the notebook must leave this set. (Their verbatim-body test is
#: a non-strict xfail: some of those references happen to be written differently from the notebook's cell.)
NOT_CONVERTED: set[str] = set()

#: exercises whose answer the science library implements by design, and the module of the wheel that does: the
#: notebook has the student rebuild a piece of a library model and then points at its source (05: "read
#: course_lib/models/schnet.py, it follows the paper line by line"). Only that module is exempt, only for that
#: exercise, and only a science-layer module (never course_lib/teaching/) may be listed.
LIBRARY_IMPLEMENTATIONS = {"05.cfconv": "course_lib/models/schnet.py"}  # InteractionBlock.cfconv


def _body(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.stmt]:
    body = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]  # the docstring
    return body


def _dumps(statements: list[ast.stmt]) -> tuple[str, ...]:
    return tuple(ast.dump(s) for s in statements)


def _functions(tree: ast.AST):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _solutions() -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """``{exercise_id: [(where, normalised body), ...]}`` from the source notebooks and the references."""
    out: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py")):
        nb = assign.read_source(path)
        for exercise_id, _, source in exercise_cells(nb):
            tree = ast.parse(strip_magics(source))
            for fn in _functions(tree):
                body = _body(fn)
                if body and not (len(body) == 1 and isinstance(body[0], (ast.Pass, ast.Raise))):
                    out.setdefault(exercise_id, []).append((f"{path.name}: {fn.name}", _dumps(body)))
    for path in sorted(REFERENCES.glob("nb[0-9][0-9].py")):
        tree = ast.parse(path.read_text())
        solutions = next((n for n in tree.body if isinstance(n, ast.Assign)
                          and any(getattr(t, "id", "") == "SOLUTIONS" for t in n.targets)), None)
        names = {ast.literal_eval(k): v.id for k, v in zip(solutions.value.keys, solutions.value.values)}
        defs = {fn.name: fn for fn in tree.body if isinstance(fn, (ast.FunctionDef, ast.ClassDef))}
        for exercise_id, name in names.items():
            node = defs[name]
            functions = [node] if isinstance(node, ast.FunctionDef) else [  # a class: every method's body
                m for m in node.body if isinstance(m, ast.FunctionDef) and _body(m)]
            for fn in functions:
                where = f"reference/{path.name}: {name}" + ("" if fn is node else f".{fn.name}")
                out.setdefault(exercise_id, []).append((where, _dumps(_body(fn))))
    return out


SOLUTIONS = _solutions()


def _blocks(tree: ast.AST):
    """Every list of statements in ``tree`` (module, function, class, loop, branch bodies)."""
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            block = getattr(node, name, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield _dumps(block)


def _contains(block: tuple[str, ...], run: tuple[str, ...]) -> bool:
    n = len(run)
    return any(block[k:k + n] == run for k in range(len(block) - n + 1))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of course_lib built from a copy of this checkout (what `pip install` puts on a machine)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "course_lib", src / "course_lib", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(src)], check=True, capture_output=True, timeout=600)
    (path,) = out.glob("course_lib-*.whl")
    return path


@pytest.fixture(scope="module")
def wheel_blocks(wheel) -> dict[str, list[tuple[str, ...]]]:
    blocks = {}
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert any(n.endswith("teaching/exercises/expected/nb00.npz") for n in names), "package data missing"
        assert not any("grading/hidden" in n or "/reference/" in n for n in names)
        for name in names:
            if name.endswith(".py"):
                blocks[name] = list(_blocks(ast.parse(z.read(name).decode())))
    return blocks


@pytest.fixture(scope="module")
def student_blocks() -> dict[str, list[tuple[str, ...]]]:
    blocks = {}
    for path in sorted((REPO / "notebooks" / "student").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for k, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                try:
                    tree = ast.parse(strip_magics(cell_source(cell)))
                except SyntaxError:
                    continue
                blocks[f"{path.name} cell {k}"] = list(_blocks(tree))
    return blocks


def _leaks(blocks: dict[str, list[tuple[str, ...]]], exercise_id: str) -> list[str]:
    return [f"{where} contains the body of {origin}"
            for origin, body in SOLUTIONS[exercise_id]
            for where, bs in blocks.items() if any(_contains(b, body) for b in bs)]


def _cases(strict: bool):
    for exercise_id in sorted(SOLUTIONS):
        marks = ()
        if exercise_id.split(".")[0] in NOT_CONVERTED:
            marks = pytest.mark.xfail(strict=strict, reason="reference still in course_lib/teaching/exercises")
        yield pytest.param(exercise_id, marks=marks, id=exercise_id)


@cache
def _targets() -> dict[str, str]:
    """``{exercise_id: name}`` of the function or class each exercise asks for (from the source notebooks)."""
    out = {}
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py")):
        for exercise_id, _, source in exercise_cells(assign.read_source(path)):
            tree = ast.parse(strip_magics(source))
            defs = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
            out[exercise_id] = defs[-1]
    return out


def test_every_exercise_has_a_solution_body_to_look_for():
    ids = {e for path in (REPO / "notebooks").glob("[0-9][0-9]_*.py")
           for e, _, _ in exercise_cells(assign.read_source(path))}
    assert ids and ids <= set(SOLUTIONS)


@pytest.mark.parametrize("exercise_id", list(_cases(strict=True)))
def test_the_checkers_define_nothing_named_like_the_answer(wheel, exercise_id):
    """The public checker module of the notebook defines no function or class with the exercise's name
    (``nb01.message_passing_step??`` showed the answer)."""
    name = _targets()[exercise_id]
    module = f"course_lib/teaching/exercises/nb{exercise_id.split('.')[0]}.py"
    with zipfile.ZipFile(wheel) as z:
        tree = ast.parse(z.read(module).decode())
    assert name not in {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


@pytest.mark.parametrize("exercise_id", list(_cases(strict=False)))
def test_the_wheel_holds_no_solution_body(wheel_blocks, exercise_id):
    exempt = LIBRARY_IMPLEMENTATIONS.get(exercise_id)
    leaks = _leaks({k: v for k, v in wheel_blocks.items() if k != exempt}, exercise_id)
    assert not leaks, "\n".join(leaks)


def test_library_implementations_are_science_modules_that_hold_the_answer(wheel_blocks):
    """The exemptions above name science-layer modules that really contain the answer (no stale entry)."""
    for exercise_id, module in LIBRARY_IMPLEMENTATIONS.items():
        assert module.startswith("course_lib/") and "/teaching/" not in module, module
        assert _leaks({module: wheel_blocks[module]}, exercise_id), (exercise_id, module)


@pytest.mark.parametrize("exercise_id", sorted(SOLUTIONS))
def test_the_student_notebooks_hold_no_solution_body(student_blocks, exercise_id):
    leaks = _leaks(student_blocks, exercise_id)
    assert not leaks, "\n".join(leaks)


def test_the_detector_finds_a_pasted_solution():
    """The scan above is not vacuous: a reference body pasted into a larger function is found."""
    tree = ast.parse((REFERENCES / "nb01.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "message_passing_step")
    pasted = "def helper(h, e, edge_index, phi_e, phi_h):\n    x = 1\n" + "".join(
        f"    {ast.unparse(stmt)}\n" for stmt in _body(fn))
    assert _leaks({"pasted.py": list(_blocks(ast.parse(pasted)))}, "01.message_passing_step")
    assert not _leaks({"other.py": list(_blocks(ast.parse("def f(h):\n    return h + 1\n")))},
                      "01.message_passing_step")


def test_stored_expected_outputs_are_plain_numbers(wheel):
    with zipfile.ZipFile(wheel) as z:
        stored = [n for n in z.namelist() if "/expected/" in n]
        assert stored and all(n.endswith(".npz") for n in stored)
        for name in stored:
            with z.open(name) as fh, np.load(fh, allow_pickle=False) as data:
                for key in data.files:
                    assert re.fullmatch(r"\d\d\.\w+\|[\w .,:/\[\]-]+\|[0-9a-f]{16}(#\w+)?", key), key
                    assert data[key].dtype.kind in "fiub", (name, key, data[key].dtype)


@pytest.mark.parametrize("notebook", sorted(p.stem for p in REFERENCES.glob("nb[0-9][0-9].py")))
def test_stored_expected_outputs_are_up_to_date(notebook):
    """The package's stored answers are what ``make_expected.py`` makes from the references now (same keys,
    same values): a changed checker input or reference without regenerating fails here. Same values means equal
    to a few units in the last place of the precision they were computed in (``_ulp_tolerance``): another CPU's code may
    round a float32 reduction one ulp differently (seen: 2.4e-7 in a float32 distance of 2.99), which is not a
    changed answer; the checkers themselves compare with far looser tolerances."""
    import importlib.util

    from course_lib.teaching.exercises.stored import EXPECTED_DIR

    spec = importlib.util.spec_from_file_location("_make_expected", REFERENCES / "make_expected.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    fresh = make.record(notebook)
    with np.load(EXPECTED_DIR / f"{notebook}.npz", allow_pickle=False) as stored:
        assert sorted(stored.files) == sorted(fresh), "regenerate: python grading/hidden/reference/make_expected.py"
        for key in stored.files:
            np.testing.assert_allclose(stored[key], fresh[key], rtol=_ulp_tolerance(stored[key]),
                                       atol=_ulp_tolerance(stored[key]), err_msg=key)


def _ulp_tolerance(values: np.ndarray) -> float:
    """8 units in the last place of the precision the values were computed in, at least 1e-12: float32 where
    every value is a float32 number (a float32 result stored as float64), else the array's own float dtype."""
    if values.dtype.kind != "f":
        return 1e-12
    single = np.array_equal(values.astype(np.float32).astype(values.dtype), values, equal_nan=True)
    return max(1e-12, 8 * float(np.finfo(np.float32 if single else values.dtype).eps))


def _normalised(text: str) -> str:
    return " ".join(text.split())


def test_model_answers_and_rubrics_stay_with_the_instructor(wheel):
    """The short answers' model answers and rubrics (instructor source notebooks) are in no student notebook and
    nowhere in the wheel."""
    from course_lib.teaching.notebook import answer_cells, rubric_cells

    secrets = []
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py")):
        nb = assign.read_source(path)
        secrets += [(f"{path.name}: answer {aid}", text) for aid, _, text in answer_cells(nb)]
        secrets += [(f"{path.name}: rubric {rid}", text) for rid, text in rubric_cells(nb).items()]
    student_text = _normalised(" ".join(cell_source(c) for p in sorted((REPO / "notebooks" / "student").glob("*.ipynb"))
                                        for c in nbformat.read(p, as_version=4).cells))
    with zipfile.ZipFile(wheel) as z:
        wheel_text = _normalised(" ".join(z.read(n).decode("utf-8", "replace") for n in z.namelist()
                                          if n.endswith((".py", ".md", ".txt", ".json"))))
    for where, text in secrets:
        # any 12 consecutive words of a model answer or rubric would give it away
        words = _normalised(text).split()
        for k in range(0, max(1, len(words) - 11), 6):
            chunk = " ".join(words[k:k + 12])
            assert chunk not in student_text, f"{where} is in a student notebook: {chunk!r}"
            assert chunk not in wheel_text, f"{where} is in the wheel: {chunk!r}"


def test_ulp_tolerance_forgives_rounding_not_changes():
    """A float32 result stored as float64 gets float32's ulp; a float64 result keeps 1e-12; either way a changed
    answer (here 1e-5 relative) still fails."""
    single = np.array([2.9871773719787598, 0.5], dtype=np.float64)  # float32 numbers, stored as float64
    assert _ulp_tolerance(single) == pytest.approx(8 * float(np.finfo(np.float32).eps))
    assert _ulp_tolerance(np.array([2.987177361, 0.1])) == 1e-12
    assert _ulp_tolerance(np.array([1, 2])) == 1e-12
    np.testing.assert_allclose(single, single + [2.4e-7, 0.0], rtol=_ulp_tolerance(single), atol=_ulp_tolerance(single))
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(single, single * (1 + 1e-5), rtol=_ulp_tolerance(single),
                                   atol=_ulp_tolerance(single))
