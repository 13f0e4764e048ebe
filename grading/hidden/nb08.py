"""Hidden tests of notebook 08 (molecular dynamics with the learned potentials).

Same contract as ``nb00.py``: ``HIDDEN[exercise_id](obj, fb)`` runs the public checker of
:mod:`course_lib.teaching.exercises.nb08` first (exactly the notebook's self-check, on its stored expected
outputs), then the same checker with other seeds and sizes (expected outputs from ``reference/nb08.py``),
then extra cases (2-D systems, a harmonic oscillator against its exact solution,
equivariance of a step, a long trajectory for h(r)).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from course_lib.teaching.exercises import nb08 as public
from course_lib.teaching.exercises.common import close_arrays
from course_lib.teaching.grading import run_cases

_spec = importlib.util.spec_from_file_location("_course_reference_nb08",
                                               Path(__file__).with_name("reference") / "nb08.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)
REF = {"expected": reference.compute}


def _verlet_extra(fn, fb, seed: int = 11) -> None:
    # 1-D harmonic oscillators (d = 1, different masses): velocity Verlet's exact discrete solution
    k, dt = 4.0, 0.01
    masses = np.array([1.0, 2.0, 0.5])
    x, v = np.array([[1.0], [0.5], [-0.2]]), np.zeros((3, 1))

    def force(p):
        return -k * p

    f = force(x)
    for _ in range(300):
        x, v, f = fn(x, v, f, masses, dt, force)
    w = np.sqrt(k / masses)[:, None]
    exact = np.array([[1.0], [0.5], [-0.2]]) * np.cos(w * 300 * dt)
    err = float(np.abs(x - exact).max())
    fb.expect(err < 1e-3, f"three 1-D harmonic oscillators (d = 1, masses 1, 2, 0.5), 300 steps: positions off the "
              f"exact solution by {err:.1e} (velocity Verlet: ~1e-5)")
    # a step commutes with a rotation of positions, velocities and forces (2-D system)
    g = np.random.default_rng(seed)
    pos, vel, m = g.standard_normal((6, 2)) * 2, g.standard_normal((6, 2)), 1 + g.random(6)
    kb = 1.0 + g.random(5)

    def field(p):  # springs (rest length 1) along a chain, in an isotropic well: rotation equivariant forces
        dx = p[1:] - p[:-1]
        b = np.linalg.norm(dx, axis=-1, keepdims=True)
        fb_ = -kb[:, None] * (b - 1.0) * dx / b
        f = -0.3 * p * np.sum(p**2, axis=-1, keepdims=True)
        f[1:] += fb_
        f[:-1] -= fb_
        return f

    th = 0.7
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    out = fn(pos, vel, field(pos), m, 0.02, field)
    rot = fn(pos @ R.T, vel @ R.T, field(pos @ R.T), m, 0.02, field)
    err = max(float(np.abs(a @ R.T - b).max()) for a, b in zip(out, rot))
    fb.expect(err < 1e-10, f"rotating the 2-D input state rotates the output of your step? error {err:.1e}: the step "
              "must treat every coordinate the same way")


def _histogram_extra(fn, fb, seed: int = 5) -> None:
    g = np.random.default_rng(seed)
    traj = np.cumsum(0.05 * g.standard_normal((200, 9, 3)), axis=0) + 1.5 * g.standard_normal((1, 9, 3))
    edges = np.linspace(0.0, 8.0, 41)
    h = fn(traj, edges)
    ref = reference.distance_histogram(traj, edges)
    fb.expect(close_arrays(h, ref, atol=1e-10, rtol=1e-9),
              "a 200-frame trajectory of 9 atoms: your h(r) differs from the reference")
    covered = float(np.sum(np.asarray(h) * np.diff(edges)))
    inside = float(np.mean(np.sum(reference.distance_histogram(traj, np.array([0.0, 8.0])) * 8.0)))
    fb.expect(abs(covered - inside) < 1e-9, f"sum(h * width) = {covered:.3f}, but {inside:.3f} pairs per frame lie in "
              "the range: h must count pairs per frame and per unit length")


def hidden_velocity_verlet_step(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_velocity_verlet_step, {}),
        ("hidden: seed=1, 2-D, 7 atoms", public.check_velocity_verlet_step, {"seed": 1, "n": 7, "d": 2, **REF}),
        ("hidden: seed=2, dt=0.01", public.check_velocity_verlet_step, {"seed": 2, "dt": 0.01, **REF}),
        ("hidden: oscillators, rotation", _verlet_extra, {}),
    ])


def hidden_distance_histogram(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_distance_histogram, {}),
        ("hidden: seed=1, 1 frame, 10 atoms", public.check_distance_histogram,
         {"seed": 1, "frames": 1, "n": 10, **REF}),
        ("hidden: seed=2, 2-D", public.check_distance_histogram, {"seed": 2, "d": 2, **REF}),
        ("hidden: long trajectory", _histogram_extra, {}),
    ])


def hidden_md_setup(fn, fb) -> None:
    """A design exercise: the public run, then MD from other frames and velocities, one longer (400 fs in 520 force
    calls, dt >= 0.77 fs). The grader's sandboxes see the checkout's ``benchmarks/results/`` (the shipped SchNet)."""
    run_cases(fb, fn, [
        ("public check", public.check_md_setup, {}),
        ("hidden: frame 3, seed 5, 400 fs", public.check_md_setup,
         {"seed": 5, "frame": 3, "length_fs": 400.0, "budget": 520}),
        ("hidden: frame 7, seed 6", public.check_md_setup, {"seed": 6, "frame": 7}),
    ])


HIDDEN = {
    "08.velocity_verlet_step": hidden_velocity_verlet_step,
    "08.distance_histogram": hidden_distance_histogram,
    "08.md_setup": hidden_md_setup,
}
