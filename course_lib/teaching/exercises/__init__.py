"""Checkers of the exercises, one module per notebook (``nb00.py``, ``nb01.py``, ...), and :func:`check`.

Each module registers its checkers with :func:`course_lib.teaching.checks.exercise`; helpers shared by
the modules live in :mod:`course_lib.teaching.exercises.common`. The notebooks call
``from course_lib.teaching.exercises import check``: the checker modules are imported (and so
registered) on the first call of :func:`check` or :func:`load_checkers`, not when this package is
imported, so a hidden test that imports one module does not load the others.

Layering: :mod:`course_lib.teaching.checks` (the framework and the registry) imports nothing of the
course; the checker modules import it; this package imports the checker modules by name only.
"""

from __future__ import annotations

import importlib
import pkgutil

from course_lib.teaching import checks

__all__ = ["check", "grading_timeout", "load_checkers"]

#: modules of this package that hold no checkers
_NOT_CHECKERS = {"common", "stored"}


def load_checkers() -> dict[str, checks.Exercise]:
    """Import the per-notebook checker modules so that they register themselves; returns the registry."""
    for mod in pkgutil.iter_modules(__path__):
        if mod.name not in _NOT_CHECKERS:
            importlib.import_module(f"{__name__}.{mod.name}")
    return checks.EXERCISES


def grading_timeout(exercise_id: str, default: float) -> float:
    """The grader's time limit for the hidden tests of ``exercise_id``: ``default`` (its ``--exercise-timeout``),
    or the exercise's own minimum when it declares a larger one (e.g. a design exercise that trains the student's
    model in its hidden tests)."""
    load_checkers()
    ex = checks.EXERCISES.get(exercise_id)
    minimum = ex.min_grading_seconds if ex is not None else None
    return max(default, minimum) if minimum is not None else default


def check(exercise_id: str, obj, verbose: bool = True, **kwargs) -> checks.CheckResult:
    """Run the public self-check of an exercise on the student's function/class and print feedback.

    Returns the :class:`~course_lib.teaching.checks.CheckResult`; as the last expression of a notebook cell
    it is not shown a second time (it was printed already).
    """
    load_checkers()
    if exercise_id not in checks.EXERCISES:
        raise KeyError(f"unknown exercise {exercise_id!r}; known: {sorted(checks.EXERCISES)}")
    res = checks.run_checker(checks.EXERCISES[exercise_id].checker, exercise_id, obj, **kwargs)
    if verbose:
        print(res)
        res.printed = True
    return res
