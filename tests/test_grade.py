"""Tests of the autograder (:mod:`course_lib.teaching.grade`) on the shipped sample submissions and on its pieces.

Two grading runs are shared by most tests (module-scoped fixtures):

* ``graded``: every sample of ``grading/samples/nb00`` with ``--no-run`` (exercises, scans and the
  hidden tests; no notebook execution), compared row by row with ``expected_gradebook.csv``;
* ``graded_run``: ``infinite_loop`` and ``cheater`` again, this time with the notebook run in a
  kernel (cell time-out, kernel audit hook): the same rows must come out (the verdict does not
  depend on the run or on the run number).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import nbformat
import pytest

from course_lib.teaching import grade

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "grading" / "samples" / "nb00"
HIDDEN = REPO / "grading" / "hidden"
EXPECTED = SAMPLES / "expected_gradebook.csv"
SOURCE = REPO / "notebooks" / "00_symmetry_primer.py"

needs_nb00 = pytest.mark.skipif(not SOURCE.is_file() or not SAMPLES.is_dir(), reason="notebook 00 not there yet")
REGENERATE = ("python -m course_lib.teaching.grade grading/samples/nb00 --out /tmp/samples-graded "
              "--hidden grading/hidden "
              "--no-run --exercise-timeout 10 --jobs 2 && cp /tmp/samples-graded/gradebook.csv "
              "grading/samples/nb00/expected_gradebook.csv (after reviewing the differences)")


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _grade(subs: Path, out: Path, *extra: str) -> int:
    return grade.main([str(subs), "--out", str(out), "--hidden", str(HIDDEN), "--exercise-timeout", "10",
                       "--jobs", "2", *extra])


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    if not SOURCE.is_file() or not SAMPLES.is_dir():
        pytest.skip("notebook 00 not there yet")
    before = _hashes(SAMPLES)
    out = tmp_path_factory.mktemp("graded")
    assert _grade(SAMPLES, out, "--no-run") == 0
    return {"out": out, "before": before, "after": _hashes(SAMPLES), "rows": _rows(out / "gradebook.csv")}


@pytest.fixture(scope="module")
def graded_run(tmp_path_factory):
    if not SOURCE.is_file() or not SAMPLES.is_dir():
        pytest.skip("notebook 00 not there yet")
    subs = tmp_path_factory.mktemp("subs")
    for name in ("infinite_loop", "cheater"):
        shutil.copy(SAMPLES / f"{name}.ipynb", subs / f"{name}.ipynb")
    before = _hashes(subs)
    out = tmp_path_factory.mktemp("graded_run")
    assert _grade(subs, out, "--cell-timeout", "10", "--notebook-timeout", "60") == 0
    runs = {r["student"]: r for r in json.loads((out / "runs.json").read_text())}
    return {"out": out, "rows": _rows(out / "gradebook.csv"), "runs": runs, "unchanged": before == _hashes(subs)}


# --------------------------------------------------------------------------------------------
# the shipped samples
# --------------------------------------------------------------------------------------------


@needs_nb00
def test_samples_gradebook_is_exactly_the_expected_one(graded):
    got, want = graded["rows"], _rows(EXPECTED)
    assert [tuple(r.values())[:6] for r in got] == [tuple(r.values())[:6] for r in want], REGENERATE
    for g, w in zip(got, want):
        assert g == w, f"message of {g['student']} {g['exercise']} differs; regenerate with: {REGENERATE}"


@needs_nb00
def test_samples_statuses_and_points(graded):
    by = {(r["student"], r["exercise"]): r for r in graded["rows"]}
    for ex in ("00.pairwise_distances", "00.symmetrize", "00.radial_field", "00.gated_nonlinearity"):
        assert by["correct", ex]["status"] == "pass"
        assert by["correct", ex]["points"] == f"{float(by['correct', ex]['max_points']):.2f}"
        assert by["not_json", ex]["status"] == "error"
        assert "not valid notebook JSON" in by["not_json", ex]["message"]
    assert by["infinite_loop", "00.pairwise_distances"]["status"] == "timeout"
    assert by["infinite_loop", "00.symmetrize"]["status"] == "pass"
    assert by["partial", "00.pairwise_distances"]["status"] == "pass"
    assert by["partial", "00.symmetrize"]["status"] == "partial"
    assert "metadata of cell" in by["partial", "00.symmetrize"]["message"]  # found by name
    assert by["partial", "00.radial_field"]["status"] == "fail"
    assert "not implemented" in by["partial", "00.radial_field"]["message"]
    assert by["broken_equivariance", "00.gated_nonlinearity"]["status"] in ("partial", "fail")
    assert float(by["broken_equivariance", "00.gated_nonlinearity"]["points"]) < 2
    for ex in ("00.pairwise_distances", "00.symmetrize", "00.radial_field"):
        row = by["cheater", ex]
        assert row["status"] == "flagged" and row["points"] == "0.00"
        assert row["message"].startswith("flagged for review:")
    assert "course_lib.symmetry.equivariance_error" in by["cheater", "00.pairwise_distances"]["message"]
    assert "run_checker" in by["cheater", "00.symmetrize"]["message"]
    assert "read the hidden tests" in by["cheater", "00.radial_field"]["message"]
    assert by["cheater", "00.gated_nonlinearity"]["status"] == "pass"  # flags are per exercise


@needs_nb00
def test_outputs_feedback_and_json(graded):
    out = graded["out"]
    records = json.loads((out / "gradebook.json").read_text())
    assert [list(r) for r in records][0] == list(grade.COLUMNS)
    assert [(r["student"], r["exercise"], f"{r['points']:.2f}", r["status"]) for r in records] == [
        (r["student"], r["exercise"], r["points"], r["status"]) for r in graded["rows"]]
    students = {r["student"] for r in graded["rows"]}
    assert sorted(p.stem for p in (out / "feedback").glob("*.md")) == sorted(students)
    broken = (out / "feedback" / "broken_equivariance.md").read_text()
    assert "course_lib.symmetry error" in broken and "not equivariant under rotation" in broken
    assert "Total:" in broken
    assert "flagged for review" in (out / "feedback" / "cheater.md").read_text()
    assert "not valid notebook JSON" in (out / "feedback" / "not_json.md").read_text()
    totals = {r["student"]: r for r in _rows(out / "totals.csv")}
    assert totals["correct"]["points"] == f"{float(totals['correct']['max_points']):.2f}"


@needs_nb00
def test_submissions_are_not_modified(graded, graded_run):
    assert graded["before"] == graded["after"]
    assert graded_run["unchanged"]


@needs_nb00
def test_second_run_with_the_notebook_executed_gives_the_same_rows(graded, graded_run):
    first = [r for r in graded["rows"] if r["student"] in ("infinite_loop", "cheater")]
    assert graded_run["rows"] == first


@needs_nb00
def test_notebook_run_times_out_cleanly_and_audits_the_kernel(graded_run):
    loop = graded_run["runs"]["infinite_loop"]
    assert loop["status"] == "timeout"
    timed_out = [c for c in loop["cells"] if c["status"] == "timeout"]
    assert timed_out and "check(" in timed_out[0]["head"]
    assert any(c["status"] == "ok" for c in loop["cells"] if c["index"] > timed_out[0]["index"])  # it went on
    cheater = graded_run["runs"]["cheater"]
    assert any("read the hidden tests" in reason for _, reason in cheater["events"])
    assert (graded_run["out"] / "executed" / "cheater" / "00_symmetry_primer.ipynb").is_file()


@needs_nb00
def test_broken_equivariance_passes_the_public_check_and_fails_the_hidden_one():
    from course_lib.teaching.checks import Feedback
    from course_lib.teaching.exercises import check

    nb = nbformat.read(SAMPLES / "broken_equivariance.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("exercise") == "00.gated_nonlinearity")
    ns: dict = {}
    exec("import torch\n" + cell.source, ns)  # noqa: S102
    fn = ns["gated_nonlinearity"]
    assert check("00.gated_nonlinearity", fn, verbose=False).passed
    spec = importlib.util.spec_from_file_location("_hidden_nb00_test", HIDDEN / "nb00.py")
    hidden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hidden)
    fb = Feedback()
    hidden.HIDDEN["00.gated_nonlinearity"](fn, fb)
    assert fb.failed and any("course_lib.symmetry error" in m for m in fb.failed)
    assert dict(fb.cases)["public check"] == 1.0


# --------------------------------------------------------------------------------------------
# robustness: a notebook with a renamed, a raising, a deleted and a chatty exercise
# --------------------------------------------------------------------------------------------


@needs_nb00
def test_robust_to_broken_cells_and_folder_layout(tmp_path):
    sys.path.insert(0, str(REPO / "grading" / "samples"))
    try:
        import make_samples
    finally:
        sys.path.pop(0)
    nb = make_samples.student_notebook()
    cells = []
    for cell in nb.cells:
        ex = cell.get("metadata", {}).get("exercise")
        if ex == "00.pairwise_distances":
            cell.source = cell.source.replace("def pairwise_distances", "def pairwise_distance")
        elif ex == "00.symmetrize":
            cell.source = "raise ValueError('I broke this cell')\n" + cell.source
        elif ex == "00.radial_field":
            continue  # deleted
        elif ex == "00.gated_nonlinearity":
            cell.source = make_samples.fill(cell.source, "print('x' * 3_000_000)\nreturn vectors")
        cells.append(cell)
    nb.cells = cells
    (tmp_path / "subs" / "robin").mkdir(parents=True)
    nbformat.write(nb, tmp_path / "subs" / "robin" / "00_symmetry_primer.ipynb")
    (tmp_path / "subs" / "notes.txt").write_text("not a notebook")
    rc = grade.main([str(tmp_path / "subs"), "--out", str(tmp_path / "out"), "--hidden", str(HIDDEN), "--no-run",
                     "--exercise-timeout", "20"])
    assert rc == 0
    by = {r["exercise"]: r for r in _rows(tmp_path / "out" / "gradebook.csv")}
    assert {r["student"] for r in by.values()} == {"robin"}
    assert by["00.pairwise_distances"]["status"] == "missing"
    assert "pairwise_distance`" in by["00.pairwise_distances"]["message"]  # names what the cell defines
    assert by["00.symmetrize"]["status"] == "error" and "I broke this cell" in by["00.symmetrize"]["message"]
    assert by["00.radial_field"]["status"] == "missing"
    assert "no exercise cell" in by["00.radial_field"]["message"]
    assert by["00.gated_nonlinearity"]["status"] in ("partial", "fail")  # no gate: equivariant, wrong values
    feedback = (tmp_path / "out" / "feedback" / "robin.md").read_text()
    assert "dropped by the autograder" in feedback and len(feedback) < 100_000


# --------------------------------------------------------------------------------------------
# unit tests of the pieces
# --------------------------------------------------------------------------------------------


def _code(source: str, **metadata) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(source=textwrap.dedent(source), metadata=metadata)


def test_find_exercise_cell_by_metadata_name_and_missing():
    check_cell = _code('check("00.f", f)')
    tagged = _code("def f(x):\n    return x\n", exercise="00.f", points=1)
    loc = grade.find_exercise_cell([_code("import torch"), tagged, check_cell], "00.f", "f")
    assert (loc.index, loc.how, loc.notes) == (1, "metadata", [])
    # metadata lost (e.g. the cell was re-created): found by the name it defines, before its check cell
    lost = _code("def f(x):\n    return 2 * x\n")
    later = _code("def f(x):\n    return 3 * x\n")
    loc = grade.find_exercise_cell([lost, check_cell, later], "00.f", "f")
    assert loc.index == 0 and loc.how == "name" and "metadata" in loc.notes[0]
    # an untouched stub is found by its message
    stub = _code('def g():\n    raise NotImplementedError("Exercise 00.f (title): hint")\n')
    assert grade.find_exercise_cell([stub, check_cell], "00.f", "f").index == 0
    # renamed
    renamed = _code("def ff(x):\n    return x\n", exercise="00.f", points=1)
    loc = grade.find_exercise_cell([renamed, check_cell], "00.f", "f")
    assert loc.how == "renamed" and "`ff`" in loc.problem
    # deleted
    loc = grade.find_exercise_cell([_code("x = 1"), check_cell], "00.f", "f")
    assert loc.index is None and "no exercise cell" in loc.problem
    # reordered: the exercise cell after its check cell
    loc = grade.find_exercise_cell([check_cell, tagged], "00.f", "f")
    assert loc.index == 1 and any("after its check cell" in n for n in loc.notes)


def test_capped_output():
    out = grade.CappedText(limit=100)
    for _ in range(1000):
        print("x" * 50, file=out)
    out.buffer.write(b"bytes too")
    text = out.getvalue()
    assert text.startswith("x" * 50) and len(text) < 200
    assert "more characters of output dropped by the autograder" in text
    assert grade.cap_text("abc", 10) == "abc"
    assert grade.cap_text("a" * 50, 10).startswith("a" * 10) and "40 more characters" in grade.cap_text("a" * 50, 10)


def test_tamper_snapshot_detects_patched_and_added_functions():
    mod = types.ModuleType("course_lib._tamper_demo")

    def honest(x):
        return x

    class Checker:
        def run(self):
            return 1

    mod.honest, mod.Checker, mod.REGISTRY = honest, Checker, {"a": honest}
    Checker.__module__ = mod.__name__
    extra = types.ModuleType("_tamper_extra")
    extra.len = len
    sys.modules[mod.__name__], sys.modules[extra.__name__] = mod, extra
    try:
        before = grade.snapshot(prefixes=("course_lib._tamper_demo",), extra=("_tamper_extra",))
        assert grade.snapshot_diff(before, grade.snapshot(("course_lib._tamper_demo",), ("_tamper_extra",))) == []
        honest.__code__ = (lambda x: 0).__code__  # same object, new code
        mod.Checker.run = lambda self: 0
        mod.REGISTRY["a"] = print
        mod.added = print
        extra.len = lambda x: 0
        reasons = " ".join(grade.snapshot_diff(before, grade.snapshot(("course_lib._tamper_demo",),
                                                                      ("_tamper_extra",))))
    finally:
        del sys.modules[mod.__name__], sys.modules[extra.__name__]
    for name in ("course_lib._tamper_demo.honest", "Checker.run", "REGISTRY['a']", "added", "_tamper_extra.len"):
        assert name in reasons, (name, reasons)


def test_static_scan():
    aliases = grade.import_aliases(
        ["from course_lib import symmetry as S\nfrom course_lib.teaching.exercises import nb00"]
    )
    assert grade.scan_code("def f(x):\n    return x @ x.T  # no builtins here\n", aliases) == []
    hits = grade.scan_code("S.equivariance_error = lambda *a, **k: 0.0", aliases)
    assert hits == ["assigns `course_lib.symmetry.equivariance_error` (patching the course library)"]
    assert grade.scan_code("S.FIELD_KINDS['h'] = 'vector'", aliases)[0].startswith("assigns into")
    assert grade.scan_code("setattr(S, 'rotation', None)", aliases)
    for code in ("from course_lib.teaching.checks import EXERCISES", "import builtins", "f.__code__ = g.__code__",
                 "sys.modules['course_lib.teaching.checks'] = m", "open('../grading/hidden/nb00.py')",
                 "Path('grading') / 'hidden'", "import inspect; inspect.stack()", "os._exit(0)"):
        assert grade.scan_code(code, aliases), code
    ref = "course_lib.teaching.exercises.nb00.symmetrize"
    assert "reference solution" in grade.scan_code("def symmetrize(f, x, g):\n    return nb00.symmetrize(f, x, g)",
                                                    aliases, reference=ref)[0]
    assert grade.scan_code("y = nb00.pairwise_distances(x)", aliases, reference=ref) == []


def test_library_guard_reports_and_restores(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("A = 1\n")
    guard = grade.LibraryGuard(tmp_path / "pkg")
    assert guard.verify() == []
    (tmp_path / "pkg" / "a.py").write_text("A = 2\n")
    (tmp_path / "pkg" / "evil.py").write_text("")
    assert guard.verify() == ["a.py", "evil.py"]
    assert (tmp_path / "pkg" / "a.py").read_text() == "A = 1\n" and not (tmp_path / "pkg" / "evil.py").exists()


def test_read_notebook_and_identify():
    nb = nbformat.v4.new_notebook()
    nb.cells = [_code("def f(x):\n    return x\n", exercise="00.symmetrize", points=2)]
    text = nbformat.writes(nb)
    assert grade.read_notebook(text.encode())[0] is not None
    got, problem = grade.read_notebook(text[: len(text) // 2].encode())
    assert got is None and "not valid notebook JSON" in problem and "line" in problem
    assert "not a Jupyter notebook" in grade.read_notebook(b"[1, 2]")[1]
    assert "UTF-8" in grade.read_notebook(b"\xff\xfe\x00")[1]
    course = {"00_primer": grade.CourseNotebook("00_primer", [grade.ExerciseSpec("00.symmetrize", 2, "s", "s", "")],
                                                "", set()),
              "01_mpnn": grade.CourseNotebook("01_mpnn", [grade.ExerciseSpec("01.step", 1, "s", "s", "")], "", set())}
    assert grade.identify(text[: len(text) // 2], course) == "00_primer"
    assert grade.identify("nothing here", course) is None


def test_run_cases_weighs_cases_equally_and_spares_students_from_test_bugs():
    from course_lib.teaching.checks import Feedback

    def good(fn, fb):
        fb.expect(True, "ok")
        fb.expect(True, "ok")

    def fatal(fn, fb):
        fb.expect(True, "ok")
        fb.expect(False, "wrong shape", fatal=True)
        fb.expect(True, "never reached")

    def calls(fn, fb):
        fn()

    def buggy_test(fn, fb):
        fb.expect(True, "ok")
        return {}["missing key"]

    ns: dict = {}
    exec(compile("def student():\n    return 1 / 0\n", "<exercise cell 00.x>", "exec"), ns)  # noqa: S102
    fb = Feedback()
    grade.run_cases(fb, ns["student"], [("a", good, {}), ("b", fatal, {}), ("c", calls, {}), ("d", buggy_test, {})])
    assert fb.cases == [("a", 1.0), ("b", 0.0), ("c", 0.0)]  # d is left out: the test itself crashed
    assert fb.failed[0] == "[b] wrong shape" and fb.failed[1].startswith("[c] your code raised ZeroDivisionError")
    assert fb.test_errors == ["[d] KeyError: 'missing key'"]

    exec(compile("def stub():\n    raise NotImplementedError\n", "<exercise cell 00.y>", "exec"), ns)  # noqa: S102
    with pytest.raises(NotImplementedError):
        grade.run_cases(Feedback(), ns["stub"], [("c", calls, {})])


def test_guard_blocks_network_hidden_reads_and_library_writes(tmp_path):
    hidden, lib = tmp_path / "hidden", tmp_path / "lib"
    hidden.mkdir()
    lib.mkdir()
    (hidden / "nb00.py").write_text("SECRET = 1\n")
    script = textwrap.dedent(f"""
        import json, socket, sys
        sys.path.insert(0, {str(REPO)!r})
        from course_lib.teaching.grade import _exec_guard
        state, events = _exec_guard([{str(hidden)!r}], [{str(lib)!r}])
        out = {{}}
        try:
            socket.create_connection(("192.0.2.1", 80), timeout=2)
            out["net"] = "connected"
        except OSError as exc:
            out["net"] = str(exc)
        for key, action in (("read", lambda: open({str(hidden / "nb00.py")!r}).read()),
                            ("write", lambda: open({str(lib / "x.py")!r}, "w").write("x"))):
            try:
                action()
                out[key] = "allowed"
            except PermissionError as exc:
                out[key] = str(exc)
        out["events"] = events
        print(json.dumps(out))
    """)
    res = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": ""})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["net"] != "connected"
    assert "hidden tests may not be read" in out["read"] and "read-only" in out["write"]
    assert out["events"] == ["read the hidden tests (nb00.py)", "wrote into course_lib (x.py)"]
    assert not (lib / "x.py").exists()
