"""Hidden tests of notebook 10 (vibrations from a potential).

Same contract as ``nb00.py``: ``HIDDEN[exercise_id](obj, fb)`` runs the public checker of
:mod:`course_lib.teaching.exercises.nb10` first (exactly the notebook's self-check, on its stored expected
outputs), then the same checker with other seeds and sizes (expected outputs from ``reference/nb10.py``),
then extra cases (rotation invariance of the spectrum, a bent triatomic's six zero modes).

``10.failure_flag`` (a design exercise, no expected output) is checked on two hidden samples drawn per case from
frames that exist nowhere else: a 500 K and a 1000 K GFN2-xTB run of their own (``data/nb10/`` beside this file; the
command, seeds and sha256 are in ``data/nb10/README.md``). The student's sandbox reads ``data/`` but never
``grading/``, so a frame of a hidden sample cannot be looked up (by its distances, or by matching the shipped
committee's predictions on the public frames), and the score never receives the positions, so it cannot compute
the reference (GFN2-xTB) either: it is a function of the committee's predictions. The checker's sandbox binds
``data/nb10/`` with this module (``ExerciseRunner.hidden_files``). The sizes
(:data:`~course_lib.teaching.exercises.nb10.HIDDEN_SAMPLE`) and the bar live in the public checker: one home for
what the notebook prints and what is graded. The committee's predictions are computed here, at grading time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from course_lib.teaching.exercises import nb10 as public
from course_lib.teaching.grading import run_cases

_spec = importlib.util.spec_from_file_location("_course_reference_nb10",
                                               Path(__file__).with_name("reference") / "nb10.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)
REF = {"expected": reference.compute}


def _springs_hessian(x, k=20.0):
    """Hessian [3N, 3N] of sum_{i<j} k/2 (|r_ij| - d_ij)² at its minimum x [N, 3]: k u uᵀ blocks per pair."""
    n = len(x)
    h = np.zeros((3 * n, 3 * n))
    for i in range(n):
        for j in range(i + 1, n):
            u = (x[j] - x[i]) / np.linalg.norm(x[j] - x[i])
            b = k * np.outer(u, u)
            for a, c, s in ((i, i, 1), (j, j, 1), (i, j, -1), (j, i, -1)):
                h[3 * a:3 * a + 3, 3 * c:3 * c + 3] += s * b
    return h


def _extra(fn, fb, seed: int = 7) -> None:
    g = np.random.default_rng(seed)
    x = g.standard_normal((4, 3)) * 1.2
    m = np.array([12.0, 1.008, 16.0, 1.008])
    nu = np.asarray(fn(_springs_hessian(x), m), dtype=np.float64)
    fb.expect(np.shape(nu) == (12,) and np.sum(np.abs(nu) < 1e-2) == 6,
              "a rigid spring network of 4 atoms at its minimum has exactly six zero wavenumbers (3 translations, "
              f"3 rotations); you gave {np.round(nu, 2).tolist() if np.size(nu) < 40 else np.shape(nu)}")
    q, _ = np.linalg.qr(g.standard_normal((3, 3)))
    rot = np.kron(np.eye(4), q)  # the same rotation for every atom
    nu_rot = np.asarray(fn(rot @ _springs_hessian(x) @ rot.T, m), dtype=np.float64)
    fb.expect(np.shape(nu_rot) == np.shape(nu) and np.allclose(nu_rot, nu, atol=1e-2),
              "rotating the molecule (R H Rᵀ) changed your wavenumbers: they must be invariant"
              " (the six zero modes may differ by rounding, < 0.01 cm^-1)")


def hidden_harmonic_wavenumbers(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_harmonic_wavenumbers, {}),
        ("hidden: seed=1, 3 atoms", public.check_harmonic_wavenumbers, {"seed": 1, "n": 3, **REF}),
        ("hidden: seed=2, 9 atoms", public.check_harmonic_wavenumbers, {"seed": 2, "n": 9, **REF}),
        ("hidden: zero modes, rotation", _extra, {}),
    ])


#: the hidden frames of 10.failure_flag: fresh GFN2-xTB runs, readable by the checker only (data/nb10/README.md)
HIDDEN_FRAMES = {"500K": Path(__file__).with_name("data") / "nb10" / "ethanol_500K.npz",
                 "1000K": Path(__file__).with_name("data") / "nb10" / "ethanol_1000K.npz"}


def hidden_parts(seed: int) -> tuple:
    """The hidden sample of one case: ``(source, indices)`` pairs for :func:`public.flag_sample`, drawn from the
    hidden runs (:data:`HIDDEN_FRAMES`) with ``seed``."""
    g = np.random.default_rng(seed)
    parts = []
    for key in ("500K", "1000K"):
        path = str(HIDDEN_FRAMES[key])
        idx = g.choice(public.frame_count(path), public.HIDDEN_SAMPLE[key], replace=False)
        parts.append((path, tuple(sorted(int(k) for k in idx))))
    return tuple(parts)


def hidden_failure_flag(fn, fb) -> None:
    n = sum(public.HIDDEN_SAMPLE.values())
    run_cases(fb, fn, [
        ("public check", public.check_failure_flag, {}),
        (f"hidden: seed=1, {n} fresh frames", public.check_failure_flag, {"seed": 1, "parts": hidden_parts(1)}),
        (f"hidden: seed=2, {n} fresh frames", public.check_failure_flag, {"seed": 2, "parts": hidden_parts(2)}),
    ])


HIDDEN = {"10.harmonic_wavenumbers": hidden_harmonic_wavenumbers, "10.failure_flag": hidden_failure_flag}
