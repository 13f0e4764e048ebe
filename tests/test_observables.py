"""Structural observables and distances between distributions (course_lib.observables)."""

import numpy as np
import pytest
from ase import Atoms

from course_lib import observables as O


def _traj(seed=0, frames=5, n=6):
    return np.random.default_rng(seed).standard_normal((frames, n, 3)) * 1.5


def test_pair_distances_and_histogram_count_each_pair_once():
    P = _traj()
    d = O.pair_distances(P)
    assert d.shape == (5, 15)
    i, j = np.triu_indices(6, 1)
    assert np.allclose(d[2], np.linalg.norm(P[2, j] - P[2, i], axis=-1))
    edges = np.linspace(0.0, 20.0, 41)  # covers every distance
    h = O.distance_histogram(P, edges)
    assert np.isclose(np.sum(h * np.diff(edges)), 15.0)  # N(N-1)/2 pairs per frame
    assert np.allclose(O.distance_histogram(P[1], edges) * np.diff(edges),
                       np.histogram(d[1], edges)[0])  # a single frame [N, 3] works


def test_observables_are_invariant_under_rigid_motions_and_dihedral_flips_under_reflection():
    P = _traj(1)
    Q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((3, 3)))
    R = Q * np.sign(np.linalg.det(Q))  # a rotation
    moved = P @ R.T + np.array([1.0, -2.0, 3.0])
    edges = np.linspace(0, 12, 25)
    assert np.allclose(O.distance_histogram(moved, edges), O.distance_histogram(P, edges))
    assert np.allclose(O.bond_lengths(moved, 0, 3), O.bond_lengths(P, 0, 3))
    assert np.allclose(O.dihedral_angles(moved, 0, 1, 2, 3), O.dihedral_angles(P, 0, 1, 2, 3))
    mirrored = P * np.array([1.0, 1.0, -1.0])  # a reflection changes the sign of a torsion angle
    assert np.allclose(O.dihedral_angles(mirrored, 0, 1, 2, 3), -O.dihedral_angles(P, 0, 1, 2, 3))


def test_dihedral_matches_ase():
    P = _traj(3, frames=4)
    ours = O.dihedral_angles(P, 0, 1, 2, 3)
    for f in range(4):
        ase_angle = Atoms("C4" + "H2", positions=P[f]).get_dihedral(0, 1, 2, 3)  # degrees in [0, 360)
        assert np.isclose(np.mod(ours[f], 360.0), ase_angle, atol=1e-8)
    assert np.all(ours > -180) and np.all(ours <= 180)


def test_find_bonds_of_ethanol():
    from ase.build import molecule

    a = molecule("CH3CH2OH")
    bonds = O.find_bonds(a.numbers, a.positions)
    assert len(bonds) == 8  # C-C, C-O, O-H, 5 C-H
    sym = a.get_chemical_symbols()
    assert sorted("".join(sorted(sym[i] + sym[j])) for i, j in bonds).count("CH") == 5


def test_wasserstein1_shift_and_circle():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(2000)
    assert O.wasserstein1(a, a) == 0.0
    assert np.isclose(O.wasserstein1(a, a + 0.3), 0.3)
    # on the circle, -179 and +179 degrees are 2 degrees apart (on the line: 358)
    assert np.isclose(O.wasserstein1([-179.0], [179.0], periodic=360.0), 2.0, atol=0.1)
    assert np.isclose(O.wasserstein1([-179.0], [179.0]), 358.0)
    angles = np.mod(165.0 + 10.0 * rng.standard_normal(3000) + 180.0, 360.0) - 180.0  # a peak across +-180
    shifted = np.mod(angles + 25.0 + 180.0, 360.0) - 180.0
    assert np.isclose(O.wasserstein1(angles, shifted, periodic=360.0), 25.0, atol=0.2)
    uniform = rng.uniform(-180, 180, 3000)  # a rotation of the uniform distribution is the same distribution
    assert O.wasserstein1(uniform, np.mod(uniform + 205.0, 360.0) - 180.0, periodic=360.0) < 3.0


def test_js_distance_bounds_and_histogram():
    p = np.array([1.0, 2.0, 3.0, 0.0])
    assert O.js_distance(p, p) == 0.0
    assert np.isclose(O.js_distance([1, 0], [0, 1]), 1.0)  # disjoint supports
    assert 0 < O.js_distance(p, [1, 1, 1, 1]) < 1
    h = O.histogram([0.1, 0.2, 0.7, 5.0], [0.0, 0.5, 1.0])
    assert np.allclose(h, [2 / 3, 1 / 3])  # the sample outside the range is dropped
    c = O.compare_samples([170.0, -170.0], [-175.0, 175.0], np.linspace(-180, 180, 37), periodic=360.0)
    assert c["w1"] < 6.0 and c["js"] < 1.0


@pytest.mark.parametrize("call, match", [
    (lambda: O.pair_distances(np.zeros((3, 4))[None, None]), "positions must be"),
    (lambda: O.pair_distances(np.full((2, 3, 3), np.nan)), "NaN"),
    (lambda: O.distance_histogram(_traj(), [1.0, 0.5]), "increasing"),
    (lambda: O.js_distance([1, 2], [1, 2, 3]), "same bins"),
    (lambda: O.js_distance([-1, 2], [1, 2]), "non-negative"),
    (lambda: O.histogram([5.0], [0.0, 1.0]), "no sample"),
    (lambda: O.wasserstein1([], [1.0]), "empty"),
    (lambda: O.dihedral_angles(np.zeros((1, 4, 2)), 0, 1, 2, 3), "3-D"),
])
def test_bad_input_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()
