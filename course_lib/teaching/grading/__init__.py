"""Autograder of the course notebooks: run each submission, grade each exercise in isolation, write a gradebook.

Command line (from the repository root)::

    python -m course_lib.teaching.grading SUBMISSIONS_DIR --out RESULTS_DIR [--hidden HIDDEN_DIR]
        [--cell-timeout S] [--notebook-timeout S] [--exercise-timeout S] [--fast | --full]
        [--jobs N] [--no-run] [--notebook NN_slug] [--notebooks DIR] [--network auto|namespace|guard]
        [--memory-mb MB] [--overwrite] [--unsafe]

``SUBMISSIONS_DIR`` holds the notebooks as downloaded from Colab or JupyterLab, either one file per
student (``alice.ipynb``: the student id is the file name) or one folder per student
(``alice/00_symmetry_primer.ipynb``: the student id is the folder name). Which course notebook a
submission is comes from its content (exercise ids, check calls, the Colab badge), or ``--notebook``.

Every process that runs student code runs in the bubblewrap sandbox of :mod:`.sandbox` (no network, no
view of the submissions, results, checkout or hidden tests of the notebook run; memory, process, file
size and CPU limits); without it the grader refuses to grade unless ``--unsafe`` (then every row says
so). The results are written into a new folder and swapped in; an earlier run is replaced only with
``--overwrite``. INSTRUCTORS.md states what is and is not guaranteed.

Outputs in ``RESULTS_DIR``: ``gradebook.csv`` and ``gradebook.json`` (one row per student, notebook
and exercise: ``student, notebook, exercise, points, max_points, status, message``; status is one of
pass / partial / fail / error / timeout / missing / flagged), ``totals.csv``, ``feedback/<student>.md``
(what failed and why, with the symmetry error values, and a total), ``runs.json`` (per-cell result of
each notebook run) and ``executed/<student>/<notebook>.ipynb`` (the executed copies, outputs capped).

Modules (one concern each; this package's ``__init__`` re-exports the public API)::

    api.py        run_cases: the helper of the hidden test modules (grading/hidden/nbNN.py)
    scan.py       static scan of the student's code (scan_code, import_aliases)
    sandbox.py    the bubblewrap sandbox of every process that runs student code, limits, pids cgroup
    inputs.py     the submissions folder as hostile input: regular files only, safe student ids
    protocol.py   what an exercise process may send back (validated by the parent)
    guard.py      network block and audit hook, installed in the kernel and the exercise process
    library.py    the installed course_lib: file snapshot, verify and restore, pristine copy
    course.py     course notebooks, exercises and points; submissions; finding the exercise cells
    session.py    Limits, the sandbox environment, the Session shared by one grading run
    kernel.py     the notebook run in a fresh Jupyter kernel
    runner.py     the two processes of each exercise, parent side (fork servers or new processes)
    child.py      the student process of an exercise: a standalone, standard-library-only program
    checker.py    the checker process of an exercise: the hidden test on plain data, never student code
    bridge.py     the channel between them: plain-data frames, handles, callbacks, remote gradients
    grader.py     grading one submission and a whole folder (grade)
    gradebook.py  rows, gradebook.csv/json, totals.csv, runs.json, feedback/<student>.md
    cli.py        the command line (python -m course_lib.teaching.grading)

How a submission is graded
--------------------------

1. **Copy.** The submission is read once and copied into a private temporary folder, next to a
   private copy of ``course_lib`` (``lib/course_lib``; the checkout's other top-level entries such as
   ``data/`` are linked beside it, never ``grading/``); the original file is never opened for
   writing. A file that is not valid notebook JSON gives one ``error`` row per exercise (the course
   notebook is recognised from the raw text when possible).
2. **Notebook run** (skipped with ``--no-run``). The copy runs top to bottom in a fresh Jupyter kernel
   (cwd: the private folder; ``COURSE_FAST=1`` unless ``--full``; ``PYTHONPATH`` puts the private
   ``course_lib`` first), with a per-cell and a per-notebook time limit and captured outputs capped
   in size. It gives the per-cell errors and time-outs and the "ran top to bottom" line of the
   feedback (``runs.json``). It never decides points: only tampering found during the run (see
   below) changes the gradebook.
3. **Exercises.** Each exercise is graded by two processes (:mod:`.runner`): a **student process**
   (``child.py``, ``python -I``, in the student's sandbox) that executes only the notebook's import
   cells and that one exercise cell of the submission (found by its ``exercise`` cell metadata, else
   by the function name; a missing, renamed or reordered cell is reported), and a **checker process**
   (``checker.py``, in a second sandbox that binds this notebook's hidden tests and a result folder the
   student's sandbox cannot see) that imports the checking code from a pristine, hash-checked copy of
   the package made when grading started, loads the hidden test module with
   ``importlib.util.spec_from_file_location`` from ``--hidden`` and runs it. No student code runs in
   the checker: the student's function is a handle there, and calls to it go over a Unix socket to the
   student process as plain data (:mod:`.bridge`). On Linux a per-submission server on each side
   imports once and forks one child per exercise; elsewhere each exercise starts new interpreters. The
   hidden test of exercise ``"00.name"`` is ``HIDDEN["00.name"]`` of ``HIDDEN_DIR/nb00.py``, a function
   ``hidden(obj, fb)`` that calls the public checker of :mod:`course_lib.teaching.exercises` with other
   seeds and sizes plus extra cases (see :func:`run_cases`), so the public self-check a student runs
   in Colab is a subset of what the grader runs.
4. **Points** come from the ``points`` cell metadata of the *instructor* source notebook
   (``notebooks/NN_slug.py``), never from the submission: ``points = max_points * fraction`` rounded
   to 2 decimals, where the fraction is the mean over the test cases of the share of checks passed
   (a case that stops at a fatal failure or raises scores 0; so does a case that crashes in the test's
   own code, reported for the instructor to look at); 0 for errors, time-outs and flags.

Tampering (flagged for review: 0 points, ``flagged`` status, reasons in the message)
------------------------------------------------------------------------------------

* **Static scan** of the code the student wrote (the exercise cells, and code cells added or changed
  with respect to the distributed student notebook) for ``EXERCISES``, ``run_checker``, ``__code__``,
  ``builtins``, ``sys.modules``, ``grading/hidden``, stack-frame and ``gc`` inspection, ``os._exit``,
  ``ctypes``, ``setattr`` on course_lib modules, and assignments to attributes of ``course_lib``
  modules (``S.equivariance_error = ...``); in an exercise cell also the use of that exercise's
  reference solution (``nb00.symmetrize``). Hits in an exercise cell flag that exercise; hits in
  another cell flag every exercise of the notebook.
* **Runtime snapshot** in the student process: the identity (and ``__code__``) of every attribute of
  the loaded ``course_lib`` modules, of their classes and dicts, of ``builtins``, ``torch``,
  ``torch.Tensor``, ``torch.linalg``, ``torch.nn.functional``, ``math``, ``importlib``, and of
  ``sys.meta_path`` / ``sys.path_hooks``, taken before the student's code runs and compared after it
  ran (the hidden tests are then not run). Evidence for the instructor only: the verdict comes from
  the checker process, which the student's code cannot reach.
* **Audit hook** (``sys.addaudithook``, which student code cannot remove) in the kernel and in each
  student process: opening or listing anything inside the hidden-test folder, or writing into
  ``course_lib`` (the private copy, the installed package, the pristine copy), raises
  ``PermissionError`` and is recorded; in the kernel run it is attributed to the cell that did it (an
  exercise cell or its check cell flags that exercise, another cell every exercise).
* **File hashes** of the submission's private ``course_lib`` after every cell and every exercise
  process; a change is flagged (and the copy restored). The installed ``course_lib`` is never
  written by the grader: when it changes while grading (someone edits the checkout) a warning is
  printed; the grading used the copies taken at the start.

Sandbox: see :mod:`course_lib.teaching.grading.sandbox` and INSTRUCTORS.md. With ``--unsafe`` (no
sandbox) the older guards remain: a network namespace (``unshare -rn``) where available, and Python's
``socket`` refusing non-local connections; the checker still runs in its own process.
"""

from course_lib.teaching.grading.api import run_cases
from course_lib.teaching.grading.child import CappedText, cap_text, snapshot, snapshot_diff
from course_lib.teaching.grading.cli import main
from course_lib.teaching.grading.course import (
    CourseNotebook,
    ExerciseSpec,
    Located,
    find_exercise_cell,
    identify,
    load_course,
    read_notebook,
)
from course_lib.teaching.grading.gradebook import COLUMNS, STATUSES, Row
from course_lib.teaching.grading.grader import grade
from course_lib.teaching.grading.inputs import find_submissions, read_submission, student_id
from course_lib.teaching.grading.library import LibraryGuard
from course_lib.teaching.grading.scan import import_aliases, scan_code
from course_lib.teaching.grading.session import Limits, namespace_available

__all__ = [
    "COLUMNS",
    "STATUSES",
    "Limits",
    "Row",
    "run_cases",
    "scan_code",
    "import_aliases",
    "find_exercise_cell",
    "Located",
    "CappedText",
    "cap_text",
    "snapshot",
    "snapshot_diff",
    "LibraryGuard",
    "load_course",
    "CourseNotebook",
    "ExerciseSpec",
    "find_submissions",
    "read_submission",
    "student_id",
    "read_notebook",
    "identify",
    "namespace_available",
    "grade",
    "main",
]
