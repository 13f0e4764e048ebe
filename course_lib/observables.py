"""Structural observables of molecular-dynamics trajectories and distances between their distributions.

An MD run with a learned potential is only useful if it samples the same configurations as the
reference method. Energies and forces on single frames (test errors) do not say that; the
*distributions* of structural quantities along a trajectory do (notebook 08). All functions take
NumPy arrays of positions ``[F, N, 3]`` (F frames of N atoms, Angstrom; 2-D positions ``[F, N, 2]``
work wherever the quantity makes sense) and work in float64.

Observables:

- :func:`pair_distances`: all interatomic distances ``r_ij`` (i < j) of every frame ``[F, P]``;
- :func:`distance_histogram`: ``h(r)``, the mean number of atom pairs per unit length at distance r
  (``sum_b h_b * width_b`` = pairs per frame in the range): the molecular analogue of the pair
  distribution function of a liquid (without the ideal-gas normalisation, which an isolated molecule
  does not have);
- :func:`bond_lengths` ``|r_j - r_i|`` and :func:`dihedral_angles` (the IUPAC torsion angle i-j-k-l in
  degrees, in ``(-180, 180]``);
- :func:`conformers`: the rotamer of every frame from a torsion angle (``"gauche+"``, ``"gauche-"``,
  ``"trans"``; for ethanol the H-O-C-C angle, atoms :data:`ETHANOL_HOCC`);
- :func:`find_bonds`: the covalent bonds of a structure (pairs closer than 1.2 x the sum of the
  covalent radii, the criterion of :class:`course_lib.md.MDGuard`).

Distances between two samples of a quantity:

- :func:`wasserstein1`: the Wasserstein-1 (earth mover's) distance between two 1-D empirical
  distributions, in the unit of the quantity (``scipy.stats.wasserstein_distance``): "how far, on
  average, must probability mass move to turn one histogram into the other". For a pure shift of a
  distribution by ``d`` it is ``|d|``. ``periodic=360`` computes it on the circle (dihedral angles:
  -179 and +179 degrees are 2 degrees apart), as ``min_c integral |F_a(x) - F_b(x) - c| dx`` over the
  difference of the two cumulative distributions (Rabin, Delon and Gousseau 2011).
- :func:`js_distance`: the Jensen-Shannon distance between two histograms on the same bins: the
  square root of the JS divergence in bits, between 0 (identical) and 1 (no overlap). It only sees
  the overlap of the bins, not how far apart mismatched mass sits, and it depends on the binning.

Both are estimated from finite, time-correlated samples, so two runs of the *same* method never give
exactly 0: compare a model's value with the distance between two independent halves of the
reference (the noise floor; notebook 08 does).
"""

from __future__ import annotations

import numpy as np
from ase.data import covalent_radii

__all__ = [
    "pair_distances",
    "distance_histogram",
    "bond_lengths",
    "dihedral_angles",
    "ETHANOL_HOCC",
    "conformers",
    "find_bonds",
    "wasserstein1",
    "js_distance",
    "histogram",
    "compare_samples",
]


def _positions(positions) -> np.ndarray:
    x = np.asarray(positions, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[-1] not in (2, 3):
        raise ValueError(f"positions must be [F, N, 3] (or [N, 3], or 2-D [F, N, 2]), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("positions contain NaN or inf (an unstable run?): cut the trajectory before the failure")
    return x


def pair_distances(positions) -> np.ndarray:
    """All distances ``|r_j - r_i|`` with i < j (``np.triu_indices`` order): ``[F, N, d] -> [F, N(N-1)/2]``."""
    x = _positions(positions)
    i, j = np.triu_indices(x.shape[1], k=1)
    return np.linalg.norm(x[:, j] - x[:, i], axis=-1)


def distance_histogram(positions, edges) -> np.ndarray:
    """``h(r)`` on the bins ``edges [B + 1]``: mean number of pairs (i < j) per frame and per unit length.

    ``h_b = (number of pairs with r in [edges_b, edges_b+1), summed over frames) / (F * width_b)``, so
    ``sum_b h_b * width_b`` is the mean number of pairs per frame inside the range. Returns ``[B]``.
    """
    x = _positions(positions)
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("edges must be an increasing 1-D array of at least 2 bin edges")
    counts, _ = np.histogram(pair_distances(x).ravel(), bins=edges)
    return counts / (x.shape[0] * np.diff(edges))


def bond_lengths(positions, i: int, j: int) -> np.ndarray:
    """Distance between atoms i and j in every frame: ``[F]``."""
    x = _positions(positions)
    return np.linalg.norm(x[:, j] - x[:, i], axis=-1)


def dihedral_angles(positions, i: int, j: int, k: int, l: int) -> np.ndarray:  # noqa: E741 (l is the 4th atom)
    """Torsion angle i-j-k-l in degrees in ``(-180, 180]`` for every frame: ``[F]``.

    The angle between the planes (i, j, k) and (j, k, l), positive when, looking along j -> k, the
    bond k-l is rotated clockwise from i-j (IUPAC convention; the same as ``ase.Atoms.get_dihedral``
    modulo 360). Needs 3-D positions.
    """
    x = _positions(positions)
    if x.shape[-1] != 3:
        raise ValueError("dihedral angles need 3-D positions")
    b0 = x[:, i] - x[:, j]
    b1 = x[:, k] - x[:, j]
    b2 = x[:, l] - x[:, k]
    b1n = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - np.sum(b0 * b1n, axis=-1, keepdims=True) * b1n  # components perpendicular to the j-k axis
    w = b2 - np.sum(b2 * b1n, axis=-1, keepdims=True) * b1n
    cos = np.sum(v * w, axis=-1)
    sin = np.sum(np.cross(b1n, v) * w, axis=-1)
    ang = np.degrees(np.arctan2(sin, cos))
    return np.where(ang <= -180.0, ang + 360.0, ang)


#: The H-O-C-C torsion of ethanol in the atom order of ``ase.build.molecule("CH3CH2OH")`` and of the course's data
#: (C, C, O, H_O, ...): atoms 3-2-1-0.
ETHANOL_HOCC = (3, 2, 1, 0)


def conformers(dihedral_deg, trans_above: float = 120.0) -> np.ndarray:
    """Rotamer label of every torsion angle (degrees): ``"trans"`` where ``|phi| > trans_above``, else
    ``"gauche+"`` (``phi >= 0``) or ``"gauche-"`` (``phi < 0``). ``[F]`` array of str.

    The two gauche wells of ethanol's H-O-C-C torsion are mirror images of each other: a reflection of a
    frame changes the sign of every torsion angle (``conformers(-phi)`` swaps gauche+ and gauche-)."""
    phi = np.asarray(dihedral_deg, dtype=np.float64)
    if not 0 < trans_above < 180:
        raise ValueError(f"trans_above must be between 0 and 180 degrees, got {trans_above}")
    return np.where(np.abs(phi) > trans_above, "trans", np.where(phi >= 0, "gauche+", "gauche-"))


def find_bonds(numbers, positions, factor: float = 1.2) -> list[tuple[int, int]]:
    """Covalent bonds ``(i, j)``, i < j: pairs closer than ``factor`` x the sum of the covalent radii."""
    z = np.asarray(numbers, dtype=np.int64)
    x = _positions(positions)[0]
    i, j = np.triu_indices(len(z), k=1)
    d = np.linalg.norm(x[j] - x[i], axis=-1)
    keep = d < factor * (covalent_radii[z[i]] + covalent_radii[z[j]])
    return [(int(a), int(b)) for a, b in zip(i[keep], j[keep])]


def _samples(a, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError(f"{what} is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} contains NaN or inf")
    return a


def wasserstein1(a, b, periodic: float | None = None, grid: int = 7200) -> float:
    """Wasserstein-1 distance between the empirical distributions of the samples ``a`` and ``b``.

    ``periodic=None``: on the real line (``scipy.stats.wasserstein_distance``), in the unit of the
    samples. ``periodic=P`` (e.g. 360 for angles in degrees): on a circle of circumference P, computed
    on ``grid`` points as ``min_c mean |F_a - F_b - c| * P`` (c = the median of ``F_a - F_b``).
    """
    a, b = _samples(a, "a"), _samples(b, "b")
    if periodic is None:
        from scipy.stats import wasserstein_distance

        return float(wasserstein_distance(a, b))
    P = float(periodic)
    x = (np.arange(grid) + 0.5) * (P / grid)
    Fa = np.searchsorted(np.sort(np.mod(a, P)), x, side="right") / a.size
    Fb = np.searchsorted(np.sort(np.mod(b, P)), x, side="right") / b.size
    D = Fa - Fb
    return float(np.mean(np.abs(D - np.median(D))) * P)


def histogram(values, edges) -> np.ndarray:
    """Probabilities (sum 1 over the bins) of the samples ``values`` in the bins ``edges [B + 1]``.

    Samples outside the range are dropped (widen the range if that matters)."""
    v = _samples(values, "values")
    counts, _ = np.histogram(v, bins=np.asarray(edges, dtype=np.float64))
    total = counts.sum()
    if total == 0:
        raise ValueError("no sample falls inside the bins")
    return counts / total


def js_distance(p, q) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two histograms on the same bins.

    ``sqrt(JS(p, q))`` with ``JS = (KL(p || m) + KL(q || m)) / 2``, ``m = (p + q) / 2``; the inputs are
    normalised to sum 1 (counts are fine)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"p and q must be 1-D histograms on the same bins, got shapes {p.shape} and {q.shape}")
    if np.any(p < 0) or np.any(q < 0) or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("histograms must be non-negative with a positive sum")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return float(np.sqrt(max(0.0, 0.5 * (kl(p) + kl(q)))))


def compare_samples(reference, samples, edges, periodic: float | None = None) -> dict[str, float]:
    """``{"w1": wasserstein1, "js": js_distance of the histograms on edges}`` of ``samples`` against
    ``reference`` (1-D samples of one quantity; ``periodic`` for angles)."""
    ref, s = _samples(reference, "reference"), _samples(samples, "samples")
    if periodic is not None:
        ref, s = np.mod(ref - edges[0], periodic) + edges[0], np.mod(s - edges[0], periodic) + edges[0]
    return {"w1": wasserstein1(ref, s, periodic=periodic),
            "js": js_distance(histogram(ref, edges), histogram(s, edges))}
