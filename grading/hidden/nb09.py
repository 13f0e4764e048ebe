"""Hidden tests of notebook 09 (what invariance cannot see, what equivariance costs).

Same contract as ``nb00.py``: ``HIDDEN[exercise_id](obj, fb)`` runs the public checker of
:mod:`course_lib.teaching.exercises.nb09` first (exactly the notebook's self-check, on its stored expected
outputs), then the same checker with other seeds and sizes (expected outputs from ``reference/nb09.py``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from course_lib.teaching.exercises import nb09 as public
from course_lib.teaching.grading import run_cases

_spec = importlib.util.spec_from_file_location("_course_reference_nb09",
                                               Path(__file__).with_name("reference") / "nb09.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)
REF = {"expected": reference.compute}


def hidden_bond_vector_sum(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_bond_vector_sum, {}),
        ("hidden: seed=1, 5 atoms", public.check_bond_vector_sum, {"seed": 1, "n": 5, **REF}),
        ("hidden: seed=2, 20 atoms", public.check_bond_vector_sum, {"seed": 2, "n": 20, **REF}),
    ])


def hidden_angle_feature(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_angle_feature, {}),
        ("hidden: seed=3, 12 atoms", public.check_angle_feature, {"seed": 3, "n": 12}),
        ("hidden: seed=4, 5 atoms", public.check_angle_feature, {"seed": 4, "n": 5}),
    ])


HIDDEN = {
    "09.bond_vector_sum": hidden_bond_vector_sum,
    "09.angle_feature": hidden_angle_feature,
}
