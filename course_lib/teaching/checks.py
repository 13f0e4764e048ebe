"""Exercise self-checks, shared by the notebooks (public checks) and the autograder (hidden tests).

Convention (see ``notebooks/README.md``): every exercise has an id such as ``"00.symmetrize"``; its
solution cell in the source notebook carries the cell metadata ``exercise="00.symmetrize"`` and
``points=2``; the cell right after it calls ``check("00.symmetrize", symmetrize)``, which prints
specific feedback. A checker is a function ``checker(obj, fb)`` that exercises the student's object
and records each test with ``fb.expect(condition, message_if_wrong)``. The same checker functions are
called by the hidden tests with other seeds and sizes, so the notebook says what the grader will say.

This module is the framework and the registry only; it imports nothing of the course. The checkers
live in :mod:`course_lib.teaching.exercises` (one module per notebook), which also holds the notebooks'
entry point ``check`` (``from course_lib.teaching.exercises import check``).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "CheckResult", "CheckerError", "Feedback", "EXERCISES", "Exercise", "StopChecking", "exercise", "run_checker",
    "describe_exception", "FATAL_WEIGHT", "VALUE_SHARE",
]

#: default weight of a fatal check (a prerequisite such as the output's type or shape): worth little
FATAL_WEIGHT = 0.25
#: share of the score carried by the value checks (``expect(..., values=True)``) when a checker has any:
#: a function with the right shapes and symmetries but wrong values gets at most ``1 - VALUE_SHARE``
VALUE_SHARE = 0.6


class StopChecking(Exception):
    """Raised inside a checker to stop after a fatal failure (later tests would be meaningless)."""


class CheckerError(Exception):
    """The checker itself cannot run (e.g. its stored expected outputs are missing): not the student's fault."""


@dataclass
class Feedback:
    """Collects the outcome of each test of a checker."""

    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: one ``(weight, passed, values)`` per recorded test, in order (see :meth:`score`)
    weights: list[tuple[float, bool, bool]] = field(default_factory=list)

    def expect(self, condition: bool, message: str, fatal: bool = False, ok: str | None = None,
               weight: float | None = None, values: bool = False) -> bool:
        """Record one test: ``message`` says what is wrong (and how to fix it) when ``condition`` fails.

        With ``fatal=True`` a failure stops the checker (later tests depend on this one). ``weight``: the
        test's weight in :meth:`score` (default :data:`FATAL_WEIGHT` for a fatal test, 1 otherwise);
        ``values=True`` marks a comparison of the output's values with the expected ones.
        """
        ok_ = bool(condition)
        w = float(weight) if weight is not None else (FATAL_WEIGHT if fatal else 1.0)
        self.weights.append((w, ok_, bool(values)))
        if ok_:
            self.passed.append(ok or message)
            return True
        self.failed.append(message)
        if fatal:
            raise StopChecking
        return False

    def score(self) -> float:
        """The weighted fraction of the recorded tests passed, in [0, 1].

        When value tests were recorded they carry :data:`VALUE_SHARE` of the score and the other tests
        (shapes, symmetries, hygiene) the rest, so right shapes with wrong values never earn half.
        """
        def frac(items):
            total = sum(w for w, _, _ in items)
            return sum(w for w, ok, _ in items if ok) / total if total > 0 else None

        vals = frac([t for t in self.weights if t[2]])
        rest = frac([t for t in self.weights if not t[2]])
        if vals is None:
            return rest or 0.0
        if rest is None:
            return vals
        return VALUE_SHARE * vals + (1.0 - VALUE_SHARE) * rest


@dataclass
class CheckResult:
    exercise: str
    n_passed: int
    n_total: int
    messages: list[str]
    error: str | None = None
    score: float | None = None  # the weighted score of :meth:`Feedback.score` (None: n_passed / n_total)
    printed: bool = field(default=False, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return self.error is None and self.n_total > 0 and self.n_passed == self.n_total

    @property
    def fraction(self) -> float:
        if self.error or self.n_total == 0:
            return 0.0
        return self.score if self.score is not None else self.n_passed / self.n_total

    def _ipython_display_(self) -> None:
        """Shown as the last expression of a notebook cell: nothing more when :func:`check` printed it already."""
        if not self.printed:
            print(self)

    def __str__(self) -> str:
        if self.error:
            return f"[FAIL] {self.exercise}: {self.error}"
        head = "[PASS]" if self.passed else "[FAIL]"
        lines = [f"{head} {self.exercise}: {self.n_passed}/{self.n_total} checks passed"]
        lines += [f"  - {m}" for m in self.messages]
        return "\n".join(lines)


@dataclass
class Exercise:
    id: str
    title: str
    checker: Callable
    #: the wall-clock seconds the grader gives this exercise's hidden tests at least (None: its
    #: ``--exercise-timeout``); for exercises whose hidden tests train the student's model
    min_grading_seconds: float | None = None


EXERCISES: dict[str, Exercise] = {}


def exercise(exercise_id: str, title: str, min_grading_seconds: float | None = None):
    """Decorator registering a checker ``fn(obj, fb)`` for an exercise id (``min_grading_seconds``: see
    :attr:`Exercise.min_grading_seconds`)."""

    def deco(fn):
        EXERCISES[exercise_id] = Exercise(exercise_id, title, fn, min_grading_seconds)
        return fn

    return deco


def describe_exception(exc: BaseException) -> str:
    if hasattr(exc, "remote_type"):  # raised in the student's process (the grader): its type and its line there
        return f"{exc.remote_type}: {exc}{getattr(exc, 'student_where', '')}"
    tb = traceback.extract_tb(exc.__traceback__)
    # the last frame that is not inside course_lib is the student's line
    user = [fr for fr in tb if "course_lib" not in fr.filename.replace("\\", "/")]
    where = f" (line {user[-1].lineno}: `{(user[-1].line or '').strip()}`)" if user else ""
    return f"{type(exc).__name__}: {exc}{where}"


def run_checker(checker: Callable, exercise_id: str, obj, **kwargs) -> CheckResult:
    """Run a checker on ``obj`` and turn every outcome (including exceptions) into a CheckResult."""
    fb = Feedback()
    try:
        checker(obj, fb, **kwargs)
    except StopChecking:
        pass
    except NotImplementedError:
        return CheckResult(exercise_id, 0, 1, [], error="not implemented yet: replace the "
                           "`raise NotImplementedError(...)` line with your code and run the cell again")
    except CheckerError as exc:
        return CheckResult(exercise_id, len(fb.passed), len(fb.passed) + 1, fb.failed,
                           error=f"the self-check could not run (not a mistake of yours): {exc}")
    except Exception as exc:  # noqa: BLE001 - any student error becomes feedback
        return CheckResult(exercise_id, len(fb.passed), len(fb.passed) + 1, fb.failed,
                           error=f"your code raised {describe_exception(exc)}")
    total = len(fb.passed) + len(fb.failed)
    return CheckResult(exercise_id, len(fb.passed), total, fb.failed, score=fb.score())
