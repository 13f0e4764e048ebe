"""Hidden tests of notebook 03 (conditioning on a fixed crystal).

Same contract as ``nb00.py``: ``HIDDEN[exercise_id](obj, fb)`` runs the public checker of
:mod:`course_lib.teaching.exercises.nb03` first (exactly the notebook's self-check), then the same checker with
other seeds, numbers of particles and lattice spacings. ``03.crystal_feature`` is checked by its properties, so no
reference output is involved.
"""

from __future__ import annotations

from course_lib.teaching.exercises import nb03 as public
from course_lib.teaching.grading import run_cases


def hidden_crystal_feature(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_crystal_feature, {}),
        ("hidden: seed=5, 20 particles, a = 1.7", public.check_crystal_feature, {"seed": 5, "n": 20, "a": 1.7}),
        ("hidden: seed=6, 7 particles, a = 3.0", public.check_crystal_feature, {"seed": 6, "n": 7, "a": 3.0}),
    ])


HIDDEN = {"03.crystal_feature": hidden_crystal_feature}
