"""Notebook build of the course: stamping, generated ``.ipynb`` files and student versions.

Run it from the repository root::

    python -m course_lib.teaching.assign sync    # stamp the sources, regenerate every .ipynb (writes files)
    python -m course_lib.teaching.assign check   # exit 1 if anything is out of date (CI runs this)
    python -m course_lib.teaching.assign list    # table of the exercises: notebook, id, points, title
    python -m course_lib.teaching.assign execute # sync, then run the notebooks in full mode, store outputs (slow)

Conventions (instructors write them, students meet them)
--------------------------------------------------------

1. **Source of truth.** Each notebook is written as ``notebooks/NN_slug.py`` in jupytext
   ``py:percent`` format (cells start with ``# %%``, markdown cells with ``# %% [markdown]``).
   The committed ``notebooks/NN_slug.ipynb`` is *generated* from it by ``sync``: minimal metadata
   (``kernelspec`` and ``language_info``) and deterministic cell ids (``c00``, ``c01``, ... by
   position), so regenerating it gives byte-identical files. Its outputs come from a full-mode run,
   ``execute`` (see :mod:`course_lib.teaching.execute`); ``sync`` keeps the outputs of every code cell
   whose source did not change and drops the others (``check`` never executes anything). Never edit a
   generated ``.ipynb`` by hand: edit the ``.py``, run ``sync``, and ``execute`` before a release.

2. **Stamped cells.** The first two cells of every notebook are written by ``sync`` from the
   single repository URL in ``pyproject.toml`` (``[project.urls] Repository``):

   a. a markdown cell tagged ``course-badge``: the "Open in Colab" badge of this very notebook
      (student copies point to ``notebooks/student/NN_slug.ipynb``);
   b. a code cell tagged ``course-setup``: on Colab only it pip-installs ``course_lib`` from the
      repository (never naming or reinstalling torch: Colab's torch is kept), then imports
      ``course_lib`` (with a clear message for local users: ``pip install -e ".[dev]"`` from the
      repository root) and prints the environment-doctor line (versions, device, fast mode).

   ``sync`` inserts the two cells when they are missing and replaces them when present (they are
   found by their tags), in the ``.py`` source too, so source and notebook always agree. Do not
   edit them by hand: change this module and run ``sync``.

3. **Exercises.** A solution cell is a code cell with the cell metadata ``exercise`` and
   ``points``; in the ``.py`` source its header reads ``# %% exercise="00.symmetrize" points=2``.
   It contains one or more solution regions between a line ``### BEGIN SOLUTION`` and a line
   ``### END SOLUTION`` (the nbgrader markers, at any indentation). Inside a region a line
   ``### HINT: ...`` gives the hint shown to students (the first hint, the idea, never the code; one per
   exercise cell is required, and the approach goes in a folded second hint in the markdown above: see
   :func:`lint_hints`). The code cell right after it is the
   self-check, ``check("00.symmetrize", symmetrize)`` (see :mod:`course_lib.teaching.checks`). Cells tagged
   ``hidden`` (header ``# %% tags=["hidden"]``) are instructor-only.

4. **Student version.** ``notebooks/student/NN_slug.ipynb`` is the same notebook with every
   solution region (markers included) replaced, at the marker's indentation, by::

       # YOUR CODE HERE
       raise NotImplementedError("Exercise 00.symmetrize (<title>): <hint>, then run the check cell below.")

   (``<title>`` comes from the exercise registry, ``<hint>`` from the ``### HINT:`` line or is
   "write your code here"); hidden cells are removed, outputs cleared, and the badge points to the
   student copy. Exercise cells keep their ``exercise``/``points`` metadata so the grader can map
   cells to exercises. Put solution regions *inside* functions or methods: the student notebook
   must run top to bottom, the stub raising only when called (the check cell then prints
   "not implemented yet").
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nbformat

from course_lib.files import REPO_ROOT, REPOSITORY_ENV
from course_lib.teaching.notebook import (
    ANSWER_PLACEHOLDER,
    BADGE_TAG,
    HIDDEN_TAG,
    SETUP_TAG,
    answer_cells,
    cell_source,
    cell_tags,
    check_target,
    exercise_cells,
    exercise_registry,
    exercise_title,
    import_cells,
    prediction_cells,
    read_prediction,
    rubric_cells,
)

__all__ = [
    "NOTEBOOK_DIR",
    "STUDENT_DIR_NAME",
    "BADGE_TAG",
    "SETUP_TAG",
    "HIDDEN_TAG",
    "repo_url",
    "github_repo",
    "badge_source",
    "setup_source",
    "setup_sources",
    "stamp_source_text",
    "read_source",
    "build_source_notebook",
    "build_student_notebook",
    "notebook_text",
    "exercise_cells",
    "check_target",
    "stub_source",
    "imports_source",
    "lint",
    "lint_hints",
    "lint_responses",
    "Change",
    "plan",
    "keep_outputs",
    "sync",
    "check",
    "main",
]

#: Folder of the notebook sources (``NN_slug.py``) and generated notebooks (``NN_slug.ipynb``).
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
#: Sub-folder of :data:`NOTEBOOK_DIR` holding the generated student versions.
STUDENT_DIR_NAME = "student"
SOURCE_GLOB = "[0-9][0-9]_*.py"
GENERATED_GLOB = "[0-9][0-9]_*.ipynb"

SYNC_COMMAND = "python -m course_lib.teaching.assign sync"

_BEGIN_RE = re.compile(r"^([ \t]*)###[ \t]*BEGIN SOLUTION[ \t]*$")
_END_RE = re.compile(r"^[ \t]*###[ \t]*END SOLUTION[ \t]*$")
_HINT_RE = re.compile(r"^[ \t]*###[ \t]*HINT:[ \t]*(.*?)[ \t]*$")
# jupytext's py:percent cell marker: ``# %%`` alone or followed by white space (and options)
_CELL_MARKER_RE = re.compile(r"^[ \t]*#[ \t]*%%(%*[ \t].*|[ \t]*)$")
_TAGS_RE = re.compile(r"\btags\s*=\s*(\[[^\]]*\])")

_KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


# --------------------------------------------------------------------------------------------
# the repository URL and the two stamped cells
# --------------------------------------------------------------------------------------------


def repo_url() -> str:
    """The repository URL, e.g. ``https://github.com/OWNER/REPO`` (see :func:`course_lib.files.repository_url`)."""
    from course_lib.files import repository_url

    return repository_url()


def github_repo(url: str | None = None) -> str:
    """``OWNER/REPO`` of a GitHub repository URL (default: :func:`repo_url`)."""
    url = url or repo_url()
    m = re.fullmatch(r"https?://github\.com/([^/\s]+)/([^/\s]+)", url)
    if not m:
        raise ValueError(f"the repository URL {url!r} is not of the form https://github.com/OWNER/REPO")
    return f"{m.group(1)}/{m.group(2)}"


def notebook_path(slug: str, student: bool = False) -> str:
    """Path of a generated notebook relative to the repository root (as used by the badge)."""
    return f"notebooks/{STUDENT_DIR_NAME}/{slug}.ipynb" if student else f"notebooks/{slug}.ipynb"


def badge_source(slug: str, student: bool = False) -> str:
    """Markdown of the "Open in Colab" badge of notebook ``slug`` (e.g. ``"00_symmetry_primer"``)."""
    colab = "https://colab.research.google.com/github"
    target = f"{colab}/{github_repo()}/blob/main/{notebook_path(slug, student)}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({target})"


#: The extras of ``course_lib`` every notebook needs (the Colab setup cell installs them).
COLAB_EXTRAS = "molecules,notebooks"

_SETUP_TEMPLATE = '''\
# Course setup. Stamped by `{sync}` from the repository URL in pyproject.toml:
# do not edit this cell by hand (change course_lib/teaching/assign.py and run sync again).
import importlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import time

if "google.colab" in sys.modules:
    # On Colab: install course_lib with the extras every notebook needs, once per runtime (running this
    # cell again does not reinstall). Colab's preinstalled torch already satisfies course_lib's lower
    # bound, so pip keeps it (torch is never reinstalled).
    # (the environment variable replaces the repository in the course's Colab test only)
    if importlib.util.find_spec("course_lib") is None:
        repository = os.environ.get("{env}") or "{url}"
        archive = "/".join([repository, "archive", "refs", "heads", "main.zip"])  # as GitHub serves the branch
        requirement = f"course_lib[{extras}] @ {{archive}}"
        print(f"installing {{requirement}} (about a minute) ...")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", requirement], check=True)
        importlib.invalidate_caches()
        print(f"installed in {{time.perf_counter() - start:.0f}} s")
    else:
        print(f"course_lib {{importlib.metadata.version('course_lib')}} is already installed on this runtime "
              "(for the newest version: Runtime > Disconnect and delete runtime, then run this cell again)")
    import torch

    if not torch.cuda.is_available():
        print("No GPU on this runtime: the course runs on a CPU (fast mode keeps every notebook short). "
              "For a GPU: Runtime > Change runtime type > T4 GPU, then run this cell again.")

try:
    import course_lib
except ImportError as exc:
    raise ImportError(
        "course_lib is not installed in this Python environment. Locally, run "
        '`pip install -e ".[dev]"` from the repository root, then restart the kernel.'
    ) from exc

from course_lib.utils import doctor

_ = doctor()  # one line: library versions, device, fast mode'''


# The setup cells stamped by earlier versions of this module (newest first; append when the template changes).
# A student who started from an older student notebook submits its setup cell: the grader accepts these exactly,
# as course code, and scans any other version like a cell the student wrote (`setup_sources`).
_SETUP_TEMPLATES_BEFORE = ('''\
# Course setup. Stamped by `{sync}` from the repository URL in pyproject.toml:
# do not edit this cell by hand (change course_lib/teaching/assign.py and run sync again).
import os
import subprocess
import sys
import time

if "google.colab" in sys.modules:
    # On Colab: install course_lib with the extras every notebook needs. Colab's preinstalled torch
    # already satisfies course_lib's lower bound, so pip keeps it (torch is never reinstalled).
    # (the environment variable replaces the repository in the course's Colab test only)
    repository = os.environ.get("{env}") or "{url}"
    archive = "/".join([repository, "archive", "refs", "heads", "main.zip"])  # as GitHub serves the branch
    requirement = f"course_lib[{extras}] @ {{archive}}"
    print(f"installing {{requirement}} (about a minute) ...")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", requirement], check=True)
    print(f"installed in {{time.perf_counter() - start:.0f}} s")
    import torch

    if not torch.cuda.is_available():
        print("No GPU on this runtime: the course runs on a CPU (fast mode keeps every notebook short). "
              "For a GPU: Runtime > Change runtime type > T4 GPU, then run this cell again.")

try:
    import course_lib
except ImportError as exc:
    raise ImportError(
        "course_lib is not installed in this Python environment. Locally, run "
        '`pip install -e ".[dev]"` from the repository root, then restart the kernel.'
    ) from exc

from course_lib.utils import doctor

_ = doctor()  # one line: library versions, device, fast mode''',)


def setup_source() -> str:
    """Source of the stamped setup cell (identical in the source and the student notebooks)."""
    return _SETUP_TEMPLATE.format(sync=SYNC_COMMAND, url=repo_url(), env=REPOSITORY_ENV, extras=COLAB_EXTRAS)


def setup_sources() -> list[str]:
    """The current setup cell, then every earlier stamped version (what a submission's setup cell may be)."""
    return [template.format(sync=SYNC_COMMAND, url=repo_url(), env=REPOSITORY_ENV, extras=COLAB_EXTRAS)
            for template in (_SETUP_TEMPLATE, *_SETUP_TEMPLATES_BEFORE)]


def _stamped_text(slug: str) -> str:
    """The two stamped cells in py:percent form (as they appear at the top of ``NN_slug.py``)."""
    badge = "\n".join(f"# {line}".rstrip() for line in badge_source(slug).split("\n"))
    return (
        f'# %% [markdown] tags=["{BADGE_TAG}"]\n{badge}\n\n'
        f'# %% tags=["{SETUP_TAG}"]\n{setup_source()}\n'
    )


def _is_stamped_marker(line: str) -> bool:
    m = _TAGS_RE.search(line)
    if not m:
        return False
    try:
        tags = json.loads(m.group(1))
    except json.JSONDecodeError:
        return False
    return BADGE_TAG in tags or SETUP_TAG in tags


def stamp_source_text(text: str, slug: str) -> str:
    """Return the py:percent source ``text`` with the badge and setup cells first (inserted or replaced).

    The jupytext YAML header (``# ---`` ... ``# ---``), if any, stays on top; every other cell is
    kept byte for byte. Text before the first ``# %%`` marker (other than the header) is an error.
    """
    lines = text.splitlines(keepends=True)
    header: list[str] = []
    start = 0
    if lines and lines[0].rstrip() == "# ---":
        for j in range(1, len(lines)):
            if lines[j].rstrip() == "# ---":
                header, start = lines[: j + 1], j + 1
                break
    markers = [k for k in range(start, len(lines)) if _CELL_MARKER_RE.match(lines[k])]
    preamble = lines[start : markers[0] if markers else len(lines)]
    if any(line.strip() for line in preamble):
        raise ValueError(
            f"{slug}.py: text before the first `# %%` cell marker; put it in a cell "
            "(the badge and setup cells must come first)"
        )
    blocks = [lines[s:e] for s, e in zip(markers, markers[1:] + [len(lines)])]
    kept = [line for block in blocks if not _is_stamped_marker(block[0]) for line in block]
    out = "".join(header) + ("\n" if header else "") + _stamped_text(slug)
    if kept:
        out += "\n" + "".join(kept)
    return out if out.endswith("\n") else out + "\n"


# --------------------------------------------------------------------------------------------
# reading and building notebooks
# --------------------------------------------------------------------------------------------


def _jupytext():
    try:
        import jupytext
    except ImportError as exc:  # pragma: no cover - jupytext is in the [test]/[dev] extras
        raise ImportError('course_lib.teaching.assign needs jupytext: pip install -e ".[dev]"') from exc
    return jupytext


def read_source(path) -> nbformat.NotebookNode:
    """Read a py:percent notebook source (``notebooks/NN_slug.py``) as it is on disk (no stamping)."""
    return _jupytext().read(Path(path), fmt="py:percent")


def _reads_source(text: str) -> nbformat.NotebookNode:
    return _jupytext().reads(text, fmt="py:percent")


def _is_stamped(cell) -> bool:
    tags = cell_tags(cell)
    return BADGE_TAG in tags or SETUP_TAG in tags


def _clean_metadata(cell) -> dict:
    md = cell.get("metadata", {})
    out = {}
    if md.get("tags"):
        out["tags"] = list(md["tags"])
    kept = {"code": ("exercise", "prediction"), "markdown": ("answer", "rubric")}.get(cell.get("cell_type"), ())
    for key in kept:
        if key in md:
            out[key] = md[key]
            out.update({k: md[k] for k in ("points", "choices") if k in md})
    return out


def _copy_cell(cell, source: str | None = None) -> nbformat.NotebookNode:
    src = cell_source(cell) if source is None else source
    md = _clean_metadata(cell)
    kind = cell.get("cell_type")
    if kind == "code":
        return nbformat.v4.new_code_cell(source=src, metadata=md)
    if kind == "markdown":
        return nbformat.v4.new_markdown_cell(source=src, metadata=md)
    if kind == "raw":
        return nbformat.v4.new_raw_cell(source=src, metadata=md)
    raise ValueError(f"unknown cell type {kind!r}")


def _stamped_cells(slug: str, student: bool) -> list[nbformat.NotebookNode]:
    return [
        nbformat.v4.new_markdown_cell(source=badge_source(slug, student), metadata={"tags": [BADGE_TAG]}),
        nbformat.v4.new_code_cell(source=setup_source(), metadata={"tags": [SETUP_TAG]}),
    ]


def _new_notebook(cells: list) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.nbformat, nb.nbformat_minor = 4, 5
    nb.metadata = nbformat.NotebookNode(
        kernelspec=nbformat.NotebookNode(_KERNELSPEC), language_info=nbformat.NotebookNode(name="python")
    )
    for i, cell in enumerate(cells):
        cell["id"] = f"c{i:02d}"  # deterministic ids (nbformat 4.5 requires them)
    nb.cells = cells
    return nb


def build_source_notebook(nb, slug: str) -> nbformat.NotebookNode:
    """The instructor notebook ``notebooks/<slug>.ipynb``: stamped cells first, outputs cleared."""
    cells = _stamped_cells(slug, student=False)
    cells += [_copy_cell(c) for c in nb.cells if not _is_stamped(c)]
    return _new_notebook(cells)


def _has_marker(source: str) -> bool:
    return any(_BEGIN_RE.match(line) or _END_RE.match(line) for line in source.split("\n"))


def build_student_notebook(nb, slug: str) -> nbformat.NotebookNode:
    """The student notebook ``notebooks/student/<slug>.ipynb``: solutions stubbed, hidden cells removed.

    Raises ``ValueError`` when a solution could leak: solution markers outside an exercise cell, an
    exercise cell without a solution region, or unbalanced markers.
    """
    cells = _stamped_cells(slug, student=True)
    for i, cell in enumerate(nb.cells):
        md = cell.get("metadata", {})
        if _is_stamped(cell) or HIDDEN_TAG in cell_tags(cell) or md.get("rubric"):
            continue  # rubrics of the short answers are instructor material
        source = ANSWER_PLACEHOLDER if cell.get("cell_type") == "markdown" and md.get("answer") else cell_source(cell)
        if cell.get("cell_type") == "code":
            exercise_id = cell.get("metadata", {}).get("exercise")
            if exercise_id:
                source = stub_source(source, str(exercise_id))
            elif _has_marker(source):
                raise ValueError(
                    f"{slug}: cell {i} has solution markers but no `exercise=` metadata; its header "
                    'must read `# %% exercise="NN.name" points=N` (or tag it hidden)'
                )
        cells.append(_copy_cell(cell, source))
    return _new_notebook(cells)


def notebook_text(nb) -> str:
    """The JSON text of a notebook as committed: ``nbformat.writes`` plus a trailing newline."""
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


# --------------------------------------------------------------------------------------------
# exercises
# --------------------------------------------------------------------------------------------


def _py_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def stub_source(source: str, exercise_id: str) -> str:
    """Replace every solution region of ``source`` (markers included) by the student stub.

    Each region becomes, at the indentation of its ``### BEGIN SOLUTION`` line::

        # YOUR CODE HERE
        raise NotImplementedError("Exercise <id> (<title>): <hint>, then run the check cell below.")

    Code outside the regions is kept unchanged. Raises ``ValueError`` for a source without a region
    or with unbalanced or nested markers.
    """
    title = exercise_title(exercise_id)
    label = f"Exercise {exercise_id} ({title})" if title else f"Exercise {exercise_id}"
    lines = source.split("\n")
    out: list[str] = []
    n_regions = 0
    i = 0
    while i < len(lines):
        begin = _BEGIN_RE.match(lines[i])
        if _END_RE.match(lines[i]):
            raise ValueError(f"exercise {exercise_id}: `### END SOLUTION` without `### BEGIN SOLUTION`")
        if not begin:
            out.append(lines[i])
            i += 1
            continue
        hints = []
        j = i + 1
        while j < len(lines) and not _END_RE.match(lines[j]):
            if _BEGIN_RE.match(lines[j]):
                raise ValueError(f"exercise {exercise_id}: nested `### BEGIN SOLUTION`")
            hint = _HINT_RE.match(lines[j])
            if hint and hint.group(1):
                hints.append(hint.group(1))
            j += 1
        if j == len(lines):
            raise ValueError(f"exercise {exercise_id}: `### BEGIN SOLUTION` without `### END SOLUTION`")
        hint_text = " ".join(hints).rstrip(".") if hints else "write your code here"
        message = f"{label}: {hint_text}, then run the check cell below."
        indent = begin.group(1)
        out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError({_py_string(message)})"]
        n_regions += 1
        i = j + 1
    if n_regions == 0:
        raise ValueError(
            f"exercise {exercise_id}: no `### BEGIN SOLUTION` ... `### END SOLUTION` region in its cell"
        )
    return "\n".join(out)


def imports_source(nb) -> str:
    """Concatenated code cells made only of imports (``import x`` / ``from x import y``, per ``ast``).

    The setup cell, hidden cells and exercise cells are left out. Used to run a solution cell on its
    own: ``exec(imports_source(nb))`` then ``exec(solution)`` in the same namespace.
    """
    chunks = [source.strip("\n") for source in import_cells(nb.cells, skip_tags=(SETUP_TAG, HIDDEN_TAG))]
    return "\n".join(chunks) + "\n" if chunks else ""


def lint(nb, slug: str) -> list[str]:
    """Convention problems of a source notebook (empty list when it follows the conventions)."""
    registry = exercise_registry()
    problems = []
    prefix = slug[:2] + "."
    seen: set[str] = set()
    for i, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        md = cell.get("metadata", {})
        exercise_id = md.get("exercise")
        source = cell_source(cell)
        if not exercise_id:
            if _has_marker(source):
                problems.append(f"{slug}: cell {i} has solution markers but no `exercise=` metadata")
            continue
        exercise_id = str(exercise_id)
        where = f"{slug}: exercise {exercise_id}"
        if not exercise_id.startswith(prefix):
            problems.append(f"{where}: the id must start with {prefix!r} (the notebook number)")
        if exercise_id in seen:
            problems.append(f"{where}: duplicate exercise id")
        seen.add(exercise_id)
        points = md.get("points")
        if not isinstance(points, int) or isinstance(points, bool) or points <= 0:
            problems.append(f"{where}: needs a positive integer `points=N` in its cell header")
        if exercise_id not in registry:
            problems.append(f"{where}: no checker registered (course_lib/teaching/exercises/nb{slug[:2]}.py)")
        try:
            stub_source(source, exercise_id)
        except ValueError as exc:
            problems.append(f"{slug}: {exc}")
        if check_target(nb, exercise_id) is None:
            problems.append(f'{where}: the next code cell must call check("{exercise_id}", <object>)')
        problems += lint_hints(nb, i, where)
    return problems + lint_responses(nb, slug)


_SECOND_HINT_RE = re.compile(r"<details>\s*<summary>\s*Second hint\b.*?</summary>(.*?)</details>", re.S | re.I)
#: a solution line at least this long (white space removed) must not appear verbatim in the hints or the task
_SPELLED_MIN_CHARS = 16


def _solution_lines(source: str) -> tuple[list[str], list[str]]:
    """The ``### HINT:`` texts and the code lines (white space removed, comments dropped) of the solution regions."""
    hints, code, inside = [], [], False
    for line in source.split("\n"):
        if _BEGIN_RE.match(line) or _END_RE.match(line):
            inside = bool(_BEGIN_RE.match(line))
            continue
        hint = _HINT_RE.match(line)
        if inside and hint:
            hints.append(hint.group(1))
        elif inside and not line.strip().startswith("#"):
            code.append(re.sub(r"\s+", "", line.split("  #")[0]))
    return hints, code


def lint_hints(nb, index: int, where: str) -> list[str]:
    """Hints in steps (notebooks/README.md, "Exercises") for the exercise cell ``nb.cells[index]``.

    The first hint, visible, names the idea: a ``### HINT:`` line in the solution region (the student's stub
    shows it). The second, folded, gives the approach: a ``<details><summary>Second hint ...</summary>`` block in
    the markdown between the previous code cell and the exercise. Neither they nor the task text may spell a line
    of the solution (a solution line of 16 or more characters, white space removed, found verbatim).
    """
    hints, code = _solution_lines(cell_source(nb.cells[index]))
    task = []
    for cell in reversed(nb.cells[:index]):
        if cell.get("cell_type") == "code":
            break
        task.append(cell_source(cell))
    markdown = "\n".join(reversed(task))
    problems = []
    if not any(h.strip() for h in hints):
        problems.append(f"{where}: needs a first hint, a `### HINT: ...` line naming the idea (the stub shows it)")
    if not _SECOND_HINT_RE.search(markdown):
        problems.append(f"{where}: needs a folded second hint (the approach) in the markdown above the cell: "
                        "<details><summary>Second hint: the approach (open it after a first try)</summary> ... "
                        "</details>")
    visible = re.sub(r"\s+", "", markdown + "\n".join(hints))
    spelled = [c for c in code if len(c) >= _SPELLED_MIN_CHARS and c in visible]
    if spelled:
        problems.append(f"{where}: the hints or the task spell the solution line(s) {spelled}: say what to do, "
                        "not the code")
    return problems


def _reveal_calls(nb) -> set[str]:
    """Ids passed as the first argument of ``reveal("id", ...)`` in the code cells."""
    ids = set()
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            ids |= set(re.findall(r"\breveal\(\s*[\"']([^\"']+)[\"']", cell_source(cell)))
    return ids


def lint_responses(nb, slug: str) -> list[str]:
    """Convention problems of the prediction, short-answer and rubric cells (:mod:`course_lib.teaching.responses`)."""
    problems = []
    prefix = slug[:2] + "."
    revealed = _reveal_calls(nb)
    answers = {aid for aid, _, _ in answer_cells(nb)}
    rubrics = rubric_cells(nb)
    ids = [pid for pid, _, _, _ in prediction_cells(nb)] + sorted(answers)
    for rid in sorted({i for i in ids if ids.count(i) > 1} | (answers & set(exercise_registry()))):
        problems.append(f"{slug}: {rid}: the id is used twice (predictions, answers and exercises need their own)")
    for pid, points, choices, source in prediction_cells(nb):
        where = f"{slug}: prediction {pid}"
        letters = [c.strip() for c in choices.split(",") if c.strip()]
        if not pid.startswith(prefix) or points <= 0:
            problems.append(f"{where}: the id must start with {prefix!r} and `points=N` be positive")
        if choices != "number" and (len(letters) < 2 or any(len(c) != 1 for c in letters)):
            problems.append(f'{where}: `choices` must be letters such as "a,b,c" or "number"')
        value, problem = read_prediction(source, choices)
        if value is not None or "still says None" not in (problem or ""):
            problems.append(f"{where}: the cell must be one assignment `name = None` for the student to fill in")
        if pid not in revealed:
            problems.append(f'{where}: a later code cell must call reveal("{pid}", <prediction>, <outcome>)')
    for aid, points, text in answer_cells(nb):
        where = f"{slug}: answer {aid}"
        if not aid.startswith(prefix) or points <= 0:
            problems.append(f"{where}: the id must start with {prefix!r} and `points=N` be positive")
        if not text.strip():
            problems.append(f"{where}: write the model answer in the cell (the student version replaces it)")
        if aid not in rubrics:
            problems.append(f'{where}: needs a rubric cell (`# %% [markdown] rubric="{aid}"`) for the instructor')
    problems += [f"{slug}: rubric {rid} has no answer cell" for rid in sorted(set(rubrics) - answers)]
    return problems


# --------------------------------------------------------------------------------------------
# sync / check
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """A file that ``sync`` would write (``content``), or an orphan notebook (``content is None``)."""

    path: Path
    reason: str  # "stamped", "missing", "out of date" or "no source"
    content: str | None = None


def _read_text(path: Path) -> str | None:
    if not path.is_file():
        return None
    return path.read_bytes().decode("utf-8").replace("\r\n", "\n")


def _verify_stamped(nb, slug: str) -> None:
    cells = nb.cells
    ok = (
        len(cells) >= 2
        and cells[0].cell_type == "markdown"
        and cell_tags(cells[0]) == [BADGE_TAG]
        and cell_source(cells[0]) == badge_source(slug)
        and cells[1].cell_type == "code"
        and cell_tags(cells[1]) == [SETUP_TAG]
        and cell_source(cells[1]) == setup_source()
    )
    if not ok:  # pragma: no cover - guards against jupytext parsing the stamped text differently
        raise RuntimeError(f"{slug}.py: stamping failed (jupytext reads the stamped cells differently)")


def keep_outputs(nb, executed) -> int:
    """Copy into ``nb`` (in place) the outputs of the code cells of ``executed`` whose source is unchanged.

    Cells are matched by source, in order (the n-th cell with a given source takes the outputs of the
    n-th such cell of ``executed``); a cell whose source changed keeps no output until the notebook is
    executed again (``python -m course_lib.teaching.assign execute``). Returns the number of cells kept.
    """
    stored: dict[str, list] = {}
    for cell in executed.cells if executed is not None else []:
        if cell.get("cell_type") == "code" and (cell.get("outputs") or cell.get("execution_count")):
            stored.setdefault(cell_source(cell), []).append(cell)
    kept = 0
    for cell in nb.cells:
        queue = stored.get(cell_source(cell)) if cell.get("cell_type") == "code" else None
        if queue:
            old = queue.pop(0)
            cell["outputs"] = old.get("outputs", [])
            cell["execution_count"] = old.get("execution_count")
            kept += 1
    return kept


def _stored_notebook(path: Path):
    text = _read_text(path)
    if text is None:
        return None
    try:
        return nbformat.reads(text, as_version=4)
    except Exception:  # a broken generated notebook is simply regenerated (without outputs)
        return None


def _outputs(source: Path) -> Iterable[tuple[Path, str, str]]:
    slug = source.stem
    text = _read_text(source) or ""
    stamped = stamp_source_text(text, slug)
    nb = _reads_source(stamped)
    _verify_stamped(nb, slug)
    yield source, stamped, "stamped"
    generated = build_source_notebook(nb, slug)
    keep_outputs(generated, _stored_notebook(source.with_suffix(".ipynb")))
    yield source.with_suffix(".ipynb"), notebook_text(generated), "out of date"
    student = source.parent / STUDENT_DIR_NAME / f"{slug}.ipynb"
    yield student, notebook_text(build_student_notebook(nb, slug)), "out of date"


def source_files(notebook_dir=None) -> list[Path]:
    """The notebook sources ``NN_slug.py`` of ``notebook_dir`` (default :data:`NOTEBOOK_DIR`), sorted."""
    return sorted(Path(notebook_dir or NOTEBOOK_DIR).glob(SOURCE_GLOB))


README_START = ("<!-- notebook-table:start (generated by `python -m course_lib.teaching.assign sync` "
                "from notebooks/index.json) -->")
README_END = "<!-- notebook-table:end -->"


def _runtime(seconds) -> str:
    if seconds is None:
        return "?"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def notebook_table(notebook_dir=None, sources: list[Path] | None = None) -> str:
    """The README's notebook table: one row per notebook source, described in ``notebooks/index.json``
    (``title``, ``learn``: one line, ``prerequisites``, measured CPU runtimes ``fast_s`` / ``full_s``),
    with an "Open in Colab" badge for the notebook and for its student copy."""
    notebook_dir = Path(notebook_dir or NOTEBOOK_DIR)
    sources = source_files(notebook_dir) if sources is None else sources
    index_path = notebook_dir / "index.json"
    index = json.loads(index_path.read_text(encoding="utf-8")) if index_path.exists() else {}
    runtimes = index.get("_runtimes", "")
    rows = [
        "| # | notebook | what you learn | prerequisites | CPU runtime (fast / full) | Colab |",
        "|---|---|---|---|---|---|",
    ]
    for source in sources:
        slug = source.stem
        info = index.get(slug) or {"title": slug, "learn": "(describe this notebook in notebooks/index.json)"}
        badge = badge_source(slug)
        student = f"[student copy](https://colab.research.google.com/github/{github_repo()}/blob/main/" \
                  f"{notebook_path(slug, student=True)})"
        rows.append(
            f"| {slug[:2]} | [{info['title']}](notebooks/{slug}.ipynb) | {info['learn']} | "
            f"{info.get('prerequisites', '')} | {_runtime(info.get('fast_s'))} / {_runtime(info.get('full_s'))} | "
            f"{badge} {student} |"
        )
    if runtimes:
        rows.append("")
        rows.append(f"Runtimes: {runtimes}")
    return "\n".join(rows)


def _readme_change(notebook_dir: Path, sources: list[Path]) -> Change | None:
    """The README.md update that puts the current notebook table between its markers (if any)."""
    readme = notebook_dir.parent / "README.md"
    current = _read_text(readme)
    if current is None or README_START not in current or not sources:
        return None
    head, rest = current.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    content = f"{head}{README_START}\n{notebook_table(notebook_dir, sources)}\n{README_END}{tail}"
    return None if content == current else Change(readme, "notebook table out of date", content)


def plan(notebook_dir=None) -> list[Change]:
    """Every file that differs from what ``sync`` would write, and every orphan generated notebook."""
    notebook_dir = Path(notebook_dir or NOTEBOOK_DIR)
    changes = []
    sources = source_files(notebook_dir)
    for source in sources:
        for path, content, reason in _outputs(source):
            current = _read_text(path)
            if current != content:
                changes.append(Change(path, "missing" if current is None else reason, content))
    readme = _readme_change(notebook_dir, sources)
    if readme is not None:
        changes.append(readme)
    slugs = {s.stem for s in sources}
    for folder in (notebook_dir, notebook_dir / STUDENT_DIR_NAME):
        for path in sorted(folder.glob(GENERATED_GLOB)):
            if path.stem not in slugs:
                changes.append(Change(path, "no source"))
    return changes


def sync(notebook_dir=None, write: bool = True) -> list[Change]:
    """Stamp the sources and regenerate the notebooks; return the changes (written when ``write``)."""
    changes = plan(notebook_dir)
    if write:
        for change in changes:
            if change.content is not None:
                change.path.parent.mkdir(parents=True, exist_ok=True)
                change.path.write_text(change.content, encoding="utf-8", newline="\n")
    return changes


def check(notebook_dir=None) -> list[Change]:
    """The out-of-date files (empty list when every generated and stamped file is up to date)."""
    return sync(notebook_dir, write=False)


def lint_all(notebook_dir=None) -> list[str]:
    """Convention problems of every notebook source of ``notebook_dir``."""
    problems = []
    index_path = Path(notebook_dir or NOTEBOOK_DIR) / "index.json"
    index = json.loads(index_path.read_text(encoding="utf-8")) if index_path.exists() else {}
    for source in source_files(notebook_dir):
        problems += lint(read_source(source), source.stem)
        if index_path.exists() and source.stem not in index:
            problems.append(f"{source.stem}: no entry in {index_path.name} "
                            "(title, learn, prerequisites, fast_s, full_s)")
    return problems


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def _rel(path: Path) -> str:
    path = Path(path).resolve()
    for base in (Path.cwd(), REPO_ROOT):
        try:
            return path.relative_to(base.resolve()).as_posix()
        except ValueError:
            continue
    return path.as_posix()


def _print_problems(problems: list[str]) -> None:
    if problems:
        print(f"{len(problems)} convention problem(s) (see `python -m pydoc course_lib.teaching.assign`):")
        for p in problems:
            print(f"  {p}")


def _cmd_sync(notebook_dir) -> int:
    changes = sync(notebook_dir)
    for c in changes:
        if c.content is None:
            print(f"warning: {_rel(c.path)} has no source {c.path.stem}.py: delete it or add the source")
        else:
            print(f"wrote {_rel(c.path)} ({c.reason})")
    if not any(c.content is not None for c in changes):
        print("everything up to date")
    problems = lint_all(notebook_dir)
    _print_problems(problems)
    return 1 if problems else 0


def _cmd_check(notebook_dir) -> int:
    changes = check(notebook_dir)
    for c in changes:
        print(f"{_rel(c.path)}: {c.reason}")
    if any(c.content is not None for c in changes):
        print(f"fix: run `{SYNC_COMMAND}` and commit the result")
    if any(c.content is None for c in changes):
        print("fix: delete the generated notebooks that have no NN_slug.py source (or add the source)")
    problems = lint_all(notebook_dir)
    _print_problems(problems)
    if not changes and not problems:
        print(f"{len(source_files(notebook_dir))} notebook(s) up to date")
    _print_unexecuted(notebook_dir)
    return 1 if changes or problems else 0


def _print_unexecuted(notebook_dir) -> None:
    """A note (not an error: CI never executes) on the generated notebooks with code cells that have no output."""
    for source in source_files(notebook_dir):
        nb = _stored_notebook(source.with_suffix(".ipynb"))
        n = sum(1 for c in (nb.cells if nb else []) if c.get("cell_type") == "code" and not c.get("execution_count"))
        if n:
            print(f"note: {source.stem}.ipynb has {n} code cell(s) without stored output; "
                  f"run `python -m course_lib.teaching.assign execute {source.stem[:2]}` before a release")


def _cmd_list(notebook_dir) -> int:
    rows = []
    for source in source_files(notebook_dir):
        nb = read_source(source)
        for exercise_id, points, _ in exercise_cells(nb):
            rows.append((source.stem, exercise_id, str(points), exercise_title(exercise_id) or "?"))
        rows += [(source.stem, pid, str(points), f"prediction ({choices}): points for committing one")
                 for pid, points, choices, _ in prediction_cells(nb)]
        rows += [(source.stem, aid, str(points), "short answer: marked by hand with the rubric")
                 for aid, points, _ in answer_cells(nb)]
    if not rows:
        print("no exercises")
        return 0
    head = ("notebook", "id", "points", "title")
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(3)]
    for r in [head, *rows]:
        print("  ".join(r[k].ljust(widths[k]) for k in range(3)) + "  " + r[3])
    n_responses = sum(1 for r in rows if r[3].startswith(("prediction", "short answer")))
    extra = f" + {n_responses} prediction(s) and short answer(s)" if n_responses else ""
    print(f"{len(rows) - n_responses} exercise(s){extra}, {sum(int(r[2]) for r in rows)} points")
    return 0


def _cmd_execute(notebook_dir, wanted: list[str], stale: bool) -> int:
    from course_lib.teaching.execute import execute_all, select

    if _cmd_sync(notebook_dir):
        return 1
    notebooks = [s.with_suffix(".ipynb") for s in source_files(notebook_dir)]

    def write(path: Path, nb) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(notebook_text(nb), encoding="utf-8", newline="\n")
        tmp.replace(path)

    chosen = select(notebooks, wanted, stale)
    if not chosen:
        print("every notebook is executed (run without --stale to execute them again)")
        return 0
    return 1 if execute_all(chosen, write) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course_lib.teaching.assign", description="Notebook build: stamping and student versions."
    )
    parser.add_argument(
        "--notebooks", type=Path, default=None, help="notebook folder (default: notebooks/ of the repository)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sync", help="stamp the sources and regenerate every .ipynb (writes files)")
    sub.add_parser("check", help="exit 1 if a generated or stamped file is out of date (CI)")
    sub.add_parser("list", help="table of the exercises")
    ex = sub.add_parser("execute", help="sync, then run the notebooks in full mode and store their outputs (slow)")
    ex.add_argument("which", nargs="*", help="notebook numbers or slugs (default: all)")
    ex.add_argument("--stale", action="store_true", help="only the notebooks with a code cell not executed yet")
    args = parser.parse_args(argv)
    if args.notebooks is not None and not source_files(args.notebooks):
        parser.error(f"--notebooks {args.notebooks}: no notebook sources ({SOURCE_GLOB}) there; --notebooks takes "
                     "the notebook *folder* (to execute some notebooks, name them after `execute`: "
                     "`execute 02 08`)")
    if args.command == "execute":
        return _cmd_execute(args.notebooks, args.which, args.stale)
    command = {"sync": _cmd_sync, "check": _cmd_check, "list": _cmd_list}[args.command]
    return command(args.notebooks)


if __name__ == "__main__":
    sys.exit(main())
