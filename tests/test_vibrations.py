"""course_lib.vibrations: Hessians (autograd = finite differences), normal modes in cm⁻¹ against known answers,
the six rigid-body modes, rotation invariance, and the VDOS of a harmonic system."""

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.md.verlet import VelocityVerlet
from scipy.spatial.transform import Rotation
from torch import nn

from course_lib import vibrations as V
from course_lib.ase_calculator import ModelCalculator
from course_lib.md import run_md
from course_lib.models.nequip import NequIP
from course_lib.models.schnet import SchNet

#: a bent triatomic (water-like, Å) and ethanol-like 5-atom cluster used as minima of spring networks
BENT = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
CLUSTER = np.array([[0.0, 0.0, 0.0], [1.5, 0.1, 0.0], [2.1, 1.3, 0.2], [-0.6, 0.9, 0.4], [0.3, -0.8, 0.9]])


class Springs(nn.Module):
    """E = sum_{i<j} k/2 (|r_ij| - d_ij)² with the distances d of ``positions``: minimum (E = 0) at ``positions``
    and every rigid copy of it. An energy model ``model(Data(z, pos)) -> [1]``."""

    system = "molecule"

    def __init__(self, positions, k: float = 20.0):
        super().__init__()
        x = torch.as_tensor(positions, dtype=torch.float64)
        self.register_buffer("d0", torch.cdist(x, x))
        self.k = k

    def forward(self, data):
        d = (data.pos[:, None, :] - data.pos[None, :, :]).pow(2).sum(-1).add(1e-30).sqrt()
        iu = torch.triu_indices(len(d), len(d), 1)
        return (0.5 * self.k * (d - self.d0.to(d.dtype))[iu[0], iu[1]] ** 2).sum().reshape(1)


def diatomic_hessian(k: float) -> np.ndarray:
    u = np.array([0.0, 0.0, 1.0])
    b = k * np.outer(u, u)
    return np.block([[b, -b], [-b, b]])


def test_the_unit_conversion_gives_the_harmonic_diatomic_frequency():
    # nu = sqrt(k / mu) / (2 pi c); k = 1 eV/Å², mu = 1 amu -> 521.47 cm⁻¹ (SI constants written out)
    assert V.WAVENUMBER_PER_SQRT_EIG == pytest.approx(
        np.sqrt(1.602176634e-19 / (1.66053906660e-27 * 1e-20)) / (2 * np.pi * 2.99792458e10), rel=1e-12)
    assert V.WAVENUMBER_PER_SQRT_EIG == pytest.approx(521.47, abs=0.01)
    atoms = Atoms("HCl", positions=[[0, 0, 0], [0, 0, 1.27]])
    m = atoms.get_masses()
    mu = m[0] * m[1] / m.sum()
    k = 30.0
    nm = V.normal_modes(diatomic_hessian(k), m, atoms.positions)
    assert nm.wavenumbers[-1] == pytest.approx(521.47 * np.sqrt(k / mu), rel=1e-4)
    # five zero modes for a linear molecule, all rigid; the stretch is not
    assert np.allclose(nm.wavenumbers[:5], 0.0, atol=1e-3) and np.allclose(nm.rigid[:5], 1.0)
    assert nm.rigid[-1] < 1e-12
    assert len(V.rigid_body_basis(atoms.positions, m)) == 5
    # ASE's own normal-mode analysis agrees (an independent implementation of the units)
    from ase.vibrations import VibrationsData

    ase_nu = VibrationsData.from_2d(atoms, diatomic_hessian(k)).get_frequencies().real
    assert ase_nu[-1] == pytest.approx(nm.wavenumbers[-1], rel=1e-5)
    projected = V.normal_modes(diatomic_hessian(k), m, atoms.positions, project=True)
    assert projected.wavenumbers.shape == (1,) and projected.wavenumbers[0] == pytest.approx(nm.wavenumbers[-1])


def test_negative_eigenvalues_are_imaginary_frequencies_reported_negative():
    assert V.eigenvalues_to_wavenumbers([-4.0, 0.0, 4.0]) == pytest.approx([-2 * 521.4709, 0.0, 2 * 521.4709], rel=1e-5)


def test_autograd_hessian_equals_finite_differences_and_is_symmetric(one_thread):
    torch.manual_seed(0)
    z = np.array([6, 6, 8, 1, 1])
    for model in (SchNet(hidden=16, filters=16, num_layers=2, num_basis=10, cutoff=4.0).eval(),
                  NequIP(l_max=1, hidden=4, num_layers=2, radial_hidden=(8,)).eval()):
        h = V.hessian_autograd(V.model_energy_function(model, z), CLUSTER)
        assert h.shape == (15, 15)
        assert np.abs(h - h.T).max() < 1e-10 * max(1.0, np.abs(h).max())
        atoms = Atoms(numbers=z, positions=CLUSTER)
        atoms.calc = ModelCalculator(model)
        fd = V.hessian_finite_difference(atoms, delta=1e-3)
        assert np.abs(fd - h).max() < 1e-4 * max(1.0, np.abs(h).max()), type(model).__name__
        assert np.allclose(atoms.positions, CLUSTER)  # left where it was


def test_finite_difference_hessian_of_a_harmonic_calculator_is_exact():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(9, 9))
    h = a @ a.T
    atoms = Atoms("H3", positions=BENT)
    atoms.calc = V.HarmonicCalculator(h, BENT)
    assert np.allclose(V.hessian_finite_difference(atoms), h, atol=1e-9)
    with pytest.raises(ValueError, match="symmetric"):
        V.HarmonicCalculator(a, BENT)


@pytest.mark.parametrize("positions", [BENT, CLUSTER])
def test_a_nonlinear_molecule_at_a_minimum_has_six_near_zero_rigid_modes(positions):
    model = Springs(positions).eval()
    z = np.full(len(positions), 6)
    m = Atoms(numbers=z, positions=positions).get_masses()
    # start away from the minimum and relax with ASE's optimiser through the course's calculator
    start = Atoms(numbers=z, positions=positions + np.random.default_rng(1).normal(scale=0.05, size=positions.shape))
    relaxed = V.relax(start, ModelCalculator(model), fmax=1e-6)
    h = V.hessian_autograd(V.model_energy_function(model, z), relaxed.positions)
    nm = V.normal_modes(h, m, relaxed.positions)
    small = np.argsort(np.abs(nm.wavenumbers))[:6]
    assert np.abs(nm.wavenumbers[small]).max() < 1.0  # cm⁻¹
    assert np.allclose(nm.rigid[small], 1.0, atol=1e-6)
    rest = np.setdiff1d(np.arange(len(nm.wavenumbers)), small)
    assert nm.wavenumbers[rest].min() > 100.0 and nm.rigid[rest].max() < 1e-6
    vib = V.normal_modes(h, m, relaxed.positions, project=True)
    assert vib.wavenumbers.shape == (3 * len(z) - 6,)
    assert np.allclose(vib.wavenumbers, nm.wavenumbers[np.sort(rest)], atol=1e-3)


def test_frequencies_are_invariant_under_a_rotation_of_the_molecule(one_thread):
    torch.manual_seed(0)
    z = np.array([6, 6, 8, 1, 1])
    model = SchNet(hidden=16, filters=16, num_layers=2, num_basis=10, cutoff=4.0).eval()
    m = Atoms(numbers=z, positions=CLUSTER).get_masses()
    fn = V.model_energy_function(model, z)
    rot = Rotation.random(random_state=3).as_matrix()
    turned = CLUSTER @ rot.T + np.array([0.3, -1.0, 2.0])
    for project in (False, True):
        a = V.normal_modes(V.hessian_autograd(fn, CLUSTER), m, CLUSTER, project=project).wavenumbers
        b = V.normal_modes(V.hessian_autograd(fn, turned), m, turned, project=project).wavenumbers
        assert np.abs(a - b).max() < 1e-6 * max(1.0, np.abs(a).max())
    # a model that is not invariant fails the same check (the test can fail)
    lopsided = Springs(CLUSTER).eval()
    lopsided.forward = lambda data, f=lopsided.forward: f(data) + 5.0 * (data.pos[:, 0] ** 2).sum().reshape(1)
    fn2 = V.model_energy_function(lopsided, z)
    a = V.normal_modes(V.hessian_autograd(fn2, CLUSTER), m, CLUSTER).wavenumbers
    b = V.normal_modes(V.hessian_autograd(fn2, turned), m, turned).wavenumbers
    assert np.abs(a - b).max() > 1.0


def test_match_modes_recovers_a_permutation_and_stretch_mode_finds_the_bond():
    model = Springs(BENT).eval()
    z = np.array([8, 1, 1])
    m = Atoms(numbers=z, positions=BENT).get_masses()
    h = V.hessian_autograd(V.model_energy_function(model, z), BENT)
    ref = V.normal_modes(h, m, BENT, project=True)
    perm = np.array([2, 0, 1])
    shuffled = V.NormalModes(ref.wavenumbers[perm], ref.eigenvalues[perm], -ref.vectors[:, perm], ref.rigid[perm], m)
    idx = V.match_modes(ref, shuffled)
    assert np.allclose(shuffled.wavenumbers[idx], ref.wavenumbers)
    k = V.stretch_mode(ref, BENT, 0, 1)
    assert 0 <= k < 3 and k != int(np.argmin(ref.wavenumbers))  # the bend is not a stretch


def test_vdos_of_a_harmonic_diatomic_peaks_at_its_frequency():
    k = 30.0
    atoms = Atoms("HCl", positions=[[0, 0, 0], [0, 0, 1.27]])
    m = atoms.get_masses()
    nu = V.normal_modes(diatomic_hessian(k), m, atoms.positions).wavenumbers[-1]
    atoms.calc = V.HarmonicCalculator(diatomic_hessian(k), atoms.positions)
    atoms.set_velocities(np.array([[0.0, 0.0, 0.01], [0.0, 0.0, -0.01 * m[0] / m[1]]]))
    dt = 0.25
    dyn = VelocityVerlet(atoms, timestep=dt * units.fs)
    frames = V.record_velocities(dyn, stride=2)
    run_md(dyn, 8000, stride=1000, max_bond_factor=None)
    assert len(frames) == 4001
    c = V.velocity_autocorrelation(np.array(frames), m)
    assert c[0] == pytest.approx(1.0)
    wn, dos = V.vibrational_dos(c, dt_fs=2 * dt)
    area = dos.sum() * (wn[1] - wn[0])
    assert area == pytest.approx(1.0, rel=1e-6)
    peak = V.dos_peak(wn, dos, 100.0, 6000.0)
    # velocity Verlet oscillates at (2/dt) asin(omega dt / 2) > omega: 0.08 % at dt = 0.25 fs
    assert abs(peak - nu) < 0.01 * nu, (peak, nu)
    assert V.verlet_shift(nu, 2.0) > 1.05 * nu  # a long step: the integrator's shift is visible
    for step in (0.5, 1.0):  # ... and it is what the dynamics show: the peak moves with the timestep
        atoms.set_positions([[0, 0, 0], [0, 0, 1.27]])
        atoms.set_velocities(np.array([[0.0, 0.0, 0.01], [0.0, 0.0, -0.01 * m[0] / m[1]]]))
        dyn = VelocityVerlet(atoms, timestep=step * units.fs)
        frames = V.record_velocities(dyn, stride=1)
        dyn.run(int(2000 / step))
        wn, dos = V.vibrational_dos(V.velocity_autocorrelation(np.array(frames), m), dt_fs=step, pad=16)
        shifted = float(V.verlet_shift(nu, step))
        assert abs(V.dos_peak(wn, dos, 100.0, 6000.0) - shifted) < 0.3 * (shifted - nu), (step, shifted, nu)
    with pytest.raises(ValueError, match="no wavenumbers"):
        V.dos_peak(wn, dos, 1e6, 2e6)


def test_bad_input_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="3N, 3N"):
        V.mass_weight(np.eye(5), [1.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        V.mass_weight(np.eye(6), [1.0, 0.0])
    with pytest.raises(ValueError, match="calculator"):
        V.hessian_finite_difference(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]]))
    with pytest.raises(ValueError, match="eval"):
        V.model_energy_function(Springs(BENT).train(), [1, 1, 1])
    with pytest.raises(ValueError, match=r"\[T >= 4, N, 3\]"):
        V.velocity_autocorrelation(np.zeros((10, 3)))
