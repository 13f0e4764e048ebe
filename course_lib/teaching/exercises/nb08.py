"""Checkers (and reference solutions) of notebook 08: molecular dynamics with the learned potentials.

Exercises:

- ``08.velocity_verlet_step``: one step of the velocity-Verlet integrator (what ASE's ``VelocityVerlet``
  does), with one force call per step.
- ``08.distance_histogram``: ``h(r)``, the mean number of atom pairs per frame and per unit length at
  distance r, from a trajectory.

Later notebook cells use the reference solutions below (and :mod:`course_lib.observables`), never the
student's code, so a student notebook with unfinished exercises still runs from top to bottom.
"""

from __future__ import annotations

import numpy as np

from course_lib.observables import distance_histogram as _distance_histogram
from course_lib.teaching.checks import exercise
from course_lib.teaching.exercises.common import close_arrays, shape_of

__all__ = ["velocity_verlet_step", "distance_histogram"]


# ------------------------------------------------------------------------- reference solutions


def velocity_verlet_step(pos, vel, forces, masses, dt, force_fn):
    """Reference solution of 08.velocity_verlet_step.

    pos, vel, forces ``[N, d]``; masses ``[N]``; dt a float; ``force_fn(pos) -> forces [N, d]``.
    Returns ``(new_pos, new_vel, new_forces)``; calls ``force_fn`` once.
    """
    acc = forces / masses[:, None]
    new_pos = pos + dt * vel + 0.5 * dt ** 2 * acc
    new_forces = force_fn(new_pos)
    new_vel = vel + 0.5 * dt * (acc + new_forces / masses[:, None])
    return new_pos, new_vel, new_forces


def distance_histogram(positions, edges):
    """Reference solution of 08.distance_histogram: positions ``[F, N, d]``, edges ``[B + 1]`` -> ``h [B]``."""
    return _distance_histogram(positions, edges)


# ------------------------------------------------------------------------- helpers


class _CountingForces:
    """A smooth anharmonic force field (springs between neighbours in a chain plus a quartic well),
    counting its calls."""

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


@exercise("08.velocity_verlet_step", "one velocity-Verlet step")
def check_velocity_verlet_step(fn, fb, seed: int = 0, n: int = 5, d: int = 3, dt: float = 0.05):
    pos, vel, masses = _state(seed, n, d)
    field = _CountingForces(n, d, seed)
    forces = field(pos)
    args = [a.copy() for a in (pos, vel, forces, masses)]
    field.calls = 0
    out = fn(*args, dt, field)
    fb.expect(isinstance(out, tuple) and len(out) == 3, f"return a tuple (new_pos, new_vel, new_forces), got "
              f"{type(out).__name__}{'' if not isinstance(out, tuple) else f' of length {len(out)}'}", fatal=True)
    new_pos, new_vel, new_forces = out
    fb.expect(all(np.shape(o) == (n, d) for o in out),
              f"each output must have the shape of pos {(n, d)}; got {[shape_of(o, arrays=True) for o in out]}",
              fatal=True)
    fb.expect(all(np.array_equal(a, b) for a, b in zip(args, (pos, vel, forces, masses))),
              "your function changed its inputs in place (e.g. pos += ...): return new arrays instead")
    calls = field.calls
    fb.expect(calls == 1, f"force_fn was called {calls} times; velocity Verlet needs exactly one new force "
              "evaluation per step (the forces at the start are given: reuse them)")
    acc = forces / masses[:, None]
    ref_pos, ref_vel, ref_forces = velocity_verlet_step(pos, vel, forces, masses, dt, _CountingForces(n, d, seed))
    if close_arrays(new_pos, ref_pos, atol=1e-10, rtol=1e-9):
        fb.expect(True, "positions OK")
    else:
        candidates = [
            (pos + dt * vel, "the position update misses the acceleration term + dt^2/2 * F/m"),
            (pos + dt * vel + dt ** 2 * acc, "the acceleration term of the position update is dt^2/2 * F/m: "
             "you forgot the factor 1/2"),
            (pos + dt * vel + 0.5 * dt ** 2 * forces, "divide the forces by the masses (a = F/m, with "
             "masses[:, None] so that each atom's row is divided by its own mass)"),
            (pos + dt * vel + 0.5 * dt ** 2 * forces * masses[:, None], "the acceleration is F / m, not F * m"),
            (pos + dt * ref_vel, "the positions must move with the *old* velocity plus the acceleration term "
             "(x + dt v + dt^2/2 a), not with the updated velocity"),
        ]
        msg = next((m for c, m in candidates if close_arrays(new_pos, c, atol=1e-10, rtol=1e-9)),
                   "new_pos differs from x + dt v + dt^2/2 F/m")
        fb.expect(False, msg)
    fb.expect(close_arrays(new_forces, _CountingForces(n, d, seed)(new_pos), atol=1e-10, rtol=1e-9),
              "new_forces must be force_fn(new_pos), the forces at the *new* positions (they are the "
              "starting forces of the next step)")
    if close_arrays(new_vel, ref_vel, atol=1e-10, rtol=1e-9):
        fb.expect(True, "velocities OK")
    elif close_arrays(new_pos, ref_pos, atol=1e-10, rtol=1e-9):
        acc_new = ref_forces / masses[:, None]
        candidates = [
            (vel + dt * acc, "the velocity update uses only the old forces (an Euler step): average the old and "
             "the new acceleration, v + dt/2 (F_old + F_new)/m"),
            (vel + dt * acc_new, "the velocity update uses only the new forces: average the old and the new "
             "acceleration, v + dt/2 (F_old + F_new)/m"),
            (vel + dt * (acc + acc_new), "the velocity update needs dt/2 (F_old + F_new)/m: you forgot the 1/2"),
            (vel + 0.5 * dt * (forces + ref_forces), "divide the forces by the masses in the velocity update too"),
        ]
        msg = next((m for c, m in candidates if close_arrays(new_vel, c, atol=1e-10, rtol=1e-9)),
                   "new_vel differs from v + dt/2 (F_old + F_new) / m")
        fb.expect(False, msg)
    # physics: time reversibility and energy conservation over many steps (only if one step is right)
    if close_arrays(new_pos, ref_pos, atol=1e-10, rtol=1e-9) and close_arrays(new_vel, ref_vel, atol=1e-10, rtol=1e-9):
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
def check_distance_histogram(fn, fb, seed: int = 0, frames: int = 7, n: int = 6, d: int = 3):
    g = np.random.default_rng(seed)
    positions = 2.0 * g.standard_normal((frames, n, d))
    edges = np.concatenate([[0.0], np.cumsum(0.3 + 0.4 * g.random(12))])  # uneven bins starting at r = 0
    h = fn(positions.copy(), edges.copy())
    ref = distance_histogram(positions, edges)
    fb.expect(np.shape(h) == ref.shape, f"h has shape {shape_of(h, arrays=True)}; expected {ref.shape}: one value "
              f"per bin (len(edges) - 1 = {len(edges) - 1})", fatal=True)
    if close_arrays(h, ref, atol=1e-10, rtol=1e-9):
        fb.expect(True, "matches the reference")
    else:
        width = np.diff(edges)
        i, j = np.triu_indices(n, k=1)
        dist = np.linalg.norm(positions[:, j] - positions[:, i], axis=-1).ravel()
        counts = np.histogram(dist, bins=edges)[0]
        self_counts = counts.copy()
        self_counts[0] += frames * n
        candidates = [
            (2 * ref, "every pair is counted twice (i, j) and (j, i): count each pair once, i < j "
             "(np.triu_indices(N, k=1))"),
            ((2 * counts + np.eye(len(counts))[0] * frames * n) / (frames * width),
             "you counted all N x N entries of the distance matrix: that counts each pair twice and adds the N "
             "zero self-distances i = j; use the pairs i < j only"),
            (self_counts / (frames * width), "the N zero distances of each atom to itself (i = j) are counted: "
             "use the pairs i < j only"),
            (counts / width, "divide by the number of frames: h(r) is a mean per frame"),
            (counts / frames, "divide each bin by its width: h(r) is a density per unit length (the bins here "
             "have different widths)"),
            (counts / (frames * width[0]), "divide each bin by its own width (the bins here have different "
             "widths), not by the width of the first bin"),
            (counts / (frames * width.mean()), "divide each bin by its own width (the bins here have different "
             "widths), not by the mean bin width"),
            (counts / (counts.sum() * width), "h(r) is not normalised to 1: it counts pairs, so "
             "sum(h * width) is the mean number of pairs per frame in the range (do not use density=True)"),
            (counts / counts.sum(), "h(r) is not a probability per bin: divide the pair counts by the number of "
             "frames and by the bin widths"),
            (counts / dist.size, "h(r) is not a probability per bin: divide the pair counts by the number of "
             "frames and by the bin widths (not by the number of distances)"),
        ]
        msg = next((m for c, m in candidates if close_arrays(h, c, atol=1e-10, rtol=1e-9)),
                   "h differs from (pair counts per bin) / (frames x bin width), pairs i < j")
        fb.expect(False, msg)
    # the same trajectory in another orientation and atom order: h(r) only sees distances
    R, _ = np.linalg.qr(g.standard_normal((d, d)))
    moved = positions[:, g.permutation(n)] @ R.T + g.standard_normal(d)
    fb.expect(close_arrays(fn(moved, edges), ref, atol=1e-10, rtol=1e-9), "rotating, translating or relabelling the "
              "atoms changed your h(r): it must depend on the interatomic distances only")
    one = fn(positions[:1], edges)
    fb.expect(close_arrays(one, distance_histogram(positions[:1], edges), atol=1e-10, rtol=1e-9),
              "a single frame ([1, N, d]) gives a wrong h(r)")
