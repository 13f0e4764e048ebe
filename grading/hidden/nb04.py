"""Hidden tests of notebook 04 (the EGNN N-body benchmark).

Same contract as ``nb00.py``: ``HIDDEN[exercise_id](obj, fb)`` runs the public checker of
:mod:`course_lib.teaching.exercises.nb04` first (exactly the notebook's self-check, on its stored expected
outputs), then the same checker with other seeds, sizes and constants (expected outputs from ``reference/nb04.py``).
``04.nbody_design`` is checked by its properties and by the fixed training run on hidden data, so no reference
output is needed there.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from course_lib.teaching.exercises import nb04 as public
from course_lib.teaching.grading import run_cases

_spec = importlib.util.spec_from_file_location("_course_reference_nb04",
                                               Path(__file__).with_name("reference") / "nb04.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)
REF = {"expected": reference.compute}


def hidden_coulomb_step(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_coulomb_step, {}),
        ("hidden: seed=7, 4 systems of 3 particles", public.check_coulomb_step,
         {"seed": 7, "systems": 4, "per_system": 3, **REF}),
        ("hidden: seed=8, 1 system of 9 particles, t = 0.5, c = 0.2", public.check_coulomb_step,
         {"seed": 8, "systems": 1, "per_system": 9, "t": 0.5, "c": 0.2, **REF}),
    ])


def hidden_nbody_design(cls, fb, steps: int = public.NBODY_STEPS) -> None:
    """The design exercise: its symmetries on other random systems and weights, and the accuracy bar on the test
    split (held out of the notebook's check) after the fixed training run on other random training subsets.
    ``steps``: fewer only in the course's own tests (the verdicts of the real run are calibrated in INSTRUCTORS.md)."""
    run_cases(fb, cls, [
        ("public check", public.check_nbody_design, {"steps": steps}),
        ("hidden: seed=1, 800 random training systems, 500 of the test split", public.check_nbody_design,
         {"seed": 1, "n_train": 800, "n_test": 500, "test_split": "test", "steps": steps}),
        ("hidden: seed=2, 800 random training systems, 500 of the test split", public.check_nbody_design,
         {"seed": 2, "n_train": 800, "n_test": 500, "test_split": "test", "steps": steps}),
    ])


HIDDEN = {"04.coulomb_step": hidden_coulomb_step, "04.nbody_design": hidden_nbody_design}
