"""The committed notebooks carry the outputs of a full-mode run, and nbval compares them.

- ``notebooks/NN_slug.ipynb`` holds outputs and figures (what GitHub, Colab and the website show); the
  student copies hold none; ``sync`` keeps the outputs of a cell whose source did not change and drops
  the others (``keep_outputs``);
- every cell marked ``# NBVAL_CHECK_OUTPUT`` has a stored output, so nbval (``--nbval-lax``, fast mode, the
  notebook run of the test suite) compares the fast-mode output with the stored full-mode one;
- that comparison is live: nbval run on a copy of a notebook whose stored checked output was altered by
  one character fails, and on the unaltered copy passes.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import nbformat
import pytest

from course_lib.files import REPO_ROOT
from course_lib.teaching import assign
from course_lib.teaching.notebook import cell_source

SOURCES = assign.source_files()
MARK = "# NBVAL_CHECK_OUTPUT"


def _read(path):
    return nbformat.read(path, as_version=4)


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.parametrize("source", SOURCES, ids=[s.stem for s in SOURCES])
def test_notebook_carries_outputs_and_student_copy_none(source):
    nb = _read(source.with_suffix(".ipynb"))
    assert _images(nb) >= 1, f"{source.stem}: no figure stored: run `python -m course_lib.teaching.assign execute`"
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert "application/vnd.jupyter.widget-view+json" not in out.get("data", {}), "a stored widget view"
            assert out.get("output_type") != "error", f"{source.stem}: a stored error output"
    marked = [c for c in nb.cells if c.cell_type == "code" and MARK in cell_source(c)]
    missing = [cell_source(c).splitlines()[1:2] for c in marked if not c.get("outputs")]
    assert not missing, f"{source.stem}: checked cells without a stored output (nbval would compare nothing): {missing}"
    student = _read(source.parent / assign.STUDENT_DIR_NAME / f"{source.stem}.ipynb")
    assert all(not c.get("outputs") and not c.get("execution_count") for c in student.cells if c.cell_type == "code")


def test_sync_keeps_outputs_of_unchanged_cells_only():
    executed = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("print(1)", execution_count=1,
                                  outputs=[nbformat.v4.new_output("stream", text="1\n")]),
        nbformat.v4.new_code_cell("x = 2", execution_count=2),
        nbformat.v4.new_code_cell("print(1)", execution_count=3,
                                  outputs=[nbformat.v4.new_output("stream", text="1 again\n")]),
    ])
    code, text = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell
    fresh = nbformat.v4.new_notebook(cells=[code("print(1)"), code("x = 3"), text("text"), code("print(1)")])
    assert assign.keep_outputs(fresh, executed) == 2
    assert [c.get("execution_count") for c in fresh.cells if c.cell_type == "code"] == [1, None, 3]
    assert fresh.cells[0].outputs[0]["text"] == "1\n" and fresh.cells[3].outputs[0]["text"] == "1 again\n"
    assert fresh.cells[1].outputs == []  # changed source: no stale output


def _first_checked_prefix(nb):
    """The notebook cut after its first checked cell that prints something (the cells before it included)."""
    for i, cell in enumerate(nb.cells):
        streams = [o for o in cell.get("outputs", []) if o.get("output_type") == "stream" and o.get("text")]
        if cell.cell_type == "code" and MARK in cell_source(cell) and streams:
            cut = copy.deepcopy(nb)
            cut.cells = cut.cells[: i + 1]
            return cut, i
    raise AssertionError("no checked cell with a stored printed output")


def _nbval(path, tmp_path) -> subprocess.CompletedProcess:
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\n")
    path_var = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, COURSE_FAST="1", PYTHONPATH=path_var)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-c", str(ini), "--rootdir", str(tmp_path),
                           "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env", str(path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_nbval_compares_the_stored_checked_outputs(tmp_path):
    pytest.importorskip("nbval")
    nb, i = _first_checked_prefix(_read(SOURCES[0].with_suffix(".ipynb")))
    good = tmp_path / "good.ipynb"
    nbformat.write(nb, good)
    ok = _nbval(good, tmp_path)
    assert ok.returncode == 0, ok.stdout[-3000:]
    for out in nb.cells[i].outputs:  # one printed character changed: nbval must notice
        if out.get("output_type") == "stream" and out.get("text"):
            out["text"] = out["text"].replace("True", "Fals", 1) if "True" in out["text"] else out["text"] + "x"
            break
    bad = tmp_path / "bad.ipynb"
    nbformat.write(nb, bad)
    failed = _nbval(bad, tmp_path)
    assert failed.returncode != 0, failed.stdout[-3000:]
    assert "mismatch" in failed.stdout.lower() or "differ" in failed.stdout.lower(), failed.stdout[-3000:]


def test_execute_notebook_stores_clean_outputs(tmp_path):
    """A tiny notebook run by the executor: counts from 1, a PNG figure, no widget view, no machine paths."""
    pytest.importorskip("nbclient")
    from course_lib.teaching.execute import execute_notebook

    code = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(cells=[
        code("import os\nprint(os.environ['COURSE_FAST'], os.environ['TQDM_DISABLE'])"),
        code(f"print({str(REPO_ROOT)!r} + '/data')"),
        code("import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()"),
    ])
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    done = execute_notebook(path, timeout=300)
    assert [c.execution_count for c in done.cells] == [1, 2, 3]
    assert done.cells[0].outputs[0]["text"] == "0 1\n"  # full mode, progress bars off
    assert done.cells[1].outputs[0]["text"] == "<repo>/data\n"
    assert _images(done) == 1
