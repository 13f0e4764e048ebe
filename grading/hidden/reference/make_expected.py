"""Store the expected outputs of the public self-checks as package data (instructor material).

    python grading/hidden/reference/make_expected.py            # every notebook with a reference module
    python grading/hidden/reference/make_expected.py nb01 nb00  # some

For each ``nbNN.py`` next to this script (the reference solutions and ``compute``), every public checker
of :mod:`course_lib.teaching.exercises.nbNN` is run once on the reference solution with its default
arguments and a :class:`~course_lib.teaching.exercises.stored.Recorder` as ``expected``: the answers it
asked for (the correct outputs and the outputs of the known mistakes, on the public inputs only, never on
a hidden case) are written to ``course_lib/teaching/exercises/expected/nbNN.npz``. Rerun it after
changing a checker's inputs or a reference, then run ``pytest tests/test_exercises_*.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_reference(notebook: str):
    """The reference module ``nbNN`` of this folder (loaded by path: it is not an installed package)."""
    spec = importlib.util.spec_from_file_location(f"_course_reference_{notebook}", HERE / f"{notebook}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record(notebook: str) -> dict:
    """``{key: array}``: the answers the public checkers of ``notebook`` ask for, computed by its reference."""
    from course_lib.teaching import checks
    from course_lib.teaching.exercises import load_checkers
    from course_lib.teaching.exercises.stored import Recorder

    reference = load_reference(notebook)
    registry = load_checkers()
    recorder = Recorder(reference.compute)
    for exercise_id, solution in reference.SOLUTIONS.items():
        res = checks.run_checker(registry[exercise_id].checker, exercise_id, solution, expected=recorder)
        if not res.passed:
            raise SystemExit(f"the reference of {exercise_id} does not pass its own checker:\n{res}")
    return recorder.table


def main(argv: list[str]) -> int:
    import numpy as np

    from course_lib.teaching.exercises.stored import EXPECTED_DIR

    notebooks = argv or sorted(p.stem for p in HERE.glob("nb[0-9][0-9].py"))
    EXPECTED_DIR.mkdir(exist_ok=True)
    for nb in notebooks:
        table = record(nb)
        np.savez_compressed(EXPECTED_DIR / f"{nb}.npz", **dict(sorted(table.items())))
        print(f"{nb}: {len(table)} arrays")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
