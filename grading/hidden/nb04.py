"""Hidden tests of notebook 04 (the EGNN N-body benchmark).

Same contract as ``nb00.py``: ``HIDDEN[exercise_id](obj, fb)`` runs the public checker of
:mod:`course_lib.teaching.exercises.nb04` first (exactly the notebook's self-check, on its stored expected
outputs), then the same checker with other seeds, sizes and constants (expected outputs from ``reference/nb04.py``).
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


HIDDEN = {"04.coulomb_step": hidden_coulomb_step}
