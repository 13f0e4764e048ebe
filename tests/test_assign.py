"""Tests of the notebook build (:mod:`course_lib.teaching.assign`): stamping, generated and student notebooks.

A small fixture notebook, written into ``tmp_path`` with exercises registered by the tests themselves,
makes every test meaningful even before the course notebooks exist; the same properties are then
checked on every real ``notebooks/NN_*.py`` (those tests skip while there are none).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from course_lib.teaching import assign, checks, exercises, student_run

# --------------------------------------------------------------------------------------------
# the fixture notebook
# --------------------------------------------------------------------------------------------

SLUG = "99_fixture"

FIXTURE_SOURCE = '''\
# %% [markdown]
# # Fixture notebook
#
# A tiny notebook following the conventions of `course_lib.teaching.assign`.

# %%
import math

from course_lib.teaching.checks import exercise
from course_lib.teaching.exercises import check

# %%
# In the course the checkers live in course_lib/teaching/exercises/nbNN.py; registering them here lets this
# notebook run on its own in a kernel.
@exercise("99.double", "Double a number")
def _check_double(fn, fb):
    fb.expect(fn(2) == 4, "double(2) should be 4", fatal=True)
    fb.expect(math.isclose(fn(-1.5), -3.0), "double(-1.5) should be -3.0")


@exercise("99.counter", "A counter class")
def _check_counter(cls, fb):
    c = cls()
    fb.expect(c.add(2) == 2, "Counter().add(2) should return 2", fatal=True)
    fb.expect(c.add(3) == 5, "a second add(3) should return 5")

# %% tags=["hidden"]
SECRET_INSTRUCTOR_VALUE = 42

# %% [markdown]
# Double a number.
#
# <details><summary>Second hint: the approach (open it after a first try)</summary>
#
# Add the number to itself, or multiply it.
# </details>

# %% exercise="99.double" points=2
def double(x):
    """Return two times x."""
    ### BEGIN SOLUTION
    ### HINT: multiply by two.
    return 2 * x
    ### END SOLUTION

# %%
check("99.double", double)

# %% [markdown]
# A class with two solution regions.
#
# <details><summary>Second hint: the approach</summary>
#
# Keep the running total in an attribute.
# </details>

# %% exercise="99.counter" points=1
class Counter:
    def __init__(self):
        ### BEGIN SOLUTION
        ### HINT: a running total
        self.n = 0
        ### END SOLUTION

    def add(self, k):
        ### BEGIN SOLUTION
        self.n += k
        return self.n
        ### END SOLUTION

# %%
result = check("99.counter", Counter)
'''


def _check_double(fn, fb):
    fb.expect(fn(2) == 4, "double(2) should be 4", fatal=True)
    fb.expect(fn(-1.5) == -3.0, "double(-1.5) should be -3.0")


def _check_counter(cls, fb):
    c = cls()
    fb.expect(c.add(2) == 2, "Counter().add(2) should return 2", fatal=True)
    fb.expect(c.add(3) == 5, "a second add(3) should return 5")


FIXTURE_EXERCISES = {
    "99.double": ("Double a number", _check_double),
    "99.counter": ("A counter class", _check_counter),
}


@pytest.fixture
def registered():
    """Register the fixture's checkers (and remove them afterwards)."""
    exercises.load_checkers()
    saved = {k: checks.EXERCISES.get(k) for k in FIXTURE_EXERCISES}
    for exercise_id, (title, fn) in FIXTURE_EXERCISES.items():
        checks.exercise(exercise_id, title)(fn)
    yield
    for exercise_id, old in saved.items():
        if old is None:
            checks.EXERCISES.pop(exercise_id, None)
        else:
            checks.EXERCISES[exercise_id] = old


@pytest.fixture
def nbdir(tmp_path, registered):
    """A notebook folder holding the fixture source (not yet synced)."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    (folder / f"{SLUG}.py").write_text(FIXTURE_SOURCE, encoding="utf-8")
    return folder


@pytest.fixture
def synced(nbdir):
    assign.sync(nbdir)
    return nbdir


def _read_nb(path: Path) -> nbformat.NotebookNode:
    return nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)


def _src(cell) -> str:
    return "".join(cell.source) if isinstance(cell.source, list) else cell.source


# --------------------------------------------------------------------------------------------
# helpers shared by the fixture and the real notebooks
# --------------------------------------------------------------------------------------------


def _assert_stamped(nb, slug: str, student: bool) -> None:
    """Badge cell then setup cell first; the badge points to this notebook's own path."""
    assert len(nb.cells) >= 2
    badge, setup = nb.cells[0], nb.cells[1]
    assert badge.cell_type == "markdown" and badge.metadata.get("tags") == [assign.BADGE_TAG]
    own = f"notebooks/student/{slug}.ipynb" if student else f"notebooks/{slug}.ipynb"
    urls = re.findall(r"\((https://colab\.research\.google\.com/github/[^)]+)\)", _src(badge))
    assert urls == [f"https://colab.research.google.com/github/{assign.github_repo()}/blob/main/{own}"]
    assert "colab-badge.svg" in _src(badge)
    assert setup.cell_type == "code" and setup.metadata.get("tags") == [assign.SETUP_TAG]
    assert _src(setup) == assign.setup_source()
    for cell in nb.cells[2:]:
        assert not ({assign.BADGE_TAG, assign.SETUP_TAG} & set(cell.metadata.get("tags", [])))


def _assert_clean(nb, outputs_allowed: bool = False) -> None:
    """Minimal metadata, deterministic ids, valid nbformat 4.5; no outputs and no execution counts unless
    ``outputs_allowed`` (the executed notebooks, see tests/test_executed_notebooks.py)."""
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5)
    assert dict(nb.metadata) == {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    assert [c.id for c in nb.cells] == [f"c{i:02d}" for i in range(len(nb.cells))]
    for cell in nb.cells:
        # exercises and predictions (code), short answers and rubrics (markdown): nothing else is kept
        assert set(cell.metadata) <= {"tags", "exercise", "points", "prediction", "choices", "answer", "rubric"}
        if cell.cell_type == "code" and not outputs_allowed:
            assert cell.outputs == [] and cell.execution_count is None


def _assert_student(nb) -> None:
    text = nbformat.writes(nb)
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    for cell in nb.cells:
        assert assign.HIDDEN_TAG not in cell.metadata.get("tags", [])
        if cell.cell_type == "code":
            assert cell.outputs == []
            if cell.metadata.get("exercise"):
                assert "raise NotImplementedError(" in _src(cell)
            if assign.SETUP_TAG not in cell.metadata.get("tags", []):
                ast.parse(_src(cell))  # every stub is valid Python


def _run_exercise(nb, exercise_id: str, source: str):
    """Exec the notebook's imports then ``source`` in a fresh namespace and run the public check."""
    target = assign.check_target(nb, exercise_id)
    assert target, f'the code cell after exercise {exercise_id} must call check("{exercise_id}", obj)'
    ns: dict = {"__name__": "__main__"}
    exec(compile(assign.imports_source(nb), "<imports>", "exec"), ns)
    exec(compile(source, f"<exercise {exercise_id}>", "exec"), ns)
    return exercises.check(exercise_id, eval(target, ns), verbose=False)


def _assert_solution_passes_and_stub_fails(nb, exercise_id: str, source: str) -> None:
    res = _run_exercise(nb, exercise_id, source)
    assert res.passed, f"the reference solution of {exercise_id} fails its own check:\n{res}"
    stub = _run_exercise(nb, exercise_id, assign.stub_source(source, exercise_id))
    assert not stub.passed, f"the student stub of {exercise_id} passes its check:\n{stub}"
    assert stub.error and "not implemented" in stub.error


# --------------------------------------------------------------------------------------------
# repository URL and the setup cell
# --------------------------------------------------------------------------------------------


def test_repo_url_comes_from_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    data = tomllib.loads((assign.REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    expected = data["project"]["urls"]["Repository"].rstrip("/")
    assert assign.repo_url() == expected
    assert re.fullmatch(r"[^/\s]+/[^/\s]+", assign.github_repo())


def test_setup_cell_installs_course_lib_only_on_colab_and_never_torch():
    src = assign.setup_source()
    tree = ast.parse(src)
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    # no string of the cell (the pip command included) names torch as a requirement
    assert not [s for s in strings if re.search(r"\btorch\b", s)]
    for line in src.splitlines():
        code = line.split("#", 1)[0]
        if "pip" in code or "git+" in code:
            assert not re.search(r"\btorch\b", code), line
    assert assign.repo_url() in strings  # the default repository; the install names every extra the notebooks need
    assert f"course_lib[{assign.COLAB_EXTRAS}] @ " in strings and ["archive", "refs", "heads", "main.zip"] == [
        s for s in strings if s in ("archive", "refs", "heads", "main.zip")]
    assert set(assign.COLAB_EXTRAS.split(",")) >= {"molecules", "notebooks"}
    assert {"-m", "pip", "install"} <= set(strings)
    assert 'if "google.colab" in sys.modules:' in src
    assert "subprocess.run([sys.executable" in src and "check=True" in src
    assert "import course_lib" in src and 'pip install -e ".[dev]"' in src
    assert "from course_lib.utils import doctor" in src and "doctor()" in src
    assert "python -m course_lib.teaching.assign sync" in src and "do not edit" in src
    assert "--upgrade" not in src and "--force-reinstall" not in src


def test_setup_cell_runs_locally(capsys):
    exec(compile(assign.setup_source(), "<setup>", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out.startswith("course_lib ")


# --------------------------------------------------------------------------------------------
# stub_source
# --------------------------------------------------------------------------------------------


def test_stub_keeps_indentation_and_code_outside_markers(registered):
    src = textwrap.dedent('''\
        import math


        def double(x):
            """Doc."""
            y = 1  # before
            ### BEGIN SOLUTION
            return 2 * x
            ### END SOLUTION


        z = 3  # after''')
    out = assign.stub_source(src, "99.double")
    assert out == textwrap.dedent('''\
        import math


        def double(x):
            """Doc."""
            y = 1  # before
            # YOUR CODE HERE
            raise NotImplementedError("Exercise 99.double (Double a number): write your code here, then run the check cell below.")


        z = 3  # after''')  # noqa: E501


def test_stub_multiple_regions_and_hint(registered):
    src = textwrap.dedent("""\
        class Counter:
            def __init__(self):
                ### BEGIN SOLUTION
                self.n = 0
                ### END SOLUTION

            def add(self, k):
                if k:
                  ### BEGIN SOLUTION
                  ### HINT: add "k" to self.n and return it.
                  self.n += k
                  ### END SOLUTION
                return self.n""")
    out = assign.stub_source(src, "99.counter")
    lines = out.split("\n")
    assert lines[0] == "class Counter:"
    assert lines[2] == "        # YOUR CODE HERE"
    assert lines[3] == (
        '        raise NotImplementedError("Exercise 99.counter (A counter class): write your code here, '
        'then run the check cell below.")'
    )
    assert lines[7] == "          # YOUR CODE HERE"
    assert lines[8] == (
        '          raise NotImplementedError("Exercise 99.counter (A counter class): add \\"k\\" to self.n '
        'and return it, then run the check cell below.")'
    )
    assert lines[9] == "        return self.n"
    assert "self.n = 0" not in out and "HINT" not in out and "SOLUTION" not in out
    ast.parse(out)
    ns: dict = {}
    exec(out, ns)
    with pytest.raises(NotImplementedError, match="99.counter .A counter class.: write your code here"):
        ns["Counter"]()
    counter = object.__new__(ns["Counter"])
    with pytest.raises(NotImplementedError, match=r'add "k" to self\.n and return it, then run'):
        counter.add(1)


def test_stub_of_unregistered_exercise_has_no_title():
    out = assign.stub_source("def f():\n    ### BEGIN SOLUTION\n    pass\n    ### END SOLUTION", "98.unknown")
    assert out == (
        "def f():\n    # YOUR CODE HERE\n    raise NotImplementedError(\"Exercise 98.unknown: write your code "
        'here, then run the check cell below.")'
    )


@pytest.mark.parametrize(
    "src, message",
    [
        ("def f():\n    return 1", "no `### BEGIN SOLUTION`"),
        ("def f():\n    ### BEGIN SOLUTION\n    return 1", "without `### END SOLUTION`"),
        ("def f():\n    return 1\n    ### END SOLUTION", "without `### BEGIN SOLUTION`"),
        ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    ### END SOLUTION", "nested"),
    ],
)
def test_stub_rejects_malformed_regions(src, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        assign.stub_source(src, "98.bad")


# --------------------------------------------------------------------------------------------
# imports_source, check_target, exercise_cells
# --------------------------------------------------------------------------------------------


def test_imports_source_exercise_cells_and_check_target(nbdir):
    nb = assign.read_source(nbdir / f"{SLUG}.py")
    assert assign.imports_source(nb) == ("import math\n\nfrom course_lib.teaching.checks import exercise\n"
                                         "from course_lib.teaching.exercises import check\n")
    cells = assign.exercise_cells(nb)
    assert [(i, p) for i, p, _ in cells] == [("99.double", 2), ("99.counter", 1)]
    assert "### BEGIN SOLUTION" in cells[0][2]
    assert assign.check_target(nb, "99.double") == "double"
    assert assign.check_target(nb, "99.counter") == "Counter"
    assert assign.check_target(nb, "99.missing") is None
    assert assign.lint(nb, SLUG) == []


def test_imports_source_excludes_setup_and_mixed_cells():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(assign.setup_source(), metadata={"tags": [assign.SETUP_TAG]}),
        nbformat.v4.new_code_cell("import os\nimport sys"),
        nbformat.v4.new_code_cell("import json\nx = 1"),
        nbformat.v4.new_code_cell("%matplotlib inline"),
        nbformat.v4.new_markdown_cell("import re"),
        nbformat.v4.new_code_cell(""),
        nbformat.v4.new_code_cell("from pathlib import Path  # comment"),
    ]
    assert assign.imports_source(nb) == "import os\nimport sys\nfrom pathlib import Path  # comment\n"


def test_lint_reports_convention_problems(registered):
    nb = assign._reads_source(
        '# %% exercise="99.double"\ndef double(x):\n    return 2 * x\n\n# %%\nprint(1)\n\n'
        "# %%\ndef g():\n    ### BEGIN SOLUTION\n    pass\n    ### END SOLUTION\n"
    )
    problems = "\n".join(assign.lint(nb, "42_other"))
    assert "must start with '42.'" in problems
    assert "positive integer `points=N`" in problems
    assert "no `### BEGIN SOLUTION`" in problems
    assert 'must call check("99.double"' in problems
    assert "solution markers but no `exercise=` metadata" in problems


def test_lint_asks_for_hints_in_steps(registered):
    """A first hint (the stub's `### HINT:`), a folded second hint above the cell, no solution line spelled."""
    cell = ('# %% exercise="99.double" points=2\ndef double(x):\n    ### BEGIN SOLUTION\n'
            '{hint}    return float(x) + float(x)\n    ### END SOLUTION\n\n# %%\ncheck("99.double", double)\n')
    folded = ("# %% [markdown]\n# <details><summary>Second hint: the approach</summary>\n# {text}\n"
              "# </details>\n\n")
    good = folded.format(text="add it to itself") + cell.format(hint="    ### HINT: twice the number\n")
    assert assign.lint(assign._reads_source(good), "99_fixture") == []
    bare = "# %% [markdown]\n# Double it.\n\n" + cell.format(hint="")
    problems = "\n".join(assign.lint(assign._reads_source(bare), "99_fixture"))
    assert "needs a first hint" in problems and "needs a folded second hint" in problems
    # a folded hint above an earlier code cell does not count for this exercise
    far = folded.format(text="add it") + "# %%\nx = 1\n\n" + cell.format(hint="    ### HINT: twice\n")
    assert "needs a folded second hint" in "\n".join(assign.lint(assign._reads_source(far), "99_fixture"))
    spelled = folded.format(text="`return float(x)  +  float(x)`") + cell.format(hint="    ### HINT: twice\n")
    assert "spell the solution line(s) ['returnfloat(x)+float(x)']" in "\n".join(
        assign.lint(assign._reads_source(spelled), "99_fixture"))
    spelled_stub = folded.format(text="add") + cell.format(hint="    ### HINT: return float(x) + float(x)\n")
    assert "spell the solution" in "\n".join(assign.lint(assign._reads_source(spelled_stub), "99_fixture"))


# --------------------------------------------------------------------------------------------
# stamping and building (fixture)
# --------------------------------------------------------------------------------------------


def test_sync_writes_source_student_and_stamped_files(nbdir):
    changes = assign.sync(nbdir)
    paths = {c.path for c in changes}
    assert paths == {
        nbdir / f"{SLUG}.py",
        nbdir / f"{SLUG}.ipynb",
        nbdir / "student" / f"{SLUG}.ipynb",
    }
    assert assign.check(nbdir) == [] and assign.sync(nbdir) == []

    source_nb = _read_nb(nbdir / f"{SLUG}.ipynb")
    student_nb = _read_nb(nbdir / "student" / f"{SLUG}.ipynb")
    _assert_stamped(source_nb, SLUG, student=False)
    _assert_stamped(student_nb, SLUG, student=True)
    _assert_clean(source_nb)
    _assert_clean(student_nb)
    _assert_student(student_nb)
    # the source version keeps solutions and hidden cells, the student version neither
    source_text = (nbdir / f"{SLUG}.ipynb").read_text(encoding="utf-8")
    student_text = (nbdir / "student" / f"{SLUG}.ipynb").read_text(encoding="utf-8")
    assert "### BEGIN SOLUTION" in source_text and "SECRET_INSTRUCTOR_VALUE" in source_text
    assert "SECRET_INSTRUCTOR_VALUE" not in student_text
    assert len(student_nb.cells) == len(source_nb.cells) - 1
    assert source_text.endswith("}\n") and student_text.endswith("}\n")
    assert str(nbdir) not in source_text and str(nbdir) not in student_text
    assert "jupytext" not in source_text and "colab" not in str(source_nb.metadata)
    # exercise metadata survives in both versions (the grader maps cells to exercises)
    for nb in (source_nb, student_nb):
        ex = [(c.metadata["exercise"], c.metadata["points"]) for c in nb.cells if "exercise" in c.metadata]
        assert ex == [("99.double", 2), ("99.counter", 1)]
    stub = next(c for c in student_nb.cells if c.metadata.get("exercise") == "99.double")
    assert 'raise NotImplementedError("Exercise 99.double (Double a number): multiply by two, then run' in (
        _src(stub)
    )
    # the .py source got the same stamped cells
    text = (nbdir / f"{SLUG}.py").read_text(encoding="utf-8")
    assert text.startswith('# %% [markdown] tags=["course-badge"]\n')
    assert text.endswith(FIXTURE_SOURCE)
    _assert_stamped(assign.read_source(nbdir / f"{SLUG}.py"), SLUG, student=False)


def test_build_is_deterministic(synced, tmp_path):
    nb = assign.read_source(synced / f"{SLUG}.py")
    for build in (assign.build_source_notebook, assign.build_student_notebook):
        first = assign.notebook_text(build(nb, SLUG))
        second = assign.notebook_text(build(assign.read_source(synced / f"{SLUG}.py"), SLUG))
        assert first == second
    # syncing the same source elsewhere gives byte-identical files
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(synced / f"{SLUG}.py", other / f"{SLUG}.py")
    assert {c.path.name for c in assign.sync(other)} == {f"{SLUG}.ipynb"}
    for rel in (f"{SLUG}.py", f"{SLUG}.ipynb", f"student/{SLUG}.ipynb"):
        assert (other / rel).read_bytes() == (synced / rel).read_bytes()


def test_stamping_replaces_out_of_date_cells(nbdir):
    old_badge = (
        '# %% [markdown] tags=["course-badge"]\n'
        "# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        "(https://colab.research.google.com/github/old-owner/old-repo/blob/main/notebooks/42_old.ipynb)\n\n"
    )
    old_setup = '# %% tags=["course-setup"]\n!pip install torch old-course-lib\nimport course_lib\n\n'
    header = "# ---\n# jupyter:\n#   kernelspec:\n#     display_name: Python 3\n#     name: python3\n# ---\n\n"
    body_cells = FIXTURE_SOURCE.split("# %% tags=[\"hidden\"]")
    # a stale badge first, a stale setup cell in the middle: both are replaced, on top
    text = header + old_badge + body_cells[0] + old_setup + '# %% tags=["hidden"]' + body_cells[1]
    stamped = assign.stamp_source_text(text, SLUG)
    assert "old-owner" not in stamped and "old-course-lib" not in stamped and "42_old" not in stamped
    assert stamped.startswith(header + '# %% [markdown] tags=["course-badge"]\n')
    assert stamped.count("course-badge") == 1 and stamped.count("course-setup") == 1
    assert stamped.endswith(FIXTURE_SOURCE)
    assert assign.stamp_source_text(stamped, SLUG) == stamped  # idempotent
    nb = assign._reads_source(stamped)
    _assert_stamped(nb, SLUG, student=False)
    # through sync: the stale file is reported, then fixed
    (nbdir / f"{SLUG}.py").write_text(text, encoding="utf-8")
    assign.sync(nbdir)
    (nbdir / f"{SLUG}.py").write_text(text, encoding="utf-8")
    assert [(c.path.name, c.reason) for c in assign.check(nbdir)] == [(f"{SLUG}.py", "stamped")]
    assign.sync(nbdir)
    assert (nbdir / f"{SLUG}.py").read_text(encoding="utf-8") == stamped
    assert assign.check(nbdir) == []


def test_stamping_rejects_text_before_first_cell():
    with pytest.raises(ValueError, match="before the first `# %%`"):
        assign.stamp_source_text("import os\n\n# %%\nx = 1\n", SLUG)


def test_student_build_refuses_to_leak_solutions(registered):
    nb = assign._reads_source("# %%\ndef f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n")
    with pytest.raises(ValueError, match="no `exercise=` metadata"):
        assign.build_student_notebook(nb, SLUG)
    nb = assign._reads_source('# %% exercise="99.double" points=2\ndef double(x):\n    return 2 * x\n')
    with pytest.raises(ValueError, match="no `### BEGIN SOLUTION`"):
        assign.build_student_notebook(nb, SLUG)


def test_cli_refuses_a_notebook_folder_without_sources(tmp_path, capsys):
    """`--notebooks 07` (a number where a folder belongs) used to say "everything up to date" and do nothing."""
    for folder in (tmp_path / "07", tmp_path):  # missing, and present but without NN_*.py
        with pytest.raises(SystemExit) as exc:
            assign.main(["--notebooks", str(folder), "sync"])
        assert exc.value.code == 2
        assert "no notebook sources" in capsys.readouterr().err


def test_check_and_cli_report_stale_and_orphan_files(synced, capsys):
    assert assign.main(["--notebooks", str(synced), "check"]) == 0
    # a hand edit of a generated notebook is detected
    path = synced / "student" / f"{SLUG}.ipynb"
    path.write_text(path.read_text(encoding="utf-8").replace("multiply by two", "x"), encoding="utf-8")
    (synced / "student" / "98_orphan.ipynb").write_text("{}\n", encoding="utf-8")
    capsys.readouterr()
    assert assign.main(["--notebooks", str(synced), "check"]) == 1
    out = capsys.readouterr().out
    assert f"student/{SLUG}.ipynb: out of date" in out
    assert "98_orphan.ipynb: no source" in out
    assert "python -m course_lib.teaching.assign sync" in out
    # sync fixes the stale file (and leaves the orphan, with a warning)
    assert assign.main(["--notebooks", str(synced), "sync"]) == 0
    out = capsys.readouterr().out
    assert f"student/{SLUG}.ipynb (out of date)" in out
    assert "98_orphan.ipynb has no source" in out
    (synced / "student" / "98_orphan.ipynb").unlink()
    assert assign.main(["--notebooks", str(synced), "check"]) == 0
    assert assign.main(["--notebooks", str(synced), "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"99_fixture\s+99\.double\s+2\s+Double a number", out)
    assert re.search(r"99_fixture\s+99\.counter\s+1\s+A counter class", out)
    assert "2 exercise(s), 3 points" in out


@pytest.mark.parametrize("exercise_id", list(FIXTURE_EXERCISES))
def test_fixture_solution_passes_and_stub_fails(nbdir, exercise_id, monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "1")
    nb = assign.read_source(nbdir / f"{SLUG}.py")
    source = next(src for i, _, src in assign.exercise_cells(nb) if i == exercise_id)
    _assert_solution_passes_and_stub_fails(nb, exercise_id, source)


def test_fixture_notebooks_execute_top_to_bottom(synced):
    """The student notebook runs top to bottom: stubs raise only when the check cell calls them."""
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.manager import KernelManager

    outputs = {}
    for name, path in (("source", synced / f"{SLUG}.ipynb"), ("student", synced / "student" / f"{SLUG}.ipynb")):
        nb = _read_nb(path)
        km = KernelManager(kernel_name="python3")
        km.kernel_spec.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        nbclient.NotebookClient(nb, km=km, timeout=120, resources={"metadata": {"path": str(path.parent)}}).execute()
        outputs[name] = "\n".join(
            out.get("text", "")
            for cell in nb.cells
            if cell.cell_type == "code"
            for out in cell.outputs
            if out.get("name") == "stdout"
        )
    for text in outputs.values():  # the doctor line of the setup cell
        assert re.match(r"course_lib \S+ \| python ", text)
    assert "[PASS] 99.double" in outputs["source"] and "[PASS] 99.counter" in outputs["source"]
    assert "[FAIL] 99.double: not implemented yet" in outputs["student"]
    assert "[FAIL] 99.counter: not implemented yet" in outputs["student"]


# --------------------------------------------------------------------------------------------
# the real course notebooks
# --------------------------------------------------------------------------------------------

_SOURCES = assign.source_files()
_NO_NOTEBOOKS = pytest.mark.skip(reason="no notebooks/NN_*.py yet")


def _source_params():
    if not _SOURCES:
        return [pytest.param(None, marks=_NO_NOTEBOOKS)]
    return [pytest.param(p, id=p.stem) for p in _SOURCES]


def _exercise_params():
    params = []
    for path in _SOURCES:
        try:
            cells = assign.exercise_cells(assign.read_source(path))
        except Exception:  # noqa: BLE001 - reported by the other tests
            continue
        params += [pytest.param(path, ex_id, id=ex_id) for ex_id, _, _ in cells]
    return params or [pytest.param(None, None, marks=pytest.mark.skip(reason="no exercises yet"))]


def test_generated_notebooks_are_up_to_date():
    stale = assign.check()
    assert not stale, (
        "out of date: "
        + ", ".join(f"{assign._rel(c.path)} ({c.reason})" for c in stale)
        + "; fix: python -m course_lib.teaching.assign sync"
    )


@pytest.mark.parametrize("source", _source_params())
def test_notebook_conventions(source):
    slug = source.stem
    assert assign.lint(assign.read_source(source), slug) == []
    for student in (False, True):
        path = source.parent / ("student" if student else "") / f"{slug}.ipynb"
        assert path.is_file(), f"{path} missing; run python -m course_lib.teaching.assign sync"
        nb = _read_nb(path)
        _assert_stamped(nb, slug, student)
        _assert_clean(nb, outputs_allowed=not student)
        if student:
            _assert_student(nb)


@pytest.mark.parametrize("source, exercise_id", _exercise_params())
def test_solution_passes_and_stub_fails(source, exercise_id, monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "1")
    nb = assign.read_source(source)
    solution = next(src for i, _, src in assign.exercise_cells(nb) if i == exercise_id)
    _assert_solution_passes_and_stub_fails(nb, exercise_id, solution)


def _needs_molecules_extra(source: str) -> bool:
    """A notebook needs the ``molecules`` extra (tblite) when it runs GFN2-xTB itself."""
    return bool(re.search(r"\btblite\b|course_lib\.simulate\.molecules|simulate import molecules", source))


def _extras_in(setup_source: str) -> set[str]:
    """The extras that a setup cell pip-installs on Colab (``course_lib[a,b] @ ...``)."""
    found = re.findall(r"course_lib\[([a-z,]+)\] @ ", setup_source)
    assert found, "the setup cell installs no course_lib extras"
    return set(found[0].split(","))


def _installed_extras(nb_path: Path) -> set[str]:
    """The extras that the stamped setup cell of a generated notebook pip-installs on Colab."""
    nb = nbformat.read(nb_path, as_version=4)
    setup = [c for c in nb.cells if assign.SETUP_TAG in c.get("metadata", {}).get("tags", [])]
    assert len(setup) == 1, f"{nb_path}: expected one stamped setup cell"
    return _extras_in(setup[0].source)


def test_colab_setup_cells_install_the_extras_their_notebooks_need(monkeypatch):
    """Issue 18: notebook 05 crashed on Colab because the setup cell lacked the ``molecules`` extra. Every
    notebook that runs xTB (05, 08) must install it, in the source and the student notebook (07, which uses
    the molecular data and the notebooks 05-08 path, gets the same cell), and the extra must carry tblite."""
    import tomllib

    extras = tomllib.loads((assign.REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("tblite") for req in extras["molecules"])
    needing = [src for src in assign.source_files() if _needs_molecules_extra(src.read_text())]
    assert {p.name[:2] for p in needing} >= {"05", "08"}, [p.name for p in needing]
    for src in needing + [s for s in assign.source_files() if s.name.startswith("07")]:
        for nb in (src.with_suffix(".ipynb"), src.parent / assign.STUDENT_DIR_NAME / f"{src.stem}.ipynb"):
            assert "molecules" in _installed_extras(nb), f"{nb} needs the molecules extra; its setup cell lacks it"
    # the check can fail: a setup cell stamped without the extra is caught
    monkeypatch.setattr(assign, "COLAB_EXTRAS", "notebooks")
    assert "molecules" not in _extras_in(assign.setup_source())


def test_notebooks_run_xtb_only_when_tblite_is_there():
    """Notebooks that can run without xTB skip its calls cleanly: every GFN2-xTB call of a notebook source
    (``reference_energies``, ``xtb_calculator``, ``make_molecule``, ``optimize`` of the molecules module) sits
    under ``if HAVE_XTB`` (set from ``importlib.util.find_spec("tblite")``)."""
    xtb_calls = {"reference_energies", "xtb_calculator", "make_molecule", "optimize"}
    for src in assign.source_files():
        text = src.read_text()
        if not _needs_molecules_extra(text):
            continue
        tree = ast.parse(text)
        guarded = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "HAVE_XTB" in ast.unparse(node.test):
                guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            name = (node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None)
            if name in xtb_calls and isinstance(getattr(node, "ctx", None), ast.Load):
                assert id(node) in guarded, f"{src.name}:{node.lineno}: {name} outside `if HAVE_XTB:`"
        assert 'find_spec("tblite")' in text, f"{src.name}: set HAVE_XTB from importlib.util.find_spec('tblite')"


# --------------------------------------------------------------------------------------------
# issue 19: every notebook 01-08 has a training run that the student does on a CPU
# --------------------------------------------------------------------------------------------


def _student_run_params():
    params = []
    for number in range(1, 9):
        found = [p for p in _SOURCES if p.stem.startswith(f"{number:02d}_")]
        params.append(pytest.param(found[0] if found else None, id=f"{number:02d}",
                                   marks=[] if found else [pytest.mark.skip(reason="no such notebook")]))
    return params


@pytest.mark.parametrize("source", _student_run_params())
def test_notebook_has_a_student_training_run(source):
    """A section headed "Your training run": knobs with a tiny fast-mode version, a `fit` with a budget in epochs,
    the measured cost printed from the results file (within the budget), a comparison with the shipped model and
    a checked symmetry cell."""
    _, cells = student_run.section_cells(assign.read_source(source))
    number = source.stem[:2]
    text = "\n".join(cells)
    assert cells and "if FAST" in cells[0], "the first cell of the section names the knobs and a fast-mode version"
    assert re.search(r"\bfit\(", text) and "epochs=" in text, "the section trains with course_lib.train.fit"
    assert f'student_run.measured("{number}")' in text, "the section prints its measured cost"
    assert "student_run.compare(" in text and "shipped" in text, "the section compares with the shipped model"
    checked = [c for c in cells if c.startswith("# NBVAL_CHECK_OUTPUT")]
    assert checked and all("assert_equivariant" in c for c in checked), "a checked symmetry cell"
    runs = json.loads((Path(assign.__file__).resolve().parents[2] / student_run.RESULTS).read_text())["runs"]
    assert number in runs, f"not measured: python benchmarks/student_runs.py {number}"
    assert runs[number]["seconds"] <= student_run.BUDGET_SECONDS and runs[number]["threads"] == 1
