"""Autograder of the course notebooks: run each submission, grade each exercise in isolation, write a gradebook.

Command line (from the repository root)::

    python -m course_lib.teaching.grade SUBMISSIONS_DIR --out RESULTS_DIR [--hidden HIDDEN_DIR]
        [--cell-timeout S] [--notebook-timeout S] [--exercise-timeout S] [--fast | --full]
        [--jobs N] [--no-run] [--notebook NN_slug] [--notebooks DIR] [--network auto|namespace|guard]

``SUBMISSIONS_DIR`` holds the notebooks as downloaded from Colab or JupyterLab, either one file per
student (``alice.ipynb``: the student id is the file name) or one folder per student
(``alice/00_symmetry_primer.ipynb``: the student id is the folder name). Which course notebook a
submission is comes from its content (exercise ids, check calls, the Colab badge), or ``--notebook``.

Outputs in ``RESULTS_DIR``: ``gradebook.csv`` and ``gradebook.json`` (one row per student, notebook
and exercise: ``student, notebook, exercise, points, max_points, status, message``; status is one of
pass / partial / fail / error / timeout / missing / flagged), ``totals.csv``, ``feedback/<student>.md``
(what failed and why, with the symmetry error values, and a total), ``runs.json`` (per-cell result of
each notebook run) and ``executed/<student>/<notebook>.ipynb`` (the executed copies, outputs capped).

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
3. **Exercises.** Each exercise is graded in its own process (``python -I``), time- and
   output-limited, that executes only the notebook's import cells and that one exercise cell of the
   submission (found by its ``exercise`` cell metadata, else by the function name; a missing, renamed
   or reordered cell is reported). Only *then* does it load the checking code fresh from files: the
   ``course_lib`` modules are dropped from ``sys.modules`` and re-imported from a second, pristine,
   hash-checked copy of the package made when grading started, and the hidden test module is loaded
   with ``importlib.util.spec_from_file_location`` from ``--hidden`` (never on the kernel's path, never
   copied next to a submission). On Linux a per-submission server process does the imports once and
   forks one child per exercise (the server never runs student code, so every child starts from the
   same clean state); elsewhere each exercise starts a new interpreter. The hidden test of exercise
   ``"00.name"`` is ``HIDDEN["00.name"]`` of ``HIDDEN_DIR/nb00.py``, a function ``hidden(obj, fb)``
   that calls the public checker of :mod:`course_lib.teaching.exercises` with other seeds and sizes plus extra
   cases (see :func:`run_cases`), so the public self-check a student runs in Colab is a subset of
   what the grader runs.
4. **Points** come from the ``points`` cell metadata of the *instructor* source notebook
   (``notebooks/NN_slug.py``), never from the submission: ``points = max_points * fraction`` rounded
   to 2 decimals, where the fraction is the mean over the test cases of the share of checks passed
   (a case that stops at a fatal failure or raises scores 0; a case that crashes in the test's own
   code is left out and reported); 0 for errors, time-outs and flags.

Tampering (flagged for review: 0 points, ``flagged`` status, reasons in the message)
------------------------------------------------------------------------------------

* **Static scan** of the code the student wrote (the exercise cells, and code cells added or changed
  with respect to the distributed student notebook) for ``EXERCISES``, ``run_checker``, ``__code__``,
  ``builtins``, ``sys.modules``, ``grading/hidden``, stack-frame and ``gc`` inspection, ``os._exit``,
  ``ctypes``, ``setattr`` on course_lib modules, and assignments to attributes of ``course_lib``
  modules (``S.equivariance_error = ...``); in an exercise cell also the use of that exercise's
  reference solution (``nb00.symmetrize``). Hits in an exercise cell flag that exercise; hits in
  another cell flag every exercise of the notebook.
* **Runtime snapshot** in each exercise process: the identity (and ``__code__``) of every attribute of
  the loaded ``course_lib`` modules, of their classes and dicts, of ``builtins``, ``torch``,
  ``torch.Tensor``, ``torch.linalg``, ``torch.nn.functional``, ``math``, ``importlib``, and of
  ``sys.meta_path`` / ``sys.path_hooks``, taken before the student's code runs and compared after it
  ran (the hidden tests are then not run), and again around the hidden test (the student's function
  runs inside it).
* **Audit hook** (``sys.addaudithook``, which student code cannot remove) in the kernel and in each
  exercise process: opening or listing anything inside the hidden-test folder, or writing into
  ``course_lib`` (the private copy, the installed package, the pristine copy), raises
  ``PermissionError`` and is recorded; in the kernel run it is attributed to the cell that did it (an
  exercise cell or its check cell flags that exercise, another cell every exercise).
* **File hashes** of the submission's private ``course_lib`` after every cell and every exercise
  process; a change is flagged (and the copy restored). The installed ``course_lib`` is never
  written by the grader: when it changes while grading (someone edits the checkout) a warning is
  printed; the grading used the copies taken at the start.

Network: the kernel and the exercise processes run in a new network namespace (``unshare -rn``:
no network interface but a loopback that is down; the kernel talks to the grader over Unix-socket
IPC) when the machine allows unprivileged user namespaces; otherwise (and in addition) Python's
``socket`` module refuses connections to anything but localhost and the proxy variables point to a
closed port. Guaranteed: the checking code and the verdict come from files the submission cannot
change, a submission cannot crash or stall the grading of the others, and each exercise process is
killed at its time limit. *Not* guaranteed (this is not an OS sandbox; run the grader as an
unprivileged user in a container for hostile input): without the namespace, code can reach the
network through C extensions or subprocesses; student code shares its process with the checker, so
deliberately obfuscated code (frame walking, ``gc``, ``ctypes``) could forge a result - the scans
above flag the usual ways to do so for human review; memory is not limited; files the grading
user can read outside the hidden-tests folder are readable.
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tokenize
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = [
    "COLUMNS",
    "STATUSES",
    "Limits",
    "Row",
    "run_cases",
    "scan_code",
    "find_exercise_cell",
    "CappedText",
    "snapshot",
    "snapshot_diff",
    "LibraryGuard",
    "load_course",
    "find_submissions",
    "read_notebook",
    "grade",
    "main",
]

COLUMNS = ("student", "notebook", "exercise", "points", "max_points", "status", "message")
STATUSES = ("pass", "partial", "fail", "error", "timeout", "missing", "flagged")

#: course_lib package folder of this grader (the installed library, protected during grading).
#: The ``course_lib`` package folder (``course_lib/teaching/grade.py`` -> ``course_lib``).
LIB_DIR = Path(__file__).resolve().parents[1]
_CHILD_FLAG = "--exercise-child"
_AUDIT_MARK = "[autograder]"


# --------------------------------------------------------------------------------------------
# hidden-test helper (used by the hidden test modules, runs inside the exercise process)
# --------------------------------------------------------------------------------------------


def run_cases(fb, obj, cases: Iterable[tuple[str, Callable, dict]]) -> None:
    """Run several checker calls on ``obj``, each with its own Feedback, and merge them into ``fb``.

    ``cases``: ``(label, checker, kwargs)`` triples, e.g.
    ``("public check", nb00.check_symmetrize, {})``, ``("seed=1, N=20", nb00.check_symmetrize,
    {"seed": 1, "n": 20})``. Every message is prefixed with ``[label]``. A case stops at its own
    fatal failures and a student exception ends only that case (it becomes a failure message), so
    one bad case does not hide the others. ``NotImplementedError`` propagates (the exercise is not
    done). The per-case scores (``passed / total``, 0 for a case that stopped or raised) are kept in
    ``fb.cases``; the grader's fraction is their mean. A case that crashes in the test's own code (no
    frame of the student's code in the traceback) is left out of the score and reported in
    ``fb.test_errors``: a bug in a hidden test never costs the student points.
    """
    from course_lib.teaching.checks import Feedback, StopChecking, describe_exception

    scores = fb.__dict__.setdefault("cases", [])
    test_errors = fb.__dict__.setdefault("test_errors", [])
    caller = sys._getframe(1).f_code.co_filename
    for label, checker, kwargs in cases:
        sub = Feedback()
        stopped = False
        try:
            checker(obj, sub, **kwargs)
        except StopChecking:
            stopped = True
        except NotImplementedError:
            raise
        except Exception as exc:  # noqa: BLE001 - the student's error becomes feedback
            test_files = {caller, getattr(getattr(checker, "__code__", None), "co_filename", "")}
            if not _student_in_traceback(exc, test_files):
                test_errors.append(f"[{label}] {type(exc).__name__}: {exc}")
                continue
            sub.failed.append(f"your code raised {describe_exception(exc)}")
            stopped = True
        fb.passed.extend(f"[{label}] {m}" for m in sub.passed)
        fb.failed.extend(f"[{label}] {m}" for m in sub.failed)
        total = len(sub.passed) + len(sub.failed)
        scores.append((label, 0.0 if stopped or total == 0 else len(sub.passed) / total))


def _student_in_traceback(exc: BaseException, test_files: Iterable[str] = ()) -> bool:
    """True when a frame of the traceback is neither the test's nor a library's (stdlib, site-packages,
    course_lib): then the student's code is involved."""
    lib_roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    lib_roots.add(str(LIB_DIR))
    tests = {os.path.realpath(f) for f in test_files if f}
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
        if name.startswith(_STUDENT_FILES):
            return True
        if name.startswith("<") or os.path.realpath(name) in tests:
            continue
        real = os.path.realpath(name)
        if not any(real == r or real.startswith(r + os.sep) for r in lib_roots):
            return True
    return False


# --------------------------------------------------------------------------------------------
# small pieces: limits, rows, capped output, static scan, exercise-cell lookup, snapshots
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Time and size limits of one grading session (seconds, characters)."""

    cell_timeout: float = 300.0
    notebook_timeout: float = 1800.0
    exercise_timeout: float = 60.0
    output_limit: int = 20_000  # characters of output kept per cell / per exercise process
    fast: bool = True


@dataclass
class Row:
    student: str
    notebook: str
    exercise: str
    points: float
    max_points: int
    status: str
    message: str
    details: list[str] = field(default_factory=list)  # feedback lines (not in the gradebook)
    output: str = ""  # what the student's code printed while graded (capped)

    def record(self) -> dict:
        return {k: getattr(self, k) for k in COLUMNS}


class CappedText(io.TextIOBase):
    """A text stream that keeps the first ``limit`` characters written and counts the rest."""

    def __init__(self, limit: int = 20_000):
        super().__init__()
        self.limit = limit
        self._parts: list[str] = []
        self._kept = 0
        self.dropped = 0
        self.buffer = _CappedBytes(self)

    def writable(self) -> bool:
        return True

    def write(self, s) -> int:
        s = s if isinstance(s, str) else str(s)
        room = self.limit - self._kept
        if room > 0:
            self._parts.append(s[:room])
            self._kept += min(room, len(s))
        self.dropped += max(0, len(s) - max(room, 0))
        return len(s)

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def getvalue(self) -> str:
        text = "".join(self._parts)
        if self.dropped:
            text += f"\n[... {self.dropped} more characters of output dropped by the autograder]"
        return text


class _CappedBytes:
    def __init__(self, text: CappedText):
        self._text = text

    def write(self, b) -> int:
        self._text.write(bytes(b).decode("utf-8", "replace"))
        return len(b)

    def flush(self) -> None:
        pass


def cap_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with a note saying how much was dropped."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters of output dropped by the autograder]"


_SUSPICIOUS = [
    (r"\bEXERCISES\b", "the checker registry `EXERCISES`"),
    (r"\brun_checker\b", "the grading function `run_checker`"),
    (r"\b_StopChecking\b", "the checker internals (`StopChecking`)"),
    (r"\b__code__\b", "`__code__` (swapping a function's code)"),
    (r"\b__globals__\b", "`__globals__`"),
    (r"\b__builtins__\b|\bbuiltins\b", "`builtins`"),
    (r"\bsys\s*\.\s*modules\b", "`sys.modules`"),
    (r"grading\W{1,8}hidden\b", "the hidden-tests folder `grading/hidden`"),
    (r"\b_getframe\b|\bf_back\b|\bf_locals\b|\bf_globals\b|\binspect\s*\.\s*(?:stack|currentframe|getouterframes"
     r"|getinnerframes|trace)\b", "stack-frame inspection"),
    (r"\bgc\s*\.\s*get_(?:objects|referrers|referents)\b", "`gc` object inspection"),
    (r"\bos\s*\.\s*_exit\b", "`os._exit`"),
    (r"\bctypes\b", "`ctypes`"),
    (r"\baddaudithook\b|\bsetprofile\b|\bsettrace\b", "interpreter hooks"),
]
_PROTECTED_ROOTS = ("course_lib", "builtins")


def _strip_comments(source: str) -> str:
    """``source`` without its comments (strings are kept: paths hide in strings)."""
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type != tokenize.COMMENT]
        return tokenize.untokenize(tokens)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return "\n".join(line.split("#", 1)[0] for line in source.split("\n"))


def import_aliases(sources: Iterable[str]) -> dict[str, str]:
    """``{local name: dotted name}`` of the course_lib modules and objects imported by ``sources``."""
    aliases: dict[str, str] = {"course_lib": "course_lib", "builtins": "builtins"}
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] in _PROTECTED_ROOTS:
                        aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] in _PROTECTED_ROOTS:
                    for a in node.names:
                        if a.name != "*":
                            aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def _dotted(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def scan_code(source: str, aliases: dict[str, str] | None = None, reference: str | None = None) -> list[str]:
    """Reasons to flag ``source`` for review (empty list: nothing suspicious).

    ``aliases``: see :func:`import_aliases` (names bound to course_lib modules); ``reference``: the
    dotted name of this exercise's reference solution (``course_lib.teaching.exercises.nb00.symmetrize``),
    whose use is flagged.
    """
    aliases = dict(import_aliases([source]), **(aliases or {}))
    code = _strip_comments(source)
    reasons = [f"mentions {what}" for pattern, what in _SUSPICIOUS if re.search(pattern, code)]
    names = "|".join(sorted(re.escape(a) for a in aliases))
    if re.search(rf"\bsetattr\s*\(\s*(?:{names})\b", code) or re.search(rf"\bvars\s*\(\s*(?:{names})\s*\)", code):
        reasons.append("changes a course_lib module with setattr()/vars()")
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return reasons
    seen = set()
    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        while targets:
            t = targets.pop()
            if isinstance(t, (ast.Tuple, ast.List)):
                targets += list(t.elts)
                continue
            if isinstance(t, ast.Starred):
                targets.append(t.value)
                continue
            into = isinstance(t, ast.Subscript)
            chain = _dotted(t.value if into else t) if isinstance(t, (ast.Attribute, ast.Subscript)) else None
            if chain and chain[0] in aliases and (len(chain) > 1 or into):
                name = ".".join([aliases[chain[0]], *chain[1:]])
                if name not in seen:
                    seen.add(name)
                    reasons.append(f"assigns {'into ' if into else ''}`{name}` (patching the course library)")
        if reference and isinstance(node, ast.Attribute):
            chain = _dotted(node)
            if chain and chain[0] in aliases and ".".join([aliases[chain[0]], *chain[1:]]) == reference:
                reasons.append(f"uses the reference solution `{reference.split('.', 2)[-1]}`")
        if reference and isinstance(node, ast.ImportFrom) and node.module:
            if any(f"{node.module}.{a.name}" == reference for a in node.names):
                reasons.append(f"imports the reference solution `{reference.split('.', 2)[-1]}`")
    return list(dict.fromkeys(reasons))


def _cell_source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _defined_names(source: str) -> list[str]:
    """Top-level names a cell defines (functions, classes, assignments)."""
    try:
        tree = ast.parse(_strip_magics(source))
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


def _strip_magics(source: str) -> str:
    """IPython line magics and shell escapes (``%timeit``, ``!pip``) commented out."""
    return "\n".join(re.sub(r"^(\s*)([%!])", r"\1# \2", line) for line in source.split("\n"))


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
    check_re = re.compile(r"check\(\s*['\"]" + re.escape(exercise_id) + r"['\"]")
    check_cells = [i for i, c in code if check_re.search(_cell_source(c))]

    def defines(c) -> bool:
        return target_name in _defined_names(_cell_source(c))

    if tagged:
        good = [(i, c) for i, c in tagged if defines(c)]
        i, c = (good or tagged)[-1]
        loc = Located(i, _cell_source(c))
        if len(tagged) > 1:
            loc.notes.append(f"{len(tagged)} cells carry the metadata exercise={exercise_id}; graded cell {i}")
        if not good:
            defined = ", ".join(f"`{n}`" for n in _defined_names(loc.source)) or "nothing"
            loc.how = "renamed"
            loc.problem = (f"the exercise cell (cell {i}) no longer defines `{target_name}` (it defines {defined}): "
                           f"keep the name `{target_name}` of the distributed notebook")
    else:
        stub = f"Exercise {exercise_id}"
        candidates = [(i, c) for i, c in code if defines(c) or stub in _cell_source(c)]
        if check_cells:
            before = [(i, c) for i, c in candidates if i < check_cells[0]]
            candidates = before or candidates
        if not candidates:
            return Located(None, how="missing", problem=(
                f"no exercise cell for {exercise_id}: no cell carries its metadata or defines `{target_name}` "
                "(deleted, or the function renamed?); restore the cell from the distributed notebook"))
        i, c = candidates[-1]
        loc = Located(i, _cell_source(c), how="name")
        loc.notes.append(f"the exercise metadata of cell {i} was lost; found the cell by its name `{target_name}`")
    if check_cells and loc.index is not None and all(k < loc.index for k in check_cells):
        loc.notes.append(f"the exercise cell (cell {loc.index}) comes after its check cell (cell {check_cells[0]})")
    return loc


# runtime snapshot ---------------------------------------------------------------------------

_WATCHED_EXTRA = ("builtins", "math", "importlib", "importlib.util", "torch", "torch.linalg", "torch.nn.functional")


def _ident(obj) -> tuple:
    code = getattr(obj, "__code__", None)
    return (id(obj), id(code) if code is not None else 0)


def snapshot(prefixes: tuple[str, ...] = ("course_lib",), extra: Iterable[str] = _WATCHED_EXTRA) -> dict:
    """Identity of every attribute of the watched modules (and of their classes' attributes).

    Modules whose name is or starts with one of ``prefixes`` are watched entirely (attributes added,
    changed or removed); ``extra`` modules (builtins, torch, ...) for changed or removed attributes.
    The object ids are only meaningful inside the same process.
    """
    snap: dict = {"modules": {}, "strict": set(), "sys": {}}
    mods = {n: m for n, m in list(sys.modules.items()) if m is not None
            and any(n == p or n.startswith(p + ".") for p in prefixes)}
    for name in extra:
        if name in sys.modules:
            mods.setdefault(name, sys.modules[name])
    for name, mod in mods.items():
        entries = {}
        strict = any(name == p or name.startswith(p + ".") for p in prefixes)
        for attr, value in list(vars(mod).items()):
            entries[attr] = _ident(value)
            if strict and isinstance(value, type) and getattr(value, "__module__", None) == name:
                for k, v in list(vars(value).items()):
                    entries[f"{attr}.{k}"] = _ident(getattr(v, "__func__", v))
            elif strict and isinstance(value, dict) and not attr.startswith("__"):
                for k, v in list(value.items()):
                    entries[f"{attr}[{k!r}]"] = _ident(v)
        if name == "torch" and "Tensor" in vars(mod):
            for k, v in list(vars(mod.Tensor).items()):
                entries[f"Tensor.{k}"] = _ident(v)
        snap["modules"][name] = (id(mod), entries)
        if strict:
            snap["strict"].add(name)
    snap["sys"] = {"path": list(sys.path), "meta_path": [id(f) for f in sys.meta_path],
                   "path_hooks": [id(h) for h in sys.path_hooks]}
    return snap


def snapshot_diff(before: dict, after: dict) -> list[str]:
    """What changed between two :func:`snapshot` calls, as readable reasons (empty: nothing)."""
    reasons = []
    for name, (mod_id, entries) in sorted(before["modules"].items()):
        if name not in after["modules"] or after["modules"][name][0] != mod_id:
            reasons.append(f"replaced the module `{name}` in sys.modules")
            continue
        now = after["modules"][name][1]
        changed = sorted(a for a, ident in entries.items() if a in now and now[a] != ident)
        removed = sorted(a for a in entries if a not in now)
        added = sorted(a for a in now if a not in entries and "[" not in a) if name in before["strict"] else []
        mod = sys.modules.get(name)
        added = [a for a in added if not (mod is not None and sys.modules.get(f"{name}.{a}") is getattr(mod, a, 0))]
        for what, attrs in (("replaced", changed), ("deleted", removed), ("added", added)):
            if attrs:
                shown = ", ".join(f"`{name}.{a}`" for a in attrs[:4]) + (" ..." if len(attrs) > 4 else "")
                reasons.append(f"{what} {shown}")
    for key in ("meta_path", "path_hooks"):
        if before["sys"][key] != after["sys"][key]:
            reasons.append(f"changed `sys.{key}` (import machinery)")
    return reasons


# --------------------------------------------------------------------------------------------
# the guard: network block and audit hook, for the kernel (startup file) and the exercise process
# --------------------------------------------------------------------------------------------

_GUARD_SOURCE = r'''
def _autograder_guard(hidden_dirs=(), protected_dirs=(), log_path=None, student_files=()):
    """Block non-local network connections, reads of the hidden tests and writes into course_lib.

    Returns ``(state, events)``: ``state["phase"]`` is "student" (every read of the hidden tests is the
    student's), "loading" (the grader loads the hidden tests) or "check" (a read is the student's only
    when a frame of a file named ``student_files*`` is on the stack; others are refused silently);
    ``events`` lists what was refused and recorded.
    """
    import os
    import socket
    import sys

    message = "network access is disabled while grading"
    inet = (socket.AF_INET, getattr(socket, "AF_INET6", socket.AF_INET))
    local = {None, "", "localhost", "127.0.0.1", "::1", b"localhost", b"127.0.0.1", b"::1"}
    _connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
    _getaddrinfo = socket.getaddrinfo

    def connect(self, address, _orig=_connect):
        if self.family in inet and address[0] not in local:
            raise OSError(101, message)
        return _orig(self, address)

    def connect_ex(self, address, _orig=_connect_ex):
        if self.family in inet and address[0] not in local:
            return 101
        return _orig(self, address)

    def sendto(self, data, *args, _orig=_sendto):
        address = args[-1] if args else None
        if self.family in inet and isinstance(address, tuple) and address[0] not in local:
            raise OSError(101, message)
        return _orig(self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        if host not in local:
            raise socket.gaierror(-3, message)
        return _getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto
    socket.getaddrinfo = getaddrinfo

    hidden = tuple(os.path.realpath(p) for p in hidden_dirs)
    protected = tuple(os.path.realpath(p) for p in protected_dirs)
    prefixes = tuple(student_files)
    state = {"busy": False, "phase": "student"}
    events = []
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if log_path else None
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    reading = {"os.listdir", "os.scandir", "glob.glob", "os.chdir"}
    two_paths = {"os.rename", "shutil.move", "shutil.copyfile", "shutil.copytree", "os.link", "os.symlink"}
    writing = {"os.remove", "os.rmdir", "os.truncate", "os.chmod", "os.chown", "os.utime", "os.mkdir",
               "shutil.rmtree", "shutil.copymode", "shutil.copystat"} | two_paths

    def inside(path, roots):
        return any(path == r or path.startswith(r + os.sep) for r in roots)

    def student_on_stack():
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_filename.startswith(prefixes):
                return True
            frame = frame.f_back
        return False

    def record(text):
        if text not in events:
            events.append(text)
        if log_fd is not None:
            try:
                os.write(log_fd, (text + "\n").encode())
            except OSError:
                pass

    def hook(event, args):
        if state["busy"] or not (event == "open" or event in reading or event in writing):
            return
        state["busy"] = True
        try:
            if event == "open":
                mode = args[1] if len(args) > 1 else None
                flags = args[2] if len(args) > 2 else 0
                write = bool(isinstance(mode, str) and any(c in mode for c in "wax+")) or bool(
                    isinstance(flags, int) and flags & write_flags)
                paths = args[:1]
            else:
                write = event in writing
                paths = args[:2] if event in two_paths else args[:1]
            for i, path in enumerate(paths):
                if path is None or isinstance(path, int):
                    continue
                try:
                    real = os.path.realpath(os.fsdecode(path))
                except Exception:
                    continue
                if hidden and state["phase"] != "loading" and inside(real, hidden):
                    if state["phase"] == "student" or (prefixes and student_on_stack()):
                        root = next(r for r in hidden if inside(real, (r,)))
                        rel = os.path.relpath(real, root)
                        record("read the hidden tests" + ("" if rel == "." else f" ({rel})"))
                    raise PermissionError(13, "[autograder] the hidden tests may not be read", os.path.basename(real))
                if (write and (event != "shutil.copyfile" or i == 1) and protected and inside(real, protected)
                        and "__pycache__" not in real):
                    record(f"wrote into course_lib ({os.path.basename(real)})")
                    raise PermissionError(13, "[autograder] course_lib is read-only while grading",
                                          os.path.basename(real))
        finally:
            state["busy"] = False

    sys.addaudithook(hook)
    return state, events
'''

_STUDENT_FILES = ("<exercise cell", "<imports cell")


def _exec_guard(hidden_dirs, protected_dirs, log_path=None, student_files=()):
    namespace: dict = {}
    exec(compile(_GUARD_SOURCE, "<autograder guard>", "exec"), namespace)  # noqa: S102 - our own code
    return namespace["_autograder_guard"](tuple(map(str, hidden_dirs)), tuple(map(str, protected_dirs)), log_path,
                                          tuple(student_files))


def _kernel_startup_source(hidden_dirs, protected_dirs, log_path) -> str:
    return (_GUARD_SOURCE + f"\n_autograder_guard({tuple(map(str, hidden_dirs))!r}, "
            f"{tuple(map(str, protected_dirs))!r}, {str(log_path)!r})\ndel _autograder_guard\n")


_PROXY = "http://127.0.0.1:9"


def _sandbox_env(fast: bool, threads: str | None = None) -> dict[str, str]:
    """Environment of the kernel and the exercise processes: fast mode, no proxy escape, no secrets."""
    secret = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|CREDENTIAL|^AWS_|^GH_|^GITHUB_", re.IGNORECASE)
    env = {k: v for k, v in os.environ.items() if not secret.search(k)}
    env.update({
        "COURSE_FAST": "1" if fast else "0",
        "MPLBACKEND": "Agg",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "http_proxy": _PROXY, "https_proxy": _PROXY, "all_proxy": _PROXY, "ftp_proxy": _PROXY,
        "HTTP_PROXY": _PROXY, "HTTPS_PROXY": _PROXY, "ALL_PROXY": _PROXY, "no_proxy": "", "NO_PROXY": "",
        "PIP_NO_INDEX": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    })
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = threads
    return env


_NAMESPACE_OK: bool | None = None


def namespace_available() -> bool:
    """True when ``unshare -rn`` can start a process in a new user + network namespace here."""
    global _NAMESPACE_OK
    if _NAMESPACE_OK is None:
        exe = shutil.which("unshare")
        ok = False
        if exe and sys.platform.startswith("linux"):
            try:
                ok = subprocess.run([exe, "-rn", sys.executable, "-c", "pass"], capture_output=True,
                                    timeout=30).returncode == 0
            except (OSError, subprocess.SubprocessError):
                ok = False
        _NAMESPACE_OK = ok
    return _NAMESPACE_OK


# --------------------------------------------------------------------------------------------
# the installed course_lib: snapshot, verify, restore, pristine copy
# --------------------------------------------------------------------------------------------


def _lib_files(root: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LibraryGuard:
    """Snapshot of a package's files; :meth:`verify` reports changes and restores the snapshot."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.files = _lib_files(self.root)
        self.hashes = {k: _sha(v) for k, v in self.files.items()}
        self._lock = threading.Lock()

    def changed(self) -> list[str]:
        now = {p.relative_to(self.root).as_posix(): p for p in self.root.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
        out = [rel for rel in sorted(set(now) | set(self.hashes))
               if rel not in now or rel not in self.hashes or _sha(now[rel].read_bytes()) != self.hashes[rel]]
        return out

    def verify(self) -> list[str]:
        """Files changed since the snapshot (restored to the snapshot before returning)."""
        with self._lock:
            changed = self.changed()
            for rel in changed:
                path = self.root / rel
                if rel in self.files:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(self.files[rel])
                elif path.is_file():
                    path.unlink()
            return changed

    def copy_to(self, dest: Path) -> dict[str, str]:
        """Write the snapshot into ``dest`` (the pristine copy); return its hashes."""
        for rel, data in self.files.items():
            path = Path(dest) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return dict(self.hashes)


# --------------------------------------------------------------------------------------------
# the course: instructor notebooks, their exercises and points
# --------------------------------------------------------------------------------------------


@dataclass
class ExerciseSpec:
    id: str
    points: int
    target: str  # the expression checked in the instructor notebook, e.g. "symmetrize"
    name: str  # the name the student defines
    title: str


@dataclass
class CourseNotebook:
    slug: str
    exercises: list[ExerciseSpec]
    imports: str  # the import-only cells of the instructor notebook
    student_sources: set[str]  # stripped code-cell sources of the distributed student notebook

    @property
    def number(self) -> str:
        return self.slug[:2]

    @property
    def max_points(self) -> int:
        return sum(e.points for e in self.exercises)


def _target_name(expr: str) -> str:
    try:
        tree = ast.parse(expr, mode="eval")
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
        for exercise_id, points, _ in assign.exercise_cells(nb):
            target = assign.check_target(nb, exercise_id) or exercise_id.split(".", 1)[-1]
            exercises.append(ExerciseSpec(exercise_id, points, target, _target_name(target),
                                          assign._exercise_title(exercise_id) or ""))
        if not exercises:
            continue
        student = assign.build_student_notebook(nb, slug)
        sources = {_cell_source(c).strip() for c in student.cells if c.get("cell_type") == "code"}
        course[slug] = CourseNotebook(slug, exercises, assign.imports_source(nb), sources)
    return course


# --------------------------------------------------------------------------------------------
# submissions
# --------------------------------------------------------------------------------------------


@dataclass
class Submission:
    student: str
    path: Path


def find_submissions(folder, exclude: Iterable[Path] = ()) -> list[Submission]:
    """``*.ipynb`` files of ``folder`` (student = file name) and of its sub-folders (student = folder name)."""
    folder = Path(folder)
    excluded = {Path(p).resolve() for p in exclude}
    subs = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.resolve() in excluded:
            continue
        if entry.is_file() and entry.suffix == ".ipynb":
            subs.append(Submission(entry.stem, entry))
        elif entry.is_dir():
            for path in sorted(entry.rglob("*.ipynb")):
                rel = path.relative_to(entry)
                if not any(part.startswith(".") for part in rel.parts):
                    subs.append(Submission(entry.name, path))
    return subs


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
    ranked = [(v, s) for s, v in votes.items() if v > 0]
    ranked.sort(reverse=True)
    if not ranked or (len(ranked) > 1 and ranked[0][0] == ranked[1][0]):
        return None
    return ranked[0][1]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "student"


# --------------------------------------------------------------------------------------------
# the notebook run (fresh kernel, time limits, capped outputs, audit log)
# --------------------------------------------------------------------------------------------


@dataclass
class CellRun:
    index: int  # position in the notebook, from 0, markdown cells included
    status: str  # ok | error | timeout | not run
    detail: str = ""
    head: str = ""  # the first code line of the cell


def _head(cell) -> str:
    for line in _cell_source(cell).split("\n"):
        line = line.strip()
        if line and not line.startswith("#"):
            return line if len(line) <= 60 else line[:57] + "..."
    return ""


@dataclass
class RunReport:
    status: str  # ok | error | timeout | crashed | not run
    message: str
    cells: list[CellRun] = field(default_factory=list)
    events: list[tuple[int, str]] = field(default_factory=list)  # (cell index, tamper reason)

    def record(self) -> dict:
        return {"status": self.status, "message": self.message, "cells": [asdict(c) for c in self.cells],
                "events": [list(e) for e in self.events]}


def _make_client_class():
    from nbclient import NotebookClient

    class CappedClient(NotebookClient):
        """nbclient's NotebookClient keeping at most ``output_limit`` characters of output per cell."""

        output_limit = 20_000

        def output(self, outs, msg, display_id, cell_index):
            used = self.__dict__.setdefault("_used", {})
            content = msg.get("content", {})
            size = len(content.get("text", "")) + sum(len(str(v)) for v in (content.get("data") or {}).values())
            size += sum(len(str(x)) for x in content.get("traceback", []) or [])
            if used.get(cell_index, 0) + size > self.output_limit and msg.get("msg_type") != "error":
                dropped = self.__dict__.setdefault("_dropped", {})
                if cell_index not in dropped:
                    import nbformat

                    outs.append(nbformat.v4.new_output("stream", name="stderr", text=(
                        f"\n[autograder: output beyond {self.output_limit} characters dropped]\n")))
                dropped[cell_index] = dropped.get(cell_index, 0) + size
                return None
            used[cell_index] = used.get(cell_index, 0) + size
            return super().output(outs, msg, display_id, cell_index)

    return CappedClient


def _error_line(cell) -> str | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            value = str(out.get("evalue", "")).strip().split("\n")[0]
            return f"{out.get('ename', 'Error')}: {value[:300]}"
    return None


def _cell_ranges(indices: list[int]) -> str:
    if not indices:
        return ""
    parts, start, prev = [], indices[0], indices[0]
    for i in indices[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(parts)


class _Session:
    """Everything shared by the submissions of one grading run."""

    def __init__(self, course, hidden: Path | None, limits: Limits, out: Path, run_notebooks: bool,
                 network: str, tmp: Path):
        self.course = course
        self.hidden = hidden
        self.limits = limits
        self.out = out
        self.run_notebooks = run_notebooks
        self.tmp = tmp
        self.submissions: Path | None = None
        # the installed course_lib as it is now: the source of the pristine copy (checking code) and of
        # each submission's private copy (what the student's code imports)
        self.library = LibraryGuard(LIB_DIR)
        self.pristine = tmp / "pristine" / "course_lib"
        self.pristine_hashes = self.library.copy_to(self.pristine)
        if network == "namespace" and not namespace_available():
            raise RuntimeError("--network namespace: `unshare -rn` does not work on this machine")
        self.namespace = network == "namespace" or (network == "auto" and namespace_available())
        self.prefix = [shutil.which("unshare") or "unshare", "-rn"] if self.namespace else []
        self.kernel_dir = tmp / "kernels"
        spec_dir = self.kernel_dir / "course-grader"
        spec_dir.mkdir(parents=True, exist_ok=True)
        spec = {"argv": [*self.prefix, sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "course grader", "language": "python"}
        (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")

    def student_library(self, work: Path) -> LibraryGuard:
        """A private copy of course_lib for one submission (``work/lib/course_lib``); the kernel and the
        student phase import this copy. When course_lib comes from a checkout, the checkout's other
        top-level files and folders (``data/``, ``benchmarks/``, ``pyproject.toml``, ...) are linked next to
        it, so that paths relative to the repository keep working; never ``grading/`` (hidden tests),
        the results folder, or hidden entries."""
        lib = work / "lib"
        self.library.copy_to(lib / "course_lib")
        repo = LIB_DIR.parent
        if not (repo / "pyproject.toml").is_file():
            return LibraryGuard(lib / "course_lib")
        avoid = [p.resolve() for p in (self.hidden, self.out, self.submissions) if p is not None]
        for entry in sorted(repo.iterdir()):
            real = entry.resolve()
            if (entry.name in ("course_lib", "grading") or entry.name.startswith(".") or entry.suffix == ".egg-info"
                    or any(real == a or a.is_relative_to(real) or real.is_relative_to(a) for a in avoid)):
                continue
            try:
                (lib / entry.name).symlink_to(real, target_is_directory=entry.is_dir())
            except OSError:
                pass
        return LibraryGuard(lib / "course_lib")

    def protected(self, lib: LibraryGuard) -> list[str]:
        return [str(lib.root), str(LIB_DIR), str(self.pristine)]

    # the notebook run ---------------------------------------------------------------------

    def run_notebook(self, nb, work: Path, lib: LibraryGuard) -> RunReport:
        from jupyter_client import AsyncKernelManager
        from jupyter_client.kernelspec import KernelSpecManager
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        limits = self.limits
        ipython = work / "ipython"
        startup = ipython / "profile_default" / "startup"
        startup.mkdir(parents=True, exist_ok=True)
        audit_log = work / "audit.log"
        audit_log.touch()
        hidden = [self.hidden] if self.hidden else []
        (startup / "00-autograder.py").write_text(
            _kernel_startup_source(hidden, self.protected(lib), audit_log), encoding="utf-8")
        cwd = work / "run"
        env = _sandbox_env(limits.fast, os.environ.get("OMP_NUM_THREADS", "1"))
        env["IPYTHONDIR"] = str(ipython)
        env["PYTHONPATH"] = os.pathsep.join([str(lib.root.parent), *filter(None, [env.get("PYTHONPATH")])])
        ksm = KernelSpecManager(kernel_dirs=[str(self.kernel_dir)])
        km_kwargs = {"kernel_name": "course-grader", "kernel_spec_manager": ksm}
        if self.namespace:  # Unix-socket IPC: TCP on 127.0.0.1 would not cross the network namespace
            ipc = Path(tempfile.mkdtemp(prefix="k", dir=self.tmp))
            km_kwargs.update(transport="ipc", ip=str(ipc / "k"))
        km = AsyncKernelManager(**km_kwargs)
        client = _make_client_class()(nb, km=km, timeout=int(limits.cell_timeout), allow_errors=True,
                                      record_timing=False, interrupt_on_timeout=False, startup_timeout=120,
                                      iopub_timeout=4, shutdown_kernel="immediate")
        client.output_limit = limits.output_limit
        cells: list[CellRun] = []
        events: list[tuple[int, str]] = []
        status, stop = "ok", ""
        code_indices = [i for i, c in enumerate(nb.cells) if c.get("cell_type") == "code"]
        log_offset = 0

        def collect(index: int) -> None:
            nonlocal log_offset
            data = audit_log.read_bytes()
            new, log_offset = data[log_offset:], len(data)
            for line in new.decode("utf-8", "replace").splitlines():
                if line.strip() and (index, line.strip()) not in events:
                    events.append((index, line.strip()))
            for rel in lib.verify():
                events.append((index, f"changed the course_lib file {rel}"))

        kernel_log = open(work / "kernel.log", "wb")  # noqa: SIM115 - closed in finally
        try:
            deadline = time.monotonic() + limits.notebook_timeout
            with client.setup_kernel(env=env, cwd=str(cwd), stdout=kernel_log, stderr=kernel_log):
                for n, index in enumerate(code_indices):
                    cell = nb.cells[index]
                    remaining = deadline - time.monotonic()
                    if remaining < 1:
                        stop = f"stopped at the notebook time limit ({limits.notebook_timeout:g} s)"
                        status = "timeout"
                        cells += [CellRun(i, "not run") for i in code_indices[n:]]
                        break
                    by_notebook = remaining < limits.cell_timeout
                    head = _head(cell)
                    client.timeout = max(1, int(min(limits.cell_timeout, remaining)))
                    try:
                        client.execute_cell(cell, index)
                    except CellTimeoutError:
                        cells.append(CellRun(index, "timeout", (
                            f"stopped at the notebook time limit ({limits.notebook_timeout:g} s)" if by_notebook
                            else f"did not finish within {limits.cell_timeout:g} s"), head))
                        status = "timeout"
                        collect(index)
                        if by_notebook or not self._recover(client):
                            cells += [CellRun(i, "not run") for i in code_indices[n + 1:]]
                            stop = (f"stopped at the notebook time limit ({limits.notebook_timeout:g} s)"
                                    if by_notebook else "the kernel did not recover after the time-out")
                            break
                        continue
                    except DeadKernelError:
                        cells.append(CellRun(index, "error", "the kernel died (crash, os._exit or out of memory)",
                                             head))
                        cells += [CellRun(i, "not run") for i in code_indices[n + 1:]]
                        status, stop = "crashed", "the kernel died"
                        collect(index)
                        break
                    err = _error_line(cell)
                    cells.append(CellRun(index, "error" if err else "ok", err or "", head))
                    if err and status == "ok":
                        status = "error"
                    collect(index)
        except Exception as exc:  # noqa: BLE001 - a kernel that cannot start must not stop the grading
            return RunReport("error", f"the notebook could not be run: {type(exc).__name__}: {exc}", cells, events)
        finally:
            kernel_log.close()
            collect(-1)
        return RunReport(status, self._run_message(status, stop, cells, len(code_indices)), cells, events)

    @staticmethod
    def _recover(client) -> bool:
        """Interrupt the kernel after a time-out; True when it answers again within a few seconds."""
        from queue import Empty

        from jupyter_core.utils import ensure_async, run_sync

        async def probe() -> bool:
            await ensure_async(client.km.interrupt_kernel())
            msg_id = client.kc.execute("pass", silent=True)
            end = time.monotonic() + 15
            while time.monotonic() < end:
                try:
                    reply = await ensure_async(client.kc.get_shell_msg(timeout=max(0.1, end - time.monotonic())))
                except Empty:
                    return False
                if reply.get("parent_header", {}).get("msg_id") == msg_id:
                    return True
            return False

        try:
            return bool(run_sync(probe)())
        except Exception:  # noqa: BLE001
            return False

    @staticmethod
    def _run_message(status: str, stop: str, cells: list[CellRun], n_code: int) -> str:
        if status == "ok":
            return f"ran top to bottom without errors ({n_code} code cells)"
        parts = []
        errors = [c for c in cells if c.status == "error"]
        timeouts = [c for c in cells if c.status == "timeout"]
        not_run = [c.index for c in cells if c.status == "not run"]
        if errors:
            parts.append("errors in " + ", ".join(f"cell {c.index} `{c.head}` ({c.detail})" for c in errors[:3])
                         + (f" and {len(errors) - 3} more" if len(errors) > 3 else ""))
        if timeouts:
            parts.append("time-outs in " + ", ".join(f"cell {c.index} `{c.head}` ({c.detail})" for c in timeouts))
        if not_run:
            parts.append(f"{stop}: the last {len(not_run)} code cells did not run")
        return "; ".join(parts) + " (cells are numbered from 0, markdown cells included)"


# --------------------------------------------------------------------------------------------
# the exercise processes
# --------------------------------------------------------------------------------------------


class _ExerciseRunner:
    """Runs the exercises of one submission, each in its own process.

    Where ``os.fork`` exists, a per-submission server process (``--exercise-server``) imports the
    student's copy of course_lib and the notebook's imports once, never runs student code itself, and
    forks one child per exercise: each child starts from that clean state, in its own session, with its
    own output file, and is killed at the time limit. Elsewhere (or if the server fails) each exercise
    gets a new ``python -I`` process (``--exercise-child``) that does the same setup itself.
    """

    def __init__(self, session: _Session, work: Path, setup: dict):
        self.s = session
        self.work = work
        self.setup = dict(setup, output_limit=session.limits.output_limit, pristine=str(session.pristine),
                          pristine_hashes=session.pristine_hashes)
        self.cwd = work / "cwd"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.env = _sandbox_env(session.limits.fast, "1")
        self.server: subprocess.Popen | None = None
        self._buffer = b""
        if hasattr(os, "fork") and sys.platform.startswith("linux"):
            self._start_server()

    def _cmd(self, flag: str) -> list[str]:
        return [*self.s.prefix, sys.executable, "-I", "-B", str(self.s.pristine / "teaching" / "grade.py"), flag]

    def _start_server(self) -> None:
        try:
            log = open(self.work / "server.log", "wb")  # noqa: SIM115 - owned by the server process
            self.server = subprocess.Popen(self._cmd(_SERVER_FLAG), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=log, cwd=self.cwd, env=self.env, start_new_session=True)
            log.close()
            self._send(self.setup)
            line = self._read_line(max(120.0, self.s.limits.exercise_timeout))
            if line != "ready":
                raise RuntimeError(f"exercise server did not start ({line!r})")
        except Exception:  # noqa: BLE001 - fall back to one process per exercise
            self.close()

    def _send(self, obj: dict) -> None:
        assert self.server is not None and self.server.stdin is not None
        self.server.stdin.write((json.dumps(obj) + "\n").encode())
        self.server.stdin.flush()

    def _read_line(self, timeout: float) -> str | None:
        import select

        assert self.server is not None and self.server.stdout is not None
        fd = self.server.stdout.fileno()
        end = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = end - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    return None
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace").strip()

    def close(self) -> None:
        if self.server is not None:
            try:
                self.server.stdin.close()
                self.server.wait(timeout=10)
            except Exception:  # noqa: BLE001
                pass
            _kill_group(self.server)
            self.server = None

    def run(self, job: dict, name: str) -> dict:
        work = self.work / name
        work.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(16)
        result, output = work / "result.json", work / "output.txt"
        job = dict(job, token=token, result=str(result), output=str(output))
        if self.server is not None:
            code = self._run_forked(job)
        else:
            code = self._run_process(job)
        limit = self.s.limits.output_limit
        text = output.read_bytes()[: 4 * limit].decode("utf-8", "replace") if output.is_file() else ""
        text = cap_text(text, limit)
        if code == "timeout":
            return {"status": "timeout", "output": text, "message": (
                f"your code did not finish within {self.s.limits.exercise_timeout:g} s (an infinite loop, or far "
                "too slow?); the grader stopped it")}
        try:
            data = json.loads(result.read_text(encoding="utf-8"))
            if data.pop("token", None) != token:
                raise ValueError("bad token")
        except (OSError, ValueError):
            tail = text.strip().splitlines()[-1:] if text.strip() else []
            return {"status": "error", "output": text, "message": (
                f"the grading process ended without a result ({code}): does your code exit, crash Python or kill "
                "the process?" + (f" Last output: {tail[0][:200]}" if tail else ""))}
        if text.strip():
            data["output"] = (data.get("output", "") + "\n" + text).strip()
        return data

    def _run_forked(self, job: dict) -> str:
        try:
            self._send(job)
            line = self._read_line(60.0) or ""
            if not line.startswith("started "):
                raise RuntimeError(line)
            pid = int(line.split()[1])
        except Exception:  # noqa: BLE001 - the server is gone: use a fresh process for this job and the next
            self.close()
            return self._run_process(job)
        line = self._read_line(self.s.limits.exercise_timeout)
        if line is None:
            for kill in (lambda: os.killpg(pid, 9), lambda: os.kill(pid, 9)):
                try:
                    kill()
                except OSError:
                    pass
            if (self._read_line(15.0) or "").split()[:2] != ["exited", str(pid)]:
                self.close()
            return "timeout"
        try:
            os.killpg(pid, 9)  # whatever the student's code left running in the exercise's session
        except OSError:
            pass
        return f"exit status {line.split()[-1]}" if line.startswith("exited") else f"server said {line!r}"

    def _run_process(self, job: dict) -> str:
        with open(job["output"], "wb") as log:
            try:
                proc = subprocess.Popen(self._cmd(_CHILD_FLAG), stdin=subprocess.PIPE, stdout=log,
                                        stderr=subprocess.STDOUT, cwd=self.cwd, env=self.env, start_new_session=True)
            except OSError as exc:
                return f"could not start Python: {exc}"
            try:
                proc.stdin.write(json.dumps({"setup": self.setup, "job": job}).encode())
                proc.stdin.close()
            except OSError:
                pass
            try:
                code = proc.wait(timeout=self.s.limits.exercise_timeout)
            except subprocess.TimeoutExpired:
                return "timeout"
            finally:
                _kill_group(proc)
        return f"exit code {code}"


def _kill_group(proc) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, 9)
        else:  # pragma: no cover - Windows
            proc.kill()
    except OSError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


# --------------------------------------------------------------------------------------------
# inside the exercise process (``python -I -B <pristine>/course_lib/teaching/grade.py --exercise-...``)
# --------------------------------------------------------------------------------------------

_SERVER_FLAG = "--exercise-server"


def _child_setup(setup: dict) -> dict:
    """Limits, guard, and the clean state every exercise starts from (no student code runs here)."""
    import importlib

    try:
        import resource
        import signal

        cap = 8 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    except (ImportError, ValueError, OSError, AttributeError):
        pass
    sys.dont_write_bytecode = True
    state, events = _exec_guard([setup["hidden_dir"]] if setup.get("hidden_dir") else [], setup["protected"],
                                student_files=_STUDENT_FILES)
    sys.path.insert(0, setup["student_lib"])
    notes = []
    for name in ("course_lib.teaching.checks", "course_lib.symmetry", setup["checker_module"]):
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001
            notes.append(f"{name} could not be imported: {type(exc).__name__}: {exc}")
    try:
        exec(compile(setup["instructor_imports"], "<instructor imports>", "exec"),  # noqa: S102
             {"__name__": "__autograder_baseline__"})
    except Exception as exc:  # noqa: BLE001
        notes.append(f"the notebook's imports raised {type(exc).__name__}: {exc}")
    return {"state": state, "events": events, "notes": notes}


def _child_job(setup: dict, ctx: dict, job: dict) -> None:
    """Grade one exercise and write the result file (the process exits right after)."""
    out = CappedText(setup["output_limit"])
    sys.stdout = sys.stderr = out
    try:
        res = _child_grade(setup, ctx, job)
    except BaseException as exc:  # noqa: BLE001 - report, never crash silently
        res = {"status": "error", "message": f"internal grader error: {type(exc).__name__}: {exc}"}
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    res["output"] = out.getvalue()
    res["token"] = job["token"]
    with open(job["result"], "w", encoding="utf-8") as fh:
        json.dump(res, fh)


def _child_main() -> int:
    payload = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    ctx = _child_setup(payload["setup"])
    _child_job(payload["setup"], ctx, payload["job"])
    os._exit(0)  # skip interpreter shutdown: no student __del__ runs after the verdict


def _server_main() -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    setup = json.loads(stdin.readline().decode("utf-8"))
    ctx = _child_setup(setup)
    stdout.write(b"ready\n")
    stdout.flush()
    while True:
        line = stdin.readline()
        if not line.strip():
            return 0
        job = json.loads(line.decode("utf-8"))
        pid = os.fork()
        if pid == 0:  # the exercise process
            try:
                os.setsid()
                fd = os.open(job["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                _child_job(setup, ctx, job)
            finally:
                os._exit(0)
        stdout.write(f"started {pid}\n".encode())
        stdout.flush()
        _, status = os.waitpid(pid, 0)
        stdout.write(f"exited {pid} {status}\n".encode())
        stdout.flush()


def _child_grade(setup: dict, ctx: dict, job: dict) -> dict:
    import builtins
    import importlib
    import importlib.util
    import linecache

    state, events = ctx["state"], ctx["events"]
    exercise_id = job["exercise"]
    path_before, meta_before, hooks_before = list(sys.path), list(sys.meta_path), list(sys.path_hooks)
    before = snapshot()
    notes = list(ctx["notes"])

    def flagged() -> list[str]:
        return list(dict.fromkeys(snapshot_diff(before, snapshot()) + events))

    # 1. the student's imports and exercise cell, in a fresh namespace
    ns: dict = {"__name__": "__main__", "__builtins__": builtins}
    state["phase"] = "student"

    def run_code(source: str, label: str):
        source = _strip_magics(source)
        linecache.cache[label] = (len(source), None, source.splitlines(True), label)
        exec(compile(source, label, "exec"), ns)  # noqa: S102 - running the student's code is the point

    for k, chunk in enumerate([setup["instructor_imports"], *job["submission_imports"]]):
        try:
            run_code(chunk, f"<imports cell {k}>")
        except BaseException as exc:  # noqa: BLE001
            notes.append(f"an import cell raised {type(exc).__name__}: {exc}")
    try:
        run_code(job["cell"], f"<exercise cell {exercise_id}>")
    except BaseException as exc:  # noqa: BLE001
        return {"status": "error", "flags": flagged(), "notes": notes, "message": (
            f"your exercise cell raised {type(exc).__name__}: {str(exc)[:300]} when run on its own (the grader "
            "runs each exercise cell with only the notebook's imports: define every helper inside the cell)")}
    try:
        obj = eval(job["target"], ns)  # noqa: S307 - the expression comes from the instructor notebook
    except NameError:
        return {"status": "missing", "flags": flagged(), "notes": notes, "message": (
            f"your exercise cell does not define `{job['name']}` (renamed?): keep the name of the distributed "
            "notebook")}
    except BaseException as exc:  # noqa: BLE001
        return {"status": "error", "flags": flagged(), "notes": notes,
                "message": f"`{job['target']}` could not be evaluated: {type(exc).__name__}: {exc}"}
    flags = flagged()
    if flags:
        return {"status": "flagged", "flags": flags, "notes": notes,
                "message": "the hidden tests were not run (the library was changed)"}

    # 2. the checking code, loaded fresh from the pristine, hash-checked copy of course_lib
    state["phase"] = "loading"
    sys.path[:], sys.meta_path[:], sys.path_hooks[:] = path_before, meta_before, hooks_before
    sys.path_importer_cache.clear()
    for name in [n for n in sys.modules if n == "course_lib" or n.startswith("course_lib.")]:
        del sys.modules[name]
    pristine = Path(setup["pristine"])
    for rel, digest in setup["pristine_hashes"].items():
        if _sha((pristine / rel).read_bytes()) != digest:
            return {"status": "error", "message": f"grader integrity: the pristine copy of {rel} changed"}
    spec = importlib.util.spec_from_file_location("course_lib", pristine / "__init__.py",
                                                  submodule_search_locations=[str(pristine)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["course_lib"] = package
    spec.loader.exec_module(package)
    checks = importlib.import_module("course_lib.teaching.checks")
    importlib.import_module(setup["checker_module"])
    hidden_fn, source = None, "public check only (no hidden test module)"
    if job.get("hidden"):
        hspec = importlib.util.spec_from_file_location(f"_course_hidden_{job['slug']}", job["hidden"])
        hidden_mod = importlib.util.module_from_spec(hspec)
        hspec.loader.exec_module(hidden_mod)
        hidden_fn = getattr(hidden_mod, "HIDDEN", {}).get(exercise_id)
        source = "hidden tests" if hidden_fn else "public check only (no hidden test for this exercise)"
    if hidden_fn is None:
        public = checks.EXERCISES[exercise_id].checker
        hidden_fn = lambda o, f: run_cases(f, o, [("public check", public, {})])  # noqa: E731
    for name, mod in list(sys.modules.items()):
        if (name == "course_lib" or name.startswith("course_lib.")) and mod is not None:
            origin = getattr(mod, "__file__", None) or ""
            if origin and not Path(origin).resolve().is_relative_to(pristine.resolve()):
                return {"status": "error", "message": f"grader integrity: {name} was loaded from outside the copy"}
    before_check = snapshot()
    n_events = len(events)

    # 3. the hidden test (the student's function runs inside it)
    state["phase"] = "check"
    fb = checks.Feedback()
    error, not_implemented = None, False
    try:
        hidden_fn(obj, fb)
    except checks.StopChecking:
        fb.__dict__.setdefault("stopped", True)
    except NotImplementedError:
        not_implemented = True
    except Exception as exc:  # noqa: BLE001
        if _student_in_traceback(exc, [job.get("hidden") or ""]):
            error = f"your code raised {checks.describe_exception(exc)}"
        else:
            error = (f"the hidden test itself failed ({type(exc).__name__}: {exc}); not your fault: tell your "
                     "instructor")
    except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt from student code
        error = f"your code stopped the test with {type(exc).__name__}"
    state["phase"] = "loading"
    flags = list(dict.fromkeys(snapshot_diff(before_check, snapshot()) + events[n_events:]))
    cases = fb.__dict__.get("cases")
    total = len(fb.passed) + len(fb.failed)
    if cases:
        fraction = sum(score for _, score in cases) / len(cases)
    else:
        fraction = 0.0 if fb.__dict__.get("stopped") or not total else len(fb.passed) / total
    return {"status": "checked", "flags": flags, "notes": notes, "source": source,
            "n_passed": len(fb.passed), "n_total": total, "failed": list(fb.failed),
            "fraction": 0.0 if error or not_implemented else fraction, "error": error,
            "not_implemented": not_implemented, "n_cases": len(cases or []),
            "test_errors": list(fb.__dict__.get("test_errors", []))}


# --------------------------------------------------------------------------------------------
# grading one submission
# --------------------------------------------------------------------------------------------


@dataclass
class Graded:
    student: str
    notebook: str
    rows: list[Row]
    run: RunReport | None = None
    path: str = ""
    notes: list[str] = field(default_factory=list)


def _summary(res: dict) -> tuple[str, str, float, list[str]]:
    """status, message, fraction, details of a child result of status "checked"."""
    failed = res.get("failed", [])
    unique = list(dict.fromkeys(failed))
    counts = Counter(failed)
    details = [m + (f" (x{counts[m]})" if counts[m] > 1 else "") for m in unique]
    n_passed, n_total = res.get("n_passed", 0), res.get("n_total", 0)
    cases = res.get("n_cases", 0)
    in_cases = f" in {cases} test cases" if cases > 1 else ""
    if res.get("not_implemented"):
        return "fail", "not implemented yet (the stub still raises NotImplementedError)", 0.0, details
    if res.get("error"):
        msg = f"{res['error']} (after {n_passed} passed checks)" if n_passed else res["error"]
        return "error", msg, 0.0, details
    fraction = float(res.get("fraction", 0.0))
    if fraction >= 1.0 and not failed:
        return "pass", f"all {n_total} checks passed{in_cases}", 1.0, details
    head = f"{n_passed}/{n_total} checks passed{in_cases}"
    first = unique[0] if unique else "a test case stopped early"
    return ("partial" if fraction > 0 else "fail"), f"{head}; first problem: {first}", fraction, details


class _Grader:
    def __init__(self, session: _Session, forced: str | None):
        self.s = session
        self.forced = forced

    def grade(self, sub: Submission) -> Graded:
        try:
            return self._grade(sub)
        except Exception as exc:  # noqa: BLE001 - one submission must never stop the others
            slug = self.forced or "?"
            return Graded(sub.student, slug, [Row(sub.student, slug, "?", 0.0, 0, "error",
                                                  f"internal grader error: {type(exc).__name__}: {exc}")])

    def _error_rows(self, student: str, slug: str | None, message: str) -> list[Row]:
        if slug is None:
            return [Row(student, "?", "?", 0.0, 0, "error", message + " (and the course notebook could not be "
                        "recognised: pass --notebook NN_slug)")]
        return [Row(student, slug, e.id, 0.0, e.points, "error", message) for e in self.s.course[slug].exercises]

    def _grade(self, sub: Submission) -> Graded:
        data = sub.path.read_bytes()
        text = data.decode("utf-8", "replace")
        nb, problem = read_notebook(data)
        slug = self.forced or identify(text + " " + sub.path.name, self.s.course)
        if nb is None:
            return Graded(sub.student, slug or "?", self._error_rows(sub.student, slug, problem), path=str(sub.path))
        if slug is None:
            return Graded(sub.student, "?", self._error_rows(
                sub.student, None, "no exercise of a course notebook found in this notebook"), path=str(sub.path))
        cnb = self.s.course[slug]
        work = Path(tempfile.mkdtemp(prefix="sub-", dir=self.s.tmp))
        (work / "run").mkdir()
        copy = work / "run" / sub.path.name
        copy.write_bytes(data)

        cells = nb.cells
        located = {e.id: find_exercise_cell(cells, e.id, e.name) for e in cnb.exercises}
        exercise_of_cell = {}
        for e in cnb.exercises:
            loc = located[e.id]
            if loc.index is not None:
                exercise_of_cell[loc.index] = e.id
            check_re = re.compile(r"check\(\s*['\"]" + re.escape(e.id) + r"['\"]")
            for i, c in enumerate(cells):
                if c.get("cell_type") == "code" and check_re.search(_cell_source(c)):
                    exercise_of_cell.setdefault(i, e.id)
        order = [located[e.id].index for e in cnb.exercises if located[e.id].index is not None]
        notes = []
        if order != sorted(order):
            notes.append("the exercise cells are not in the order of the distributed notebook")

        # static scan: exercise cells, and other code cells the student added or changed
        all_sources = [_cell_source(c) for c in cells if c.get("cell_type") == "code"]
        aliases = import_aliases(all_sources)
        exercise_cells = {loc.index for loc in located.values() if loc.index is not None}
        global_flags = []
        for i, c in enumerate(cells):
            if c.get("cell_type") != "code" or i in exercise_cells:
                continue
            src = _cell_source(c)
            if src.strip() in cnb.student_sources or not src.strip():
                continue
            global_flags += [f"cell {i} (not an exercise cell) {r}" for r in scan_code(src, aliases)]

        lib = self.s.student_library(work)
        run = None
        if self.s.run_notebooks:
            run = self.s.run_notebook(nb, work, lib)
            self._save_executed(sub, slug, nb)
        run_flags: dict[str, list[str]] = {}
        for index, reason in (run.events if run else []):
            target = exercise_of_cell.get(index)
            if target is None:
                global_flags.append(f"{reason} (notebook run, cell {index})" if index >= 0 else
                                    f"{reason} (notebook run)")
            else:
                run_flags.setdefault(target, []).append(reason)

        setup = {"student_lib": str(lib.root.parent), "protected": self.s.protected(lib),
                 "hidden_dir": str(self.s.hidden) if self.s.hidden else None,
                 "checker_module": f"course_lib.teaching.exercises.nb{cnb.number}", "instructor_imports": cnb.imports}
        runner = _ExerciseRunner(self.s, work, setup)
        try:
            submission_imports = _submission_imports(cells, cnb.imports)
            rows = [self._grade_exercise(sub, cnb, e, located[e.id], aliases, submission_imports, runner, lib,
                                         global_flags, run_flags.get(e.id, [])) for e in cnb.exercises]
        finally:
            runner.close()
        return Graded(sub.student, slug, rows, run, str(sub.path), notes)

    def _grade_exercise(self, sub, cnb, e: ExerciseSpec, loc: Located, aliases, submission_imports,
                        runner: _ExerciseRunner, lib: LibraryGuard, global_flags: list[str],
                        run_flags: list[str]) -> Row:
        row = Row(sub.student, cnb.slug, e.id, 0.0, e.points, "missing", "")
        notes = list(loc.notes)
        if loc.index is None or loc.how == "renamed":
            row.message = loc.problem
            static = global_flags + run_flags
            if static:
                row.status, row.message = "flagged", "flagged for review: " + "; ".join(static)
            row.details = notes
            return row
        reference = f"course_lib.teaching.exercises.nb{cnb.number}.{e.name}"
        static = scan_code(loc.source, aliases, reference=reference)
        hidden = self.s.hidden / f"nb{cnb.number}.py" if self.s.hidden else None
        job = {"exercise": e.id, "slug": cnb.slug, "target": e.target, "name": e.name,
               "submission_imports": submission_imports, "cell": loc.source,
               "hidden": str(hidden) if hidden is not None and hidden.is_file() else None}
        res = runner.run(job, f"ex-{e.id}")
        lib_changes = [f"changed the course_lib file {rel}" for rel in lib.verify()]
        flags = list(dict.fromkeys(static + global_flags + run_flags + res.get("flags", []) + lib_changes))
        notes += res.get("notes", [])
        notes += [f"a hidden test case crashed and was left out of the score: {t}" for t in res.get("test_errors", [])]
        row.output = res.get("output", "")
        status = res.get("status")
        if status == "checked":
            status, message, fraction, details = _summary(res)
            row.details = details
            if res.get("source", "").startswith("public"):
                notes.append(f"graded with the {res['source']}")
            if status in ("pass", "partial"):
                row.points = round(e.points * fraction, 2)
        else:
            message = res.get("message", "")
        row.status, row.message = status, message
        if flags:
            tested = {"checked": f" (before the flag: {row.message})",
                      "flagged": " (the hidden tests were not run)"}.get(res.get("status"), "")
            row.status, row.points = "flagged", 0.0
            row.message = "flagged for review: " + "; ".join(flags) + tested
        if notes:
            row.message += " [note: " + "; ".join(notes) + "]"
        return row

    def _save_executed(self, sub: Submission, slug: str, nb) -> None:
        import nbformat

        try:
            dest = self.s.out / "executed" / _safe_name(sub.student) / f"{slug}.ipynb"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(nbformat.writes(nb), encoding="utf-8")
        except Exception:  # noqa: BLE001, S110 - the executed copy is a convenience
            pass


def _submission_imports(cells, instructor_imports: str) -> list[str]:
    """The submission's import-only code cells that are not already among the instructor's imports."""
    known = {line.strip() for line in instructor_imports.split("\n")}
    chunks = []
    for cell in cells:
        md = cell.get("metadata", {})
        tags = md.get("tags", []) or []
        if cell.get("cell_type") != "code" or md.get("exercise") or "course-setup" in tags:
            continue
        source = _cell_source(cell)
        try:
            body = ast.parse(source).body
        except SyntaxError:
            continue
        if body and all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in body):
            if not all(line.strip() in known for line in source.split("\n")):
                chunks.append(source)
    return chunks


# --------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def _write_outputs(out: Path, results: list[Graded], course: dict[str, CourseNotebook]) -> list[Row]:
    def order(r: Row):
        cnb = course.get(r.notebook)
        ids = [e.id for e in cnb.exercises] if cnb else []
        return (r.student, r.notebook, ids.index(r.exercise) if r.exercise in ids else len(ids), r.exercise)

    rows = sorted((r for g in results for r in g.rows), key=order)
    for r in rows:
        r.message = " ".join(r.message.split())
    with open(out / "gradebook.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([r.student, r.notebook, r.exercise, _fmt(r.points), r.max_points, r.status, r.message])
    records = [dict(r.record(), points=round(r.points, 2)) for r in rows]
    (out / "gradebook.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    totals: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        t = totals.setdefault((r.student, r.notebook), [0.0, 0])
        t[0] += r.points
        t[1] += r.max_points
    with open(out / "totals.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(("student", "notebook", "points", "max_points"))
        for (student, nb), (pts, mx) in sorted(totals.items()):
            w.writerow([student, nb, _fmt(pts), mx])
    runs = [{"student": g.student, "notebook": g.notebook, "submission": Path(g.path).name,
             **(g.run.record() if g.run else {"status": "not run", "message": "", "cells": [], "events": []})}
            for g in sorted(results, key=lambda g: (g.student, g.notebook))]
    (out / "runs.json").write_text(json.dumps(runs, indent=1) + "\n", encoding="utf-8")
    fb_dir = out / "feedback"
    fb_dir.mkdir(exist_ok=True)
    by_student: dict[str, list[Graded]] = {}
    for g in results:
        by_student.setdefault(g.student, []).append(g)
    for student, graded in sorted(by_student.items()):
        (fb_dir / f"{_safe_name(student)}.md").write_text(_feedback(student, graded, rows), encoding="utf-8")
    return rows


_STATUS_WORD = {"pass": "passed", "partial": "partly passed", "fail": "failed", "error": "error",
                "timeout": "time limit", "missing": "missing", "flagged": "flagged for review"}


def _feedback(student: str, graded: list[Graded], rows: list[Row]) -> str:
    lines = [f"# Feedback for {student}", ""]
    grand, grand_max = 0.0, 0
    for g in sorted(graded, key=lambda g: g.notebook):
        mine = [r for r in rows if r.student == student and r.notebook == g.notebook]
        pts, mx = sum(r.points for r in mine), sum(r.max_points for r in mine)
        grand, grand_max = grand + pts, grand_max + mx
        lines += [f"## {g.notebook}: {_fmt(pts)} / {mx} points", ""]
        if g.run is not None:
            lines += [f"Notebook run: {g.run.message}.", ""]
        lines += [f"- note: {n}" for n in g.notes]
        lines += ["| exercise | points | result |", "|---|---|---|"]
        lines += [f"| {r.exercise} | {_fmt(r.points)} / {r.max_points} | {_STATUS_WORD.get(r.status, r.status)} |"
                  for r in mine]
        lines.append("")
        previous = None
        for r in mine:
            same = r.message == previous and not r.details
            lines += [f"### {r.exercise}: {_STATUS_WORD.get(r.status, r.status)} ({_fmt(r.points)} / {r.max_points})",
                      "", "Same as above." if same else r.message, ""]
            previous = r.message
            if r.details and r.status != "pass":
                lines += ["What failed (messages of the checks; `[label]` names the test case):", ""]
                lines += [f"- {d}" for d in r.details[:30]]
                if len(r.details) > 30:
                    lines.append(f"- ... and {len(r.details) - 30} more")
                lines.append("")
            if r.output.strip() and r.status != "pass":
                lines += ["Output of your code while it was graded (capped):", "", "```",
                          cap_text(r.output.strip(), 2000), "```", ""]
    lines += [f"**Total: {_fmt(grand)} / {grand_max} points**", "",
              "The public self-checks in your notebook are a subset of the tests the grader runs (other seeds and "
              "sizes, more symmetry transforms); each exercise cell is run on its own with the notebook's imports.",
              ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------


def grade(submissions, out, hidden=None, limits: Limits | None = None, jobs: int = 1, run_notebooks: bool = True,
          notebook: str | None = None, notebook_dir=None, network: str = "auto",
          log: Callable[[str], None] | None = None) -> list[Row]:
    """Grade every submission of ``submissions`` into ``out``; return the gradebook rows (sorted)."""
    limits = limits or Limits()
    log = log or (lambda _msg: None)
    submissions, out = Path(submissions), Path(out)
    if not submissions.is_dir():
        raise FileNotFoundError(f"no submissions folder {submissions}")
    hidden = Path(hidden).resolve() if hidden else None
    if hidden is not None and not hidden.is_dir():
        raise FileNotFoundError(f"no hidden-tests folder {hidden}")
    course = load_course(notebook_dir)
    if not course:
        raise RuntimeError("no notebook with exercises found (notebooks/NN_slug.py); pass --notebooks DIR")
    forced = None
    if notebook:
        matches = [s for s in course if s == notebook or s[:2] == notebook[:2] and len(notebook) <= 2]
        if len(matches) != 1:
            raise ValueError(f"--notebook {notebook!r}: choose one of {sorted(course)}")
        forced = matches[0]
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("feedback", "executed"):
        shutil.rmtree(out / sub, ignore_errors=True)
    subs = find_submissions(submissions, exclude=[out])
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        session = _Session(course, hidden, limits, out, run_notebooks, network, Path(tmp))
        session.submissions = submissions
        log(f"{len(subs)} submission(s); network isolation: "
            f"{'network namespace + socket guard' if session.namespace else 'socket guard only'}; "
            f"{'fast' if limits.fast else 'full'} mode; hidden tests: {hidden or 'none (public checks only)'}")
        grader = _Grader(session, forced)

        def one(sub: Submission) -> Graded:
            t0 = time.monotonic()
            g = grader.grade(sub)
            pts = sum(r.points for r in g.rows)
            mx = sum(r.max_points for r in g.rows)
            log(f"  {sub.student} ({sub.path.name}): {g.notebook} {_fmt(pts)}/{mx} "
                f"[{', '.join(r.status for r in g.rows)}] in {time.monotonic() - t0:.0f} s")
            return g

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = list(pool.map(one, subs))
        changed = session.library.changed()
        if changed:
            log(f"warning: the installed course_lib changed while grading ({', '.join(changed[:5])}); the grading "
                "used the copy taken at the start")
    results = _dedupe(results)
    return _write_outputs(out, results, course)


def _dedupe(results: list[Graded]) -> list[Graded]:
    """One graded submission per (student, notebook): the last by path; the others are noted."""
    keep: dict[tuple[str, str], Graded] = {}
    dropped: dict[tuple[str, str], list[str]] = {}
    for g in sorted(results, key=lambda g: g.path):
        key = (g.student, g.notebook)
        if key in keep and g.notebook != "?":
            dropped.setdefault(key, []).append(Path(keep[key].path).name)
        if key not in keep or g.notebook != "?":
            keep[key] = g
    for key, names in dropped.items():
        g = keep[key]
        note = f"several submissions for this notebook: graded {Path(g.path).name}, ignored {', '.join(names)}"
        g.notes.append(note)
        for r in g.rows:
            r.message += f" [note: {note}]"
    return list(keep.values())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [_CHILD_FLAG]:
        return _child_main()
    if argv[:1] == [_SERVER_FLAG]:
        return _server_main()
    p = argparse.ArgumentParser(prog="python -m course_lib.teaching.grade", description=(
        "Grade submitted notebooks: run each in a fresh kernel, grade each exercise with the hidden tests in "
        "its own process, write RESULTS_DIR/gradebook.csv, gradebook.json and feedback/<student>.md."))
    p.add_argument("submissions", type=Path, metavar="SUBMISSIONS_DIR",
                   help="folder of <student>.ipynb files or <student>/ folders")
    p.add_argument("--out", type=Path, required=True, metavar="RESULTS_DIR", help="where the results go")
    p.add_argument("--hidden", type=Path, default=None, metavar="HIDDEN_DIR",
                   help="folder of the hidden test modules nbNN.py (default: none, public checks only)")
    p.add_argument("--cell-timeout", type=float, default=Limits.cell_timeout, metavar="S",
                   help=f"time limit of one notebook cell (default {Limits.cell_timeout:g})")
    p.add_argument("--notebook-timeout", type=float, default=Limits.notebook_timeout, metavar="S",
                   help=f"time limit of a whole notebook run (default {Limits.notebook_timeout:g})")
    p.add_argument("--exercise-timeout", type=float, default=Limits.exercise_timeout, metavar="S",
                   help=f"time limit of the hidden tests of one exercise (default {Limits.exercise_timeout:g})")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--fast", dest="fast", action="store_true", default=True,
                      help="run with COURSE_FAST=1 (default)")
    mode.add_argument("--full", dest="fast", action="store_false", help="run with COURSE_FAST=0")
    p.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel (default 1)")
    p.add_argument("--no-run", dest="run", action="store_false",
                   help="do not execute the notebooks (exercises and scans only; no per-cell report)")
    p.add_argument("--notebook", default=None, metavar="NN_slug",
                   help="grade every submission as this course notebook (default: recognise it)")
    p.add_argument("--notebooks", type=Path, default=None, metavar="DIR",
                   help="folder of the instructor sources NN_slug.py (default: notebooks/ of the repository)")
    p.add_argument("--network", choices=("auto", "namespace", "guard"), default="auto",
                   help="network isolation: a network namespace when available (auto), required, or the Python "
                        "socket guard only")
    args = p.parse_args(argv)
    limits = Limits(args.cell_timeout, args.notebook_timeout, args.exercise_timeout, fast=args.fast)
    try:
        rows = grade(args.submissions, args.out, args.hidden, limits, jobs=args.jobs, run_notebooks=args.run,
                     notebook=args.notebook, notebook_dir=args.notebooks, network=args.network,
                     log=lambda m: print(m, flush=True))
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = Counter(r.status for r in rows)
    print(f"{len(rows)} row(s): " + ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s]))
    print(f"wrote {args.out / 'gradebook.csv'}, {args.out / 'gradebook.json'}, {args.out / 'feedback'}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
