"""Tests of the autograder (:mod:`course_lib.teaching.grading`) on the shipped sample submissions.

The unit tests of its modules are in ``test_grading_units.py``, its structure in ``test_grading_structure.py``.

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
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib.teaching import grading

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "grading" / "samples" / "nb00"
HIDDEN = REPO / "grading" / "hidden"
EXPECTED = SAMPLES / "expected_gradebook.csv"
SOURCE = REPO / "notebooks" / "00_symmetry_primer.py"

needs_nb00 = pytest.mark.skipif(not SOURCE.is_file() or not SAMPLES.is_dir(), reason="notebook 00 not there yet")
REGENERATE = ("python -m course_lib.teaching.grading grading/samples/nb00 --out /tmp/samples-graded "
              "--hidden grading/hidden "
              "--no-run --exercise-timeout 10 --jobs 2 && cp /tmp/samples-graded/gradebook.csv "
              "grading/samples/nb00/expected_gradebook.csv (after reviewing the differences)")


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _grade(subs: Path, out: Path, *extra: str) -> int:
    return grading.main([str(subs), "--out", str(out), "--hidden", str(HIDDEN), "--exercise-timeout", "10",
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
    # the sandbox has no view of the hidden-tests folder of the checkout: the attempt is flagged by the scan
    assert "grading/hidden" in by["cheater", "00.radial_field"]["message"]
    assert by["cheater", "00.gated_nonlinearity"]["status"] == "pass"  # flags are per exercise


@needs_nb00
def test_outputs_feedback_and_json(graded):
    out = graded["out"]
    records = json.loads((out / "gradebook.json").read_text())
    assert [list(r) for r in records][0] == list(grading.COLUMNS)
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
def test_notebook_run_of_the_samples_is_reported(graded_run):
    """Structure only: which cell reaches a time limit first depends on the machine's load (the setup
    cell's imports can take longer than --cell-timeout on a busy machine), so nothing here depends on it;
    the time-out and the kernel audit themselves are tested on notebooks of their own below."""
    loop = graded_run["runs"]["infinite_loop"]
    assert loop["status"] == "timeout"  # the looping check cell can never finish
    looping = [c for c in loop["cells"] if "check(\"00.pairwise_distances\"" in c["head"]]
    assert looping and all(c["status"] in ("timeout", "not run") for c in looping)
    executed = graded_run["out"] / "executed" / "cheater" / "00_symmetry_primer.ipynb"
    assert executed.is_file()
    # the kernel's sandbox has no view of the hidden tests: the cheater's cell cannot show them
    assert "def _pairwise_extra" not in executed.read_text(encoding="utf-8")


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
    rc = grading.main([str(tmp_path / "subs"), "--out", str(tmp_path / "out"), "--hidden", str(HIDDEN), "--no-run",
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
# a design exercise: notebook 09's 09.angle_feature (grading/samples/make_design_samples.py)
# --------------------------------------------------------------------------------------------

DESIGN = REPO / "grading" / "samples" / "nb09"


@pytest.fixture(scope="module")
def graded_design(tmp_path_factory):
    if not DESIGN.is_dir():
        pytest.skip("no design samples")
    out = tmp_path_factory.mktemp("graded_design")
    assert _grade(DESIGN, out, "--no-run") == 0
    return {(r["student"], r["exercise"]): r for r in _rows(out / "gradebook.csv")}


def test_design_samples_get_their_verdicts(graded_design):
    """Correct: full marks; non-equivariant: 0, naming the broken symmetries with their errors; under the bar
    (a distance-only feature cannot separate the pairs): a fraction, naming the pair; too slow (an average over
    all N! renumberings): a time-out. The same as the reviewed expected gradebook."""
    want = {(r["student"], r["exercise"]): r for r in _rows(DESIGN / "expected_gradebook.csv")}
    assert {k: (r["status"], r["points"]) for k, r in graded_design.items()} == \
        {k: (r["status"], r["points"]) for k, r in want.items()}, (
        "regenerate: python -m course_lib.teaching.grading grading/samples/nb09 --out /tmp/g9 --hidden grading/hidden "
        "--no-run --exercise-timeout 10 --jobs 2 && cp /tmp/g9/gradebook.csv "
        "grading/samples/nb09/expected_gradebook.csv")
    ex = "09.angle_feature"
    assert graded_design["correct", ex]["points"] == "3.00"
    broken = graded_design["non_equivariant", ex]
    assert broken["status"] == "fail" and broken["points"] == "0.00"
    assert "not invariant under rotation: the feature changes by" in broken["message"]
    under = graded_design["under_threshold", ex]
    assert under["status"] == "partial" and 0 < float(under["points"]) < 1.5
    assert "the feature is the same for the planar and chair six-rings" in under["message"]
    slow = graded_design["too_slow", ex]
    assert slow["status"] == "timeout" and slow["points"] == "0.00"
    for student in ("correct", "non_equivariant", "under_threshold", "too_slow"):
        assert graded_design[student, "09.bond_vector_sum"]["status"] == "pass"


# --------------------------------------------------------------------------------------------
# a design exercise with an accuracy bar on hidden data: notebook 01's 01.energy_features
# --------------------------------------------------------------------------------------------

DESIGN_01 = REPO / "grading" / "samples" / "nb01"


@pytest.fixture(scope="module")
def graded_design_01(tmp_path_factory):
    if not DESIGN_01.is_dir():
        pytest.skip("no design samples of notebook 01")
    out = tmp_path_factory.mktemp("graded_design_01")
    assert _grade(DESIGN_01, out, "--no-run") == 0
    return {(r["student"], r["exercise"]): r for r in _rows(out / "gradebook.csv")}


def test_design_samples_01_get_their_verdicts(graded_design_01):
    """Correct: full marks; non-equivariant: 0, naming the broken symmetry with the change; under the bar (invariant
    counts, blind to distances): a fraction, with the test MAE and the bar; too slow (an average over all N!
    orderings): a time-out. The same as the reviewed expected gradebook."""
    want = {(r["student"], r["exercise"]): r for r in _rows(DESIGN_01 / "expected_gradebook.csv")}
    assert {k: (r["status"], r["points"]) for k, r in graded_design_01.items()} == \
        {k: (r["status"], r["points"]) for k, r in want.items()}, (
        "regenerate: python -m course_lib.teaching.grading grading/samples/nb01 --out /tmp/g1 --hidden grading/hidden "
        "--no-run --exercise-timeout 10 --jobs 2 && cp /tmp/g1/gradebook.csv "
        "grading/samples/nb01/expected_gradebook.csv")
    ex = "01.energy_features"
    assert graded_design_01["correct", ex]["points"] == "4.00"
    broken = graded_design_01["non_equivariant", ex]
    assert broken["status"] == "fail" and broken["points"] == "0.00"
    assert "not invariant under the translation: the features change by" in broken["message"]
    under = graded_design_01["under_threshold", ex]
    assert under["status"] == "partial" and 0 < float(under["points"]) < 2
    assert "missed the accuracy bar" in under["message"] and "test MAE of" in under["message"]
    assert "the bar is 0.3" in under["message"]
    slow = graded_design_01["too_slow", ex]
    assert slow["status"] == "timeout" and slow["points"] == "0.00"
