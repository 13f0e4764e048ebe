"""Checkers of notebook 10: from a potential to physics you can trust (vibrations).

Exercises:

- ``10.harmonic_wavenumbers``: mass-weight a Hessian ``[3N, 3N]`` (eV/Å²) with the masses ``[N]`` (amu),
  diagonalise it and convert its eigenvalues to wavenumbers (cm⁻¹), imaginary frequencies as negative numbers.

No reference solution is here: the expected outputs (of the correct solution and of the known mistakes)
come from the checker's ``expected`` provider (:mod:`course_lib.teaching.exercises.stored`).
"""

from __future__ import annotations

import numpy as np

from course_lib.teaching.checks import exercise
from course_lib.teaching.exercises.common import close_arrays, shape_of
from course_lib.teaching.exercises.stored import provider

__all__ = ["check_harmonic_wavenumbers"]

_MISTAKES = {
    "no mass weighting": "you diagonalised the Hessian itself: divide H_ij by sqrt(m_i m_j) first (each mass repeated "
                         "for its three coordinates, np.repeat(masses, 3))",
    "mass product": "divide H_ij by sqrt(m_i m_j), not by m_i m_j",
    "masses tiled": "the masses must be repeated per atom, x1 y1 z1 x2 ... (np.repeat(masses, 3)), not tiled "
                    "(np.tile gives m1 m2 ... m1 m2 ...)",
    "angular frequency": "you returned omega / c: the wavenumber is omega / (2 pi c), divide by 2 pi",
    "no sqrt": "the eigenvalues are omega^2: take the square root before converting",
    "imaginary as positive": "negative eigenvalues (imaginary frequencies) must come out negative: "
                             "sign(lam) * sqrt(|lam|), not sqrt(|lam|)",
    "unsorted": "return the wavenumbers sorted in increasing order (np.linalg.eigvalsh does that)",
}


def _case(seed: int, n: int):
    """A symmetric Hessian [3n, 3n] (eV/Å²) with one negative eigenvalue and masses [n] (amu)."""
    g = np.random.default_rng(seed)
    a = g.standard_normal((3 * n, 3 * n))
    h = a @ a.T * 5.0 / n
    lam, vec = np.linalg.eigh(h)
    lam[0] = -2.0  # one saddle direction
    h = (vec * lam) @ vec.T
    masses = np.round(1.0 + 15.0 * g.random(n), 3)
    return 0.5 * (h + h.T), masses


def _diatomic(k: float = 30.0):
    u = np.array([0.0, 0.0, 1.0])
    b = k * np.outer(u, u)
    return np.block([[b, -b], [-b, b]]), np.array([1.008, 35.45])


@exercise("10.harmonic_wavenumbers", "Hessian -> mass-weighted -> wavenumbers in cm^-1")
def check_harmonic_wavenumbers(fn, fb, seed: int = 0, n: int = 4, expected=None):
    want = provider(expected)
    h, masses = _case(seed, n)
    ref = np.asarray(want("10.harmonic_wavenumbers", "values", h, masses))
    mistakes = {k: np.asarray(want("10.harmonic_wavenumbers", k, h, masses)) for k in _MISTAKES}
    out = fn(h.copy(), masses.copy())
    fb.expect(np.shape(out) == ref.shape, f"return one wavenumber per coordinate: shape {ref.shape} for "
              f"{n} atoms, got {shape_of(out, arrays=True)}", fatal=True)
    out = np.asarray(out, dtype=np.float64)
    fb.expect(bool(np.all(np.isfinite(out))), "your wavenumbers contain NaN: np.sqrt of a negative eigenvalue. "
              "Report an imaginary frequency as a negative number, sign(lam) * sqrt(|lam|)", fatal=True)
    ok = close_arrays(out, ref, atol=1e-6, rtol=1e-8)
    named = next((_MISTAKES[k] for k, v in mistakes.items() if close_arrays(out, v, atol=1e-6, rtol=1e-8)), None)
    why = named or ("the wavenumbers differ from sign(lam) sqrt(|lam|) / (2 pi c) in cm^-1, lam the eigenvalues of "
               "H_ij / sqrt(m_i m_j): check the unit conversion (eV, Å, amu to SI; c in cm/s)")
    fb.expect(ok, why, ok="matches the expected wavenumbers", values=True)
    if named is not None:  # a named mistake is not reported again through its consequences
        return
    # physics: a harmonic diatomic, nu = sqrt(k / mu) / (2 pi c), and five zero modes
    hd, md = _diatomic()
    nu = np.asarray(fn(hd, md), dtype=np.float64)
    mu = md[0] * md[1] / md.sum()
    exact = np.sqrt(30.0 * 1.602176634e-19 / (mu * 1.66053906660e-27 * 1e-20)) / (2 * np.pi * 2.99792458e10)
    fb.expect(np.shape(nu) == (6,) and abs(nu[-1] - exact) < 1e-3 * exact and np.all(np.abs(nu[:5]) < 1e-3),
              f"a harmonic diatomic (k = 30 eV/Å², H and Cl) must give five zero modes and one stretch at "
              f"sqrt(k/mu)/(2 pi c) = {exact:.1f} cm^-1; you gave {np.round(nu, 1).tolist()}", values=True)
