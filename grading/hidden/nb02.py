"""Hidden tests of notebook 02 (EGNN trajectories in a periodic box).

Same contract as ``nb00.py``: ``HIDDEN[exercise_id](obj, fb)`` runs the public checker of
:mod:`course_lib.teaching.exercises.nb02` first (exactly the notebook's self-check), then the same checker on
other systems. ``02.momentum_update`` is a design exercise checked by its properties, so no reference output is
involved. (The other exercises of notebook 02 are graded by their public check.)
"""

from __future__ import annotations

from course_lib.teaching.exercises import nb02 as public
from course_lib.teaching.grading import run_cases


def hidden_momentum_update(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_momentum_update, {}),
        ("hidden: seed=3, 20 particles, L = 7", public.check_momentum_update, {"seed": 3, "n": 20, "L": 7.0}),
        ("hidden: seed=4, 9 particles, L = 5.5", public.check_momentum_update, {"seed": 4, "n": 9, "L": 5.5}),
    ])


HIDDEN = {"02.momentum_update": hidden_momentum_update}
