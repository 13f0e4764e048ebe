"""Checkers of notebook 08: molecular dynamics with the learned potentials.

Exercises:

- ``08.velocity_verlet_step``: one step of the velocity-Verlet integrator (what ASE's ``VelocityVerlet``
  does), with one force call per step.
- ``08.distance_histogram``: ``h(r)``, the mean number of atom pairs per frame and per unit length at
  distance r, from a trajectory.

No reference solution is here: the expected outputs (of the correct solution and of the known mistakes)
come from the checker's ``expected`` provider (:mod:`course_lib.teaching.exercises.stored`).
"""

from __future__ import annotations

import numpy as np

from course_lib.teaching.checks import exercise
from course_lib.teaching.exercises.common import close_arrays, shape_of, type_name
from course_lib.teaching.exercises.stored import provider

__all__ = ["check_velocity_verlet_step", "check_distance_histogram"]

_POSITION_MISTAKES = {
    "pos: no acceleration": "the position update misses the acceleration term + dt^2/2 * F/m",
    "pos: no 1/2": "the acceleration term of the position update is dt^2/2 * F/m: you forgot the factor 1/2",
    "pos: no mass": "divide the forces by the masses (a = F/m, with masses[:, None] so that each atom's row is "
                    "divided by its own mass)",
    "pos: times mass": "the acceleration is F / m, not F * m",
    "pos: new velocity": "the positions must move with the *old* velocity plus the acceleration term "
                         "(x + dt v + dt^2/2 a), not with the updated velocity",
}
_VELOCITY_MISTAKES = {
    "vel: old forces only": "the velocity update uses only the old forces (an Euler step): average the old and "
                            "the new acceleration, v + dt/2 (F_old + F_new)/m",
    "vel: new forces only": "the velocity update uses only the new forces: average the old and the new "
                            "acceleration, v + dt/2 (F_old + F_new)/m",
    "vel: no 1/2": "the velocity update needs dt/2 (F_old + F_new)/m: you forgot the 1/2",
    "vel: no mass": "divide the forces by the masses in the velocity update too",
}
_HISTOGRAM_MISTAKES = {
    "pairs twice": "every pair is counted twice (i, j) and (j, i): count each pair once, i < j "
                   "(np.triu_indices(N, k=1))",
    "all entries": "you counted all N x N entries of the distance matrix: that counts each pair twice and adds the "
                   "N zero self-distances i = j; use the pairs i < j only",
    "self pairs": "the N zero distances of each atom to itself (i = j) are counted: use the pairs i < j only",
    "no frames": "divide by the number of frames: h(r) is a mean per frame",
    "no width": "divide each bin by its width: h(r) is a density per unit length (the bins here have different "
                "widths)",
    "first width": "divide each bin by its own width (the bins here have different widths), not by the width of "
                   "the first bin",
    "mean width": "divide each bin by its own width (the bins here have different widths), not by the mean bin "
                  "width",
    "normalised": "h(r) is not normalised to 1: it counts pairs, so sum(h * width) is the mean number of pairs per "
                  "frame in the range (do not use density=True)",
    "probability": "h(r) is not a probability per bin: divide the pair counts by the number of frames and by the "
                   "bin widths",
    "per distance": "h(r) is not a probability per bin: divide the pair counts by the number of frames and by the "
                    "bin widths (not by the number of distances)",
}


# ------------------------------------------------------------------------- helpers


class _CountingForces:
    """A smooth anharmonic force field (springs between neighbours in a chain plus a quartic well),
    counting its calls."""

    #: in the grader this object stays with the checker and the student's code calls it from its process
    #: (the count must be the checker's own)
    __grader_callback__ = True

    def __init__(self, n: int, d: int, seed: int):
        g = np.random.default_rng(seed)
        self.k = 1.0 + g.random(n - 1)
        self.r0 = 1.0 + 0.2 * g.random(n - 1)
        self.calls = 0

    def energy(self, x):
        b = np.linalg.norm(x[1:] - x[:-1], axis=-1)
        return float(0.5 * np.sum(self.k * (b - self.r0) ** 2) + 0.05 * np.sum(x ** 4))

    def __call__(self, x):
        self.calls += 1
        x = np.asarray(x, dtype=np.float64)
        dx = x[1:] - x[:-1]
        b = np.linalg.norm(dx, axis=-1, keepdims=True)
        f_bond = -(self.k[:, None] * (b - self.r0[:, None])) * dx / b  # force on atom i+1 from bond (i, i+1)
        f = -0.2 * x ** 3
        f[1:] += f_bond
        f[:-1] -= f_bond
        return f


def _state(seed: int, n: int, d: int):
    g = np.random.default_rng(seed)
    steps = 1.0 + 0.1 * g.standard_normal((n - 1, d))
    pos = np.cumsum(np.concatenate([np.zeros((1, d)), steps]), axis=0) / np.sqrt(d)
    vel = 0.5 * g.standard_normal((n, d))
    masses = 1.0 + 3.0 * g.random(n)
    return pos, vel, masses


# ------------------------------------------------------------------------- checkers


def _first(out, candidates: dict, texts: dict, default: str) -> str:
    return next((texts[k] for k, v in candidates.items() if close_arrays(out, v, atol=1e-10, rtol=1e-9)), default)


@exercise("08.velocity_verlet_step", "one velocity-Verlet step")
def check_velocity_verlet_step(fn, fb, seed: int = 0, n: int = 5, d: int = 3, dt: float = 0.05, expected=None):
    want = provider(expected)
    pos, vel, masses = _state(seed, n, d)
    field = _CountingForces(n, d, seed)
    forces = field(pos)
    inputs = (pos, vel, forces, masses, dt)
    ref_pos, ref_vel, ref_forces = (np.asarray(a) for a in want("08.velocity_verlet_step", "values", *inputs,
                                                                  _CountingForces(n, d, seed)))
    mistakes = {name: np.asarray(want("08.velocity_verlet_step", name, *inputs, _CountingForces(n, d, seed)))
                for name in (*_POSITION_MISTAKES, *_VELOCITY_MISTAKES)}
    args = [a.copy() for a in (pos, vel, forces, masses)]
    field.calls = 0
    out = fn(*args, dt, field)
    fb.expect(isinstance(out, tuple) and len(out) == 3, f"return a tuple (new_pos, new_vel, new_forces), got "
              f"{type_name(out)}{'' if not isinstance(out, tuple) else f' of length {len(out)}'}", fatal=True)
    new_pos, new_vel, new_forces = out
    fb.expect(all(np.shape(o) == (n, d) for o in out),
              f"each output must have the shape of pos {(n, d)}; got {[shape_of(o, arrays=True) for o in out]}",
              fatal=True)
    fb.expect(all(np.array_equal(a, b) for a, b in zip(args, (pos, vel, forces, masses))),
              "your function changed its inputs in place (e.g. pos += ...): return new arrays instead")
    calls = field.calls
    fb.expect(calls == 1, f"force_fn was called {calls} times; velocity Verlet needs exactly one new force "
              "evaluation per step (the forces at the start are given: reuse them)")
    pos_ok = close_arrays(new_pos, ref_pos, atol=1e-10, rtol=1e-9)
    fb.expect(pos_ok, _first(new_pos, {k: mistakes[k] for k in _POSITION_MISTAKES}, _POSITION_MISTAKES,
                             "new_pos differs from x + dt v + dt^2/2 F/m"), ok="positions OK", values=True)
    fb.expect(close_arrays(new_forces, _CountingForces(n, d, seed)(new_pos), atol=1e-10, rtol=1e-9),
              "new_forces must be force_fn(new_pos), the forces at the *new* positions (they are the "
              "starting forces of the next step)")
    vel_ok = close_arrays(new_vel, ref_vel, atol=1e-10, rtol=1e-9)
    if vel_ok or pos_ok:  # with wrong positions the new forces differ: no diagnosis of the velocities
        fb.expect(vel_ok, _first(new_vel, {k: mistakes[k] for k in _VELOCITY_MISTAKES}, _VELOCITY_MISTAKES,
                                 "new_vel differs from v + dt/2 (F_old + F_new) / m"), ok="velocities OK", values=True)
    # physics: time reversibility and energy conservation over many steps (only if one step is right)
    if pos_ok and vel_ok:
        back = fn(ref_pos, -ref_vel, ref_forces, masses, dt, _CountingForces(n, d, seed))
        err = float(np.abs(back[0] - pos).max())
        fb.expect(err < 1e-10, f"not time-reversible: stepping back with -v does not return to the start "
                  f"(error {err:.1e})")
        x, v, f = pos.copy(), vel.copy(), forces.copy()
        e0 = field.energy(x) + 0.5 * np.sum(masses[:, None] * v ** 2)
        emax = 0.0
        for _ in range(200):
            x, v, f = fn(x, v, f, masses, dt, field)
            emax = max(emax, abs(field.energy(x) + 0.5 * np.sum(masses[:, None] * v ** 2) - e0))
        fb.expect(emax < 5e-3 * max(1.0, abs(e0)), f"the total energy drifts by {emax:.2e} in 200 steps: "
                  "a correct velocity-Verlet step conserves it to O(dt^2)")


@exercise("08.distance_histogram", "the distance histogram h(r) of a trajectory")
def check_distance_histogram(fn, fb, seed: int = 0, frames: int = 7, n: int = 6, d: int = 3, expected=None):
    want = provider(expected)
    g = np.random.default_rng(seed)
    positions = 2.0 * g.standard_normal((frames, n, d))
    edges = np.concatenate([[0.0], np.cumsum(0.3 + 0.4 * g.random(12))])  # uneven bins starting at r = 0
    ref = np.asarray(want("08.distance_histogram", "values", positions, edges))
    one_ref = np.asarray(want("08.distance_histogram", "values", positions[:1], edges))
    mistakes = {name: np.asarray(want("08.distance_histogram", name, positions, edges)) for name in _HISTOGRAM_MISTAKES}
    h = fn(positions.copy(), edges.copy())
    fb.expect(np.shape(h) == ref.shape, f"h has shape {shape_of(h, arrays=True)}; expected {ref.shape}: one value "
              f"per bin (len(edges) - 1 = {len(edges) - 1})", fatal=True)
    fb.expect(close_arrays(h, ref, atol=1e-10, rtol=1e-9),
              _first(h, mistakes, _HISTOGRAM_MISTAKES, "h differs from (pair counts per bin) / (frames x bin width), "
                     "pairs i < j"), ok="matches the expected values", values=True)
    # the same trajectory in another orientation and atom order: h(r) only sees distances
    R, _ = np.linalg.qr(g.standard_normal((d, d)))
    moved = positions[:, g.permutation(n)] @ R.T + g.standard_normal(d)
    fb.expect(close_arrays(fn(moved, edges), ref, atol=1e-10, rtol=1e-9), "rotating, translating or relabelling the "
              "atoms changed your h(r): it must depend on the interatomic distances only")
    one = fn(positions[:1], edges)
    fb.expect(close_arrays(one, one_ref, atol=1e-10, rtol=1e-9), "a single frame ([1, N, d]) gives a wrong h(r)",
              values=True)
