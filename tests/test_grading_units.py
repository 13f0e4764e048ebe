"""Unit tests of the autograder's modules (:mod:`course_lib.teaching.grading`): cell lookup, capped output,
tamper snapshot, static scan, library guard, notebook reading, run_cases, the guard, the notebook run."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import nbformat
import pytest

from course_lib.teaching import grading

REPO = Path(__file__).resolve().parents[1]
HIDDEN = REPO / "grading" / "hidden"


# --------------------------------------------------------------------------------------------
# unit tests of the pieces
# --------------------------------------------------------------------------------------------


def _code(source: str, **metadata) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(source=textwrap.dedent(source), metadata=metadata)


def test_find_exercise_cell_by_metadata_name_and_missing():
    check_cell = _code('check("00.f", f)')
    tagged = _code("def f(x):\n    return x\n", exercise="00.f", points=1)
    loc = grading.find_exercise_cell([_code("import torch"), tagged, check_cell], "00.f", "f")
    assert (loc.index, loc.how, loc.notes) == (1, "metadata", [])
    # metadata lost (e.g. the cell was re-created): found by the name it defines, before its check cell
    lost = _code("def f(x):\n    return 2 * x\n")
    later = _code("def f(x):\n    return 3 * x\n")
    loc = grading.find_exercise_cell([lost, check_cell, later], "00.f", "f")
    assert loc.index == 0 and loc.how == "name" and "metadata" in loc.notes[0]
    # an untouched stub is found by its message
    stub = _code('def g():\n    raise NotImplementedError("Exercise 00.f (title): hint")\n')
    assert grading.find_exercise_cell([stub, check_cell], "00.f", "f").index == 0
    # renamed
    renamed = _code("def ff(x):\n    return x\n", exercise="00.f", points=1)
    loc = grading.find_exercise_cell([renamed, check_cell], "00.f", "f")
    assert loc.how == "renamed" and "`ff`" in loc.problem
    # deleted
    loc = grading.find_exercise_cell([_code("x = 1"), check_cell], "00.f", "f")
    assert loc.index is None and "no exercise cell" in loc.problem
    # reordered: the exercise cell after its check cell
    loc = grading.find_exercise_cell([check_cell, tagged], "00.f", "f")
    assert loc.index == 1 and any("after its check cell" in n for n in loc.notes)


def test_capped_output():
    out = grading.CappedText(limit=100)
    for _ in range(1000):
        print("x" * 50, file=out)
    out.buffer.write(b"bytes too")
    text = out.getvalue()
    assert text.startswith("x" * 50) and len(text) < 200
    assert "more characters of output dropped by the autograder" in text
    assert grading.cap_text("abc", 10) == "abc"
    capped = grading.cap_text("a" * 50, 10)
    assert capped.startswith("a" * 10) and "40 more characters" in capped


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
        before = grading.snapshot(prefixes=("course_lib._tamper_demo",), extra=("_tamper_extra",))
        assert grading.snapshot_diff(before, grading.snapshot(("course_lib._tamper_demo",),
                                                              ("_tamper_extra",))) == []
        honest.__code__ = (lambda x: 0).__code__  # same object, new code
        mod.Checker.run = lambda self: 0
        mod.REGISTRY["a"] = print
        mod.added = print
        extra.len = lambda x: 0
        reasons = " ".join(grading.snapshot_diff(before, grading.snapshot(("course_lib._tamper_demo",),
                                                                      ("_tamper_extra",))))
    finally:
        del sys.modules[mod.__name__], sys.modules[extra.__name__]
    for name in ("course_lib._tamper_demo.honest", "Checker.run", "REGISTRY['a']", "added", "_tamper_extra.len"):
        assert name in reasons, (name, reasons)


def test_static_scan():
    aliases = grading.import_aliases(
        ["from course_lib import symmetry as S\nfrom course_lib.teaching.exercises import nb00"]
    )
    assert grading.scan_code("def f(x):\n    return x @ x.T  # no builtins here\n", aliases) == []
    hits = grading.scan_code("S.equivariance_error = lambda *a, **k: 0.0", aliases)
    assert hits == ["assigns `course_lib.symmetry.equivariance_error` (patching the course library)"]
    assert grading.scan_code("S.FIELD_KINDS['h'] = 'vector'", aliases)[0].startswith("assigns into")
    assert grading.scan_code("setattr(S, 'rotation', None)", aliases)
    for code in ("from course_lib.teaching.checks import EXERCISES", "import builtins", "f.__code__ = g.__code__",
                 "sys.modules['course_lib.teaching.checks'] = m", "open('../grading/hidden/nb00.py')",
                 "Path('grading') / 'hidden'", "import inspect; inspect.stack()", "os._exit(0)"):
        assert grading.scan_code(code, aliases), code
    # an exercise cell may not use the self-check machinery (checkers, stored expected outputs); check() is fine
    copy = "def symmetrize(f, x, g):\n    return nb00.check_symmetrize(f, x, g)"
    assert "self-check machinery `course_lib.teaching.exercises.nb00.check_symmetrize`" in grading.scan_code(
        copy, aliases, exercise_cell=True)[0]
    stored = ("from course_lib.teaching.exercises.stored import STORED\n"
              "def f(x):\n    return STORED('00.f', 'values', x)")
    assert "self-check machinery" in grading.scan_code(stored, aliases, exercise_cell=True)[0]
    assert grading.scan_code("from course_lib.teaching.exercises import check", aliases, exercise_cell=True) == []
    assert grading.scan_code(copy, aliases) == []  # outside exercise cells: the check cells call check()


def test_setup_cells_of_older_student_notebooks_are_course_code_and_a_changed_one_is_scanned():
    """A student who started from an older student notebook submits the setup cell stamped then: it is accepted
    exactly (not flagged for its `sys.modules`); the same cell with one line added is scanned like student code."""
    from course_lib.teaching import assign
    from course_lib.teaching.grading.course import load_course
    from course_lib.teaching.grading.grader import Grader

    known = load_course()["00_symmetry_primer"].student_sources
    current, *older = assign.setup_sources()
    assert current == assign.setup_source() and older, "keep the earlier setup cells in _SETUP_TEMPLATES_BEFORE"
    for setup in (current, *older):
        assert "sys.modules" in setup
        cells = [nbformat.v4.new_code_cell(setup, metadata={"tags": [assign.SETUP_TAG]})]
        assert Grader._scan_other_cells(cells, known, {}, grading.import_aliases([setup])) == []
    changed = older[0] + "\nsys.modules['course_lib.teaching.checks'] = None\n"
    cells = [nbformat.v4.new_code_cell(changed, metadata={"tags": [assign.SETUP_TAG]})]
    flags = Grader._scan_other_cells(cells, known, {}, grading.import_aliases([changed]))
    assert flags and all(f.startswith("cell 0 (not an exercise cell)") for f in flags), flags


def test_library_guard_reports_and_restores(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("A = 1\n")
    guard = grading.LibraryGuard(tmp_path / "pkg")
    assert guard.verify() == []
    (tmp_path / "pkg" / "a.py").write_text("A = 2\n")
    (tmp_path / "pkg" / "evil.py").write_text("")
    assert guard.verify() == ["a.py", "evil.py"]
    assert (tmp_path / "pkg" / "a.py").read_text() == "A = 1\n" and not (tmp_path / "pkg" / "evil.py").exists()


def test_read_notebook_and_identify():
    nb = nbformat.v4.new_notebook()
    nb.cells = [_code("def f(x):\n    return x\n", exercise="00.symmetrize", points=2)]
    text = nbformat.writes(nb)
    assert grading.read_notebook(text.encode())[0] is not None
    got, problem = grading.read_notebook(text[: len(text) // 2].encode())
    assert got is None and "not valid notebook JSON" in problem and "line" in problem
    assert "not a Jupyter notebook" in grading.read_notebook(b"[1, 2]")[1]
    assert "UTF-8" in grading.read_notebook(b"\xff\xfe\x00")[1]
    spec, notebook = grading.ExerciseSpec, grading.CourseNotebook
    course = {"00_primer": notebook("00_primer", [spec("00.symmetrize", 2, "s", "s", "")], "", set()),
              "01_mpnn": notebook("01_mpnn", [spec("01.step", 1, "s", "s", "")], "", set())}
    assert grading.identify(text[: len(text) // 2], course) == "00_primer"
    assert grading.identify("nothing here", course) is None


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
    grading.run_cases(fb, ns["student"], [("a", good, {}), ("b", fatal, {}), ("c", calls, {}), ("d", buggy_test, {})])
    assert fb.cases == [("a", 1.0), ("b", 0.0), ("c", 0.0), ("d", 0.0)]  # d: the test crashed, scored 0, reported
    assert fb.failed[0] == "[b] wrong shape" and fb.failed[1].startswith("[c] your code raised ZeroDivisionError")
    assert fb.test_errors == ["[d] KeyError: 'missing key'"]

    exec(compile("def stub():\n    raise NotImplementedError\n", "<exercise cell 00.y>", "exec"), ns)  # noqa: S102
    with pytest.raises(NotImplementedError):
        grading.run_cases(Feedback(), ns["stub"], [("c", calls, {})])


def test_guard_blocks_network_hidden_reads_and_library_writes(tmp_path):
    hidden, lib = tmp_path / "hidden", tmp_path / "lib"
    hidden.mkdir()
    lib.mkdir()
    (hidden / "nb00.py").write_text("SECRET = 1\n")
    script = textwrap.dedent(f"""
        import json, socket, sys
        sys.path.insert(0, {str(REPO)!r})
        from course_lib.teaching.grading.guard import install_from_source
        state, events = install_from_source([{str(hidden)!r}], [{str(lib)!r}])
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


# --------------------------------------------------------------------------------------------
# the notebook run (kernel.py): tested on notebooks of their own, whatever the machine's load
# --------------------------------------------------------------------------------------------


def _run_cells(tmp_path: Path, sources: list[str], limits) -> object:
    """Run a notebook of these code cells as the grader does (fresh kernel with the guard, limits)."""
    from course_lib.teaching.grading.kernel import run_notebook
    from course_lib.teaching.grading.session import Session

    nb = nbformat.v4.new_notebook()
    nb.cells = [_code(source) for source in sources]
    session = Session({}, HIDDEN, limits, tmp_path / "out", True, "auto", tmp_path / "tmp")
    work = tmp_path / "work"
    (work / "run").mkdir(parents=True)
    return run_notebook(session, nb, work, session.student_library(work))


def test_notebook_run_times_out_cleanly(tmp_path):
    """The looping cell is the first cell: no import or earlier cell shares its time limit, so it times
    out on its own, whatever the load; the run stops there (an infinite loop costs one cell time-out)."""
    limits = grading.Limits(cell_timeout=3, notebook_timeout=600)
    report = _run_cells(tmp_path, ["while True:\n    pass", "after = 1"], limits)
    assert report.status == "timeout", report.message
    loop, after = report.cells
    assert (loop.index, loop.status, loop.detail, loop.head) == (0, "timeout", "did not finish within 3 s",
                                                                  "while True:")
    assert after.status == "not run" and "the run stops at the first cell time-out" in report.message
    assert _processes_mentioning(str(tmp_path)) == []  # the kernel (and its sandbox) did not survive the run
    assert "time-outs in cell 0 `while True:` (did not finish within 3 s)" in report.message


def test_a_forked_copy_of_the_kernel_cannot_garble_the_run(tmp_path):
    """A cell forks children that fail to exec (so they go on running the kernel's code): they finish their copy
    of the cell and exit; the kernel's channel stays intact, every later cell runs, nothing is left running."""
    fork = textwrap.dedent("""\
        import os
        for _ in range(4):
            if os.fork() == 0:
                try:
                    os.execv("/nonexistent/program", ["x"])
                except OSError:
                    print("child", os.getpid(), "went on")
        print("parent done")""")
    # the kernel's live children after the forking cell (zombies are children that exited)
    alive = textwrap.dedent("""\
        import os, time
        def alive_children():
            out = []
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == os.getpid() and fields[0] != "Z":
                    out.append(pid)
            return out
        for _ in range(50):
            if not alive_children():
                break
            time.sleep(0.2)
        assert not alive_children(), f"forked copies of the kernel still running: {alive_children()}" """)
    report = _run_cells(tmp_path, [fork, alive, "x = 40 + 2\nprint(x)"],
                        grading.Limits(cell_timeout=60, notebook_timeout=600))
    assert report.status == "ok", report.message
    assert [c.status for c in report.cells] == ["ok", "ok", "ok"]
    assert _processes_mentioning(str(tmp_path)) == []


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in cmd and int(pid) != os.getpid():
            found.append(f"{pid}: {cmd[:100]}")
    return found


def test_notebook_run_audits_the_kernel(tmp_path):
    """No cell comes near the (default) time limits: a cell reading the hidden tests is refused and
    recorded against that cell, and the run goes on."""
    source = f"open({str(HIDDEN / 'nb00.py')!r}).read()"
    report = _run_cells(tmp_path, [source, "after = 1"], grading.Limits())
    assert (0, "read the hidden tests (nb00.py)") in report.events, report.events
    first, after = report.cells
    assert first.status == "error" and "PermissionError" in first.detail and "hidden tests" in first.detail
    assert after.status == "ok"
    assert report.status == "error"


# --------------------------------------------------------------------------------------------
# the submissions folder as hostile input; the results folder
# --------------------------------------------------------------------------------------------


def test_submissions_folder_is_read_as_hostile_input(tmp_path):
    from course_lib.teaching.grading.gradebook import csv_cell

    subs = tmp_path / "subs"
    (subs / "bob").mkdir(parents=True)
    (subs / "alice.IPYNB").write_text("{}")
    (subs / "bob" / "00_x.ipynb").write_text("{}")
    (subs / ".secret.ipynb").write_text("{}")
    (subs / "notes.txt").write_text("x")
    os.mkfifo(subs / "pipe.ipynb")
    (subs / "link.ipynb").symlink_to(subs / "alice.IPYNB")
    (subs / "bob" / "link_dir").symlink_to(tmp_path, target_is_directory=True)
    found, skipped = grading.find_submissions(subs)
    assert sorted((s.student, s.path.name) for s in found) == [("alice", "alice.IPYNB"), ("bob", "00_x.ipynb")]
    reasons = {k.name: k.reason for k in skipped}
    assert "FIFO" in reasons["pipe.ipynb"] and "symbolic link" in reasons["link.ipynb"]
    assert "dot" in reasons[".secret.ipynb"] and "not a .ipynb" in reasons["notes.txt"]
    assert "symbolic link" in reasons["bob/link_dir"]
    with pytest.raises(ValueError, match="FIFO"):  # O_NONBLOCK: never hangs
        grading.read_submission(subs / "pipe.ipynb")
    with pytest.raises(ValueError):
        grading.read_submission(subs / "link.ipynb")
    ids = {grading.student_id(n) for n in ("Zoë", "Zoé", "Zoe", "zoe", "=cmd()", "-x")}
    assert len(ids) == 6 and all(re.fullmatch(r"[A-Za-z0-9._-]+", i) and i[0] not in "-." for i in ids)
    assert grading.student_id("alice") == "alice"
    cells = ("=1+1", "+1", "-1", "@x", "\tx", "ok")
    assert [csv_cell(x) for x in cells] == ["'=1+1", "'+1", "'-1", "'@x", "'\tx", "ok"]


def test_without_the_sandbox_the_grader_refuses_unless_unsafe(tmp_path, monkeypatch):
    from course_lib.teaching.grading import sandbox

    monkeypatch.setitem(sandbox._PROBLEM, "result", "bubblewrap is not installed (simulated)")
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "bob.ipynb").write_text('{"cells": [  "00.pairwise_distances"')  # broken JSON: nothing runs
    assert grading.main([str(subs), "--out", str(tmp_path / "out"), "--no-run"]) == 2
    assert not (tmp_path / "out").exists()
    assert grading.main([str(subs), "--out", str(tmp_path / "out"), "--no-run", "--unsafe",
                         "--notebook", "00"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "gradebook.csv", encoding="utf-8")))
    assert rows and all(r["message"].startswith("[UNSAFE: no sandbox]") for r in rows)
    assert "UNSAFE" in json.loads((tmp_path / "out" / "run.json").read_text())["sandbox"]
    assert "UNSAFE" in (tmp_path / "out" / "feedback" / "bob.md").read_text()
    # a second run into the same folder is refused, then allowed with --overwrite (the old results replaced)
    assert grading.main([str(subs), "--out", str(tmp_path / "out"), "--no-run", "--unsafe", "--notebook", "00"]) == 2
    assert grading.main([str(subs), "--out", str(tmp_path / "out"), "--no-run", "--unsafe", "--notebook", "00",
                         "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "subs"]  # no staging folder left behind


def test_course_folders_come_from_the_checkout_or_from_the_hidden_tests_checkout(tmp_path, monkeypatch):
    """The sandboxes see the shipped data and models: from the checkout course_lib comes from, or, when
    course_lib is an installed wheel, from the checkout that holds the hidden tests; otherwise none."""
    from course_lib.teaching.grading import session as sess

    checkout = tmp_path / "course"
    for rel in ("grading/hidden", "data", "benchmarks/results"):
        (checkout / rel).mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("[project]\n")
    wheel = tmp_path / "site-packages" / "course_lib"
    wheel.mkdir(parents=True)
    monkeypatch.setattr(sess, "LIB_DIR", wheel)

    def binds(hidden):
        fake = types.SimpleNamespace(hidden=hidden, pristine=tmp_path / "pristine" / "course_lib")
        sess.Session._bind_course_data(fake)
        return fake.course_binds

    got = binds(checkout / "grading" / "hidden")
    assert [src for src, _ in got] == [str((checkout / "data").resolve()),
                                       str((checkout / "benchmarks" / "results").resolve())]
    assert all(Path(dst).parent.parent == tmp_path / "pristine" or Path(dst).parent == tmp_path / "pristine"
               for _, dst in got)
    assert binds(None) == []
    assert binds(tmp_path / "elsewhere" / "hidden") == []


def test_an_exercise_that_trains_gets_its_own_longer_time_limit():
    """The grader's limit for an exercise is --exercise-timeout, or the exercise's declared minimum when larger
    (04.nbody_design trains the student's model three times in its hidden tests)."""
    from course_lib.teaching.exercises import grading_timeout, nb04

    assert grading_timeout("04.nbody_design", 60.0) == nb04.NBODY_GRADING_SECONDS > 60.0
    assert grading_timeout("04.nbody_design", 1e4) == 1e4
    assert grading_timeout("01.minimum_image", 60.0) == 60.0
    assert grading_timeout("no.such_exercise", 60.0) == 60.0


def test_an_internal_grader_error_is_logged_and_the_submission_graded_again(tmp_path):
    """A failure of the grader's own code is not a verdict: the submission is graded once more from the start
    (the second try's results, with a note); a second failure is reported as one error row, both messages kept."""
    from course_lib.teaching.grading.gradebook import Graded, Row
    from course_lib.teaching.grading.grader import Grader
    from course_lib.teaching.grading.inputs import Submission

    sub = Submission("ana", tmp_path / "ana.ipynb")
    messages, calls = [], []

    def flaky(fail_times):
        def _grade(s):
            calls.append(s.student)
            if len(calls) <= fail_times:
                raise SystemError(f"spurious failure {len(calls)}")
            return Graded(s.student, "00_symmetry_primer", [Row(s.student, "00_symmetry_primer", "00.x", 1.0, 1,
                                                                  "pass", "all 3 checks passed")])
        return _grade

    grader = Grader(session=None, forced="00_symmetry_primer", log=messages.append)
    grader._grade = flaky(0)
    g = grader.grade(sub)
    assert (len(calls), g.rows[0].status, g.notes, messages) == (1, "pass", [], [])

    calls.clear()
    grader._grade = flaky(1)
    g = grader.grade(sub)
    assert len(calls) == 2 and g.rows[0].status == "pass" and g.rows[0].points == 1.0
    assert "failed once" in g.notes[0] and "SystemError: spurious failure 1" in g.notes[0]
    assert len(messages) == 1 and "ana (ana.ipynb): internal grader error: SystemError: spurious failure 1" in \
        messages[0] and "grading it again" in messages[0] and "test_grading_units.py:" in messages[0]

    calls.clear()
    messages.clear()
    grader._grade = flaky(5)
    g = grader.grade(sub)
    assert len(calls) == 2 and [(r.exercise, r.status, r.points) for r in g.rows] == [("?", "error", 0.0)]
    assert "spurious failure 2" in g.rows[0].message and "spurious failure 1" in g.notes[0]
    assert len(messages) == 2 and "again: reported" in messages[1]
