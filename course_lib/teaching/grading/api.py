"""The hidden-test API: what the hidden test modules (``grading/hidden/nbNN.py``) call.

A hidden test is ``hidden(obj, fb)``; it calls the public checkers of
:mod:`course_lib.teaching.exercises` with other seeds and sizes through :func:`run_cases`. It runs in
the exercise process (:mod:`course_lib.teaching.grading.child`), imported from the pristine copy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable

from course_lib.teaching.grading.guard import GUARD_FILENAME, STUDENT_FILES
from course_lib.teaching.grading.library import LIB_DIR

__all__ = ["run_cases", "student_in_traceback", "GRADER_PSEUDO_FILES"]

#: Code-object file names in ``<...>`` that are not the student's: frozen standard-library modules, the
#: guard, the instructor's imports; every other ``<...>`` frame is code compiled at run time by the student.
GRADER_PSEUDO_FILES = ("<frozen ", GUARD_FILENAME, "<instructor imports>")


def run_cases(fb, obj, cases: Iterable[tuple[str, Callable, dict]]) -> None:
    """Run several checker calls on ``obj``, each with its own Feedback, and merge them into ``fb``.

    ``cases``: ``(label, checker, kwargs)`` triples, e.g.
    ``("public check", nb00.check_symmetrize, {})``, ``("seed=1, N=20", nb00.check_symmetrize,
    {"seed": 1, "n": 20})``. Every message is prefixed with ``[label]``. A case stops at its own
    fatal failures and a student exception ends only that case (it becomes a failure message), so
    one bad case does not hide the others. ``NotImplementedError`` propagates (the exercise is not
    done). The per-case scores (``Feedback.score()``: weighted towards the value checks; 0 for a case
    that stopped or raised) are kept in
    ``fb.cases``; the grader's fraction is their mean. A case that crashes in the test's own code (no
    frame of the student's code in the traceback) scores 0 and is reported in ``fb.test_errors``; the
    gradebook row then asks the instructor to look at it. (In the grader the student's code runs in
    another process, so a checker crashing on a strange answer has no student frame: leaving such a
    case out of the score would let a student skip the hard cases by crashing them.)
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
            if not student_in_traceback(exc, test_files):
                test_errors.append(f"[{label}] {type(exc).__name__}: {exc}")
                scores.append((label, 0.0))
                continue
            sub.failed.append(f"your code raised {describe_exception(exc)}")
            stopped = True
        fb.passed.extend(f"[{label}] {m}" for m in sub.passed)
        fb.failed.extend(f"[{label}] {m}" for m in sub.failed)
        total = len(sub.passed) + len(sub.failed)
        scores.append((label, 0.0 if stopped or total == 0 else sub.score()))


def student_in_traceback(exc: BaseException, test_files: Iterable[str] = ()) -> bool:
    """True when a frame of the traceback is neither the test's nor a library's (stdlib, site-packages,
    course_lib): then the student's code is involved."""
    if hasattr(exc, "remote_type") or type(exc).__name__ == "ProtocolError":
        return True  # raised in the student's process, or what it sent could not be read (bridge)
    lib_roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    lib_roots.add(str(LIB_DIR))
    tests = {os.path.realpath(f) for f in test_files if f}
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
        if name.startswith(STUDENT_FILES):
            return True
        if name.startswith(GRADER_PSEUDO_FILES) or os.path.realpath(name) in tests:
            continue
        if name.startswith("<"):  # code the student compiled themselves ("<string>", exec, eval)
            return True
        real = os.path.realpath(name)
        if not any(real == r or real.startswith(r + os.sep) for r in lib_roots):
            return True
    return False
