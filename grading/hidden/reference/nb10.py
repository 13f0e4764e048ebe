"""Reference solution of notebook 10 and the outputs of the known mistakes the checker diagnoses.

Instructor material: not part of the installed package (see ``nb01.py`` here for the contract of ``compute``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["harmonic_wavenumbers", "failure_score", "compute", "SOLUTIONS"]

_EV, _AMU, _ANGSTROM, _C_CM = 1.602176634e-19, 1.66053906660e-27, 1e-10, 2.99792458e10
_FACTOR = np.sqrt(_EV / (_AMU * _ANGSTROM**2)) / (2 * np.pi * _C_CM)  # cm^-1 per sqrt(eV / (Å² amu))


def harmonic_wavenumbers(hessian, masses):
    """Reference solution of 10.harmonic_wavenumbers: ``[3N, 3N]`` (eV/Å²), ``[N]`` (amu) -> ``[3N]`` cm⁻¹, sorted."""
    m = np.repeat(np.asarray(masses, dtype=np.float64), 3)
    hm = np.asarray(hessian, dtype=np.float64) / np.sqrt(np.outer(m, m))
    lam = np.linalg.eigvalsh(hm)
    return np.sign(lam) * np.sqrt(np.abs(lam)) * _FACTOR


def failure_score(z, forces, energies):
    """Reference solution of 10.failure_flag: the committee's disagreement on the forces, the mean over the atoms of
    ``σ_a = sqrt(Σ_k |F_a^k - F̄_a|² / (M - 1))`` (notebook 10 §7), eV/Å. ``z [N]``, ``forces [M, N, 3]``,
    ``energies [M]`` -> a float. Invariant under every required symmetry: it uses only the
    lengths of force differences, summed over the members and averaged over the atoms."""
    deviation = forces - forces.mean(0)
    sigma = (deviation.pow(2).sum((0, 2)) / (forces.shape[0] - 1)).sqrt()
    return float(sigma.mean())


SOLUTIONS = {"10.harmonic_wavenumbers": harmonic_wavenumbers, "10.failure_flag": failure_score}


def _convert(lam):
    return np.sign(lam) * np.sqrt(np.abs(lam)) * _FACTOR


def _wavenumbers(variant, hessian, masses):
    m = np.repeat(np.asarray(masses, dtype=np.float64), 3)
    h = np.asarray(hessian, dtype=np.float64)
    lam = np.linalg.eigvalsh(h / np.sqrt(np.outer(m, m)))
    return {
        "values": lambda: harmonic_wavenumbers(hessian, masses),
        "no mass weighting": lambda: _convert(np.linalg.eigvalsh(h)),
        "mass product": lambda: _convert(np.linalg.eigvalsh(h / np.outer(m, m))),
        "masses tiled": lambda: _convert(np.linalg.eigvalsh(h / np.sqrt(np.outer(*(2 * [np.tile(masses, 3)]))))),
        "angular frequency": lambda: 2 * np.pi * _convert(lam),
        "no sqrt": lambda: lam * _FACTOR,
        "imaginary as positive": lambda: np.sort(np.sqrt(np.abs(lam)) * _FACTOR),
        "unsorted": lambda: _convert(lam)[::-1].copy(),
    }[variant]()


def compute(exercise_id: str, variant: str, *inputs):
    """The expected output of ``variant`` ("values": the correct one; else a named mistake) on ``inputs``."""
    if exercise_id == "10.harmonic_wavenumbers":
        return _wavenumbers(variant, *inputs)
    raise KeyError(exercise_id)
