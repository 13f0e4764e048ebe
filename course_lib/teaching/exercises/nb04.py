"""Checkers of notebook 04: the EGNN N-body benchmark.

Exercise:

- ``04.coulomb_step``: one "kick and drift" prediction from Coulomb's law, written in the form of the Radial Field
  update (a sum over the other particles of relative vectors times invariant scalars):
  ``x_i' = x_i + t v_i + c sum_{j != i, same system} q_i q_j (x_i - x_j) / |x_i - x_j|^3``.

No reference solution is here: the expected outputs (of the correct solution and of the known mistakes) come from
the checker's ``expected`` provider (:mod:`course_lib.teaching.exercises.stored`). When the values are wrong, the
checker also measures the answer's symmetries and names the one that is broken, with its error.
"""

from __future__ import annotations

import torch

from course_lib.teaching.checks import exercise
from course_lib.teaching.exercises.common import (
    call_student,
    close,
    expect_tensor,
    random_rotation_and_reflection,
    rng,
    shape_of,
)
from course_lib.teaching.exercises.stored import provider

__all__ = ["check_coulomb_step", "MISTAKES"]

#: the known mistakes the checker diagnoses by comparison with their outputs (made by the reference's compute)
MISTAKES = {
    "attractive": "like charges attract in your answer: the pair term of particle i must point along "
                  "x_i - x_j (away from j) when q_i q_j > 0 (Coulomb: like charges repel)",
    "inverse square": "wrong power of the distance: the force is q_i q_j (x_i - x_j) / |x_i - x_j|^3, i.e. the unit "
                      "vector divided by r^2 (you divided the vector x_i - x_j by |x_i - x_j|^2 only)",
    "mean": "you average over the other particles (the Radial Field's 1 / (M - 1)): Coulomb forces add up, take "
            "the sum",
    "across systems": "particles of different systems interact in your answer: sum only over the particles j of the "
                      "same system (batch[j] == batch[i])",
}


def _systems(seed: int, systems: int, per_system: int):
    g = rng(seed)
    n = systems * per_system
    pos = torch.randn(n, 3, generator=g, dtype=torch.float64)
    vel = 0.5 * torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    charge = torch.randint(0, 2, (n,), generator=g).to(torch.float64) * 2 - 1
    batch = torch.arange(systems).repeat_interleave(per_system)
    return pos, vel, charge, batch


def _call(fb, fn, pos, vel, charge, batch, t, c, what):
    out = call_student(fb, fn, (pos.clone(), vel.clone(), charge.clone(), batch.clone(), t, c),
                       f"coulomb_step on {what}")
    expect_tensor(fb, out, "coulomb_step")
    fb.expect(out.shape == pos.shape, f"return one position per particle, shape {tuple(pos.shape)}; got "
              f"{shape_of(out)}", fatal=True)
    return out.detach().to(torch.float64)


def _symmetry_errors(fn, fb, inputs, out, seed):
    """The error of the answer under each symmetry the prediction must have (positions rotate, reflect, translate
    and are permuted with the particles; velocities rotate and reflect, and do not translate)."""
    pos, vel, charge, batch, t, c = inputs
    R, M = random_rotation_and_reflection(seed + 1, seed + 1)
    shift = torch.randn(3, generator=rng(seed + 2), dtype=torch.float64) * 2.0
    perm = torch.randperm(len(pos), generator=rng(seed + 3))
    scale = max(1.0, float(out.abs().max()))
    errors = {}
    for name, Q in (("rotation", R), ("reflection", M)):
        moved = _call(fb, fn, pos @ Q.T, vel @ Q.T, charge, batch, t, c, f"a {name} of the systems")
        errors[name] = float((moved - out @ Q.T).abs().max()) / scale
    moved = _call(fb, fn, pos + shift, vel, charge, batch, t, c, "the systems translated")
    errors["translation"] = float((moved - (out + shift)).abs().max()) / scale
    moved = _call(fb, fn, pos[perm], vel[perm], charge[perm], batch[perm], t, c,
                  "the particles listed in another order")
    errors["permutation"] = float((moved - out[perm]).abs().max()) / scale
    return errors


@exercise("04.coulomb_step", "one Coulomb kick and drift, in the form of the Radial Field")
def check_coulomb_step(fn, fb, seed: int = 0, systems: int = 3, per_system: int = 5, t: float = 1.0,
                       c: float = 0.05, expected=None):
    want = provider(expected)
    pos, vel, charge, batch = _systems(seed, systems, per_system)
    inputs = (pos, vel, charge, batch, float(t), float(c))
    ref = want("04.coulomb_step", "values", *inputs)
    mistakes = {name: want("04.coulomb_step", name, *inputs) for name in MISTAKES}
    out = _call(fb, fn, *inputs, f"{systems} systems of {per_system} particles")
    ok = close(out, ref, atol=1e-9, rtol=1e-9)
    if not ok:
        free = pos + t * vel
        if close(out, free, atol=1e-9, rtol=1e-9):
            diagnosis = "you return free flight x + t v: add the Coulomb term c sum_j q_i q_j x_ij / |x_ij|^3"
        else:
            diagnosis = next((text for name, text in MISTAKES.items()
                              if close(out, mistakes[name], atol=1e-9, rtol=1e-9)), None)
        if diagnosis is None:
            errors = _symmetry_errors(fn, fb, inputs, out, seed)
            broken = [f"{name} (error {err:.1e})" for name, err in errors.items() if err > 1e-9]
            diagnosis = ("the values differ from x_i + t v_i + c sum_{j != i, same system} q_i q_j (x_i - x_j) / "
                         "|x_i - x_j|^3" + (f"; your answer is not equivariant under {', '.join(broken)}: build the "
                                            "pair term from x_i - x_j times a function of |x_i - x_j| and the charges "
                                            "only, never from the coordinates themselves" if broken else ""))
        fb.expect(False, diagnosis, values=True)
        return
    fb.expect(True, "", ok="values OK", values=True)
    errors = _symmetry_errors(fn, fb, inputs, out, seed)  # the right values on one input; on others too?
    for name, err in errors.items():
        fb.expect(err <= 1e-9, f"not equivariant under {name} (error {err:.1e}): the answer must not depend on the "
                  "orientation, origin or order of the particles", ok=f"equivariant under {name}")
