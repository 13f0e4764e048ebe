"""ASE calculator (course_lib.ase_calculator) and guarded MD (course_lib.md) for SchNet and the 2D MPNN."""

import math
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from torch import nn

from course_lib.ase_calculator import ModelCalculator, particles_to_atoms
from course_lib.datasets import load_molecules, load_particles
from course_lib.md import MDInstability, energy_drift, energy_drift_per_ps, run_md
from course_lib.models import energy_and_forces
from course_lib.models.mpnn import InvariantMPNN
from course_lib.models.schnet import SchNet
from course_lib.simulate import particles2d as p2d
from course_lib.train import load_checkpoint, save_checkpoint

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}  # relative agreement with the model's own outputs


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    yield


@pytest.fixture(scope="module")
def ethanol():
    return load_molecules("ethanol", "train", dtype=torch.float64)[:6]


@pytest.fixture(scope="module")
def schnet(ethanol):
    """Random-init SchNet (small) with the energy shift fitted on ethanol: species = (H, C, O)."""
    torch.manual_seed(0)
    model = SchNet(hidden=32, filters=32, num_layers=2, num_basis=20, cutoff=5.0)
    model.fit_energy_scale(ethanol)
    return model.eval()


@pytest.fixture(scope="module")
def particles():
    return load_particles("energy", "test")[:3]


@pytest.fixture(scope="module")
def mpnn(particles):
    torch.manual_seed(0)
    model = InvariantMPNN(hidden=32, num_layers=2)
    model.fit_energy_scale(load_particles("energy", "train")[:50])
    model.sigma.fill_(5.0)  # forces of order 1 (the random network's output is small)
    return model.eval()


def _atoms(g) -> Atoms:
    return Atoms(numbers=g.z.numpy(), positions=g.pos.double().numpy())


def _particle_atoms(g) -> Atoms:
    return particles_to_atoms(g.pos.double().numpy(), g.charge.double().numpy(), box=g.box.numpy())


def _as(g, dtype):
    return g.clone().apply(lambda t: t.to(dtype) if t.is_floating_point() else t)


def _thermalize(atoms, temperature_K, seed=0):
    with warnings.catch_warnings():  # ASE 3.29 renames MaxwellBoltzmannDistribution
        warnings.simplefilter("ignore", DeprecationWarning)
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))


# --------------------------------------------------------------------------- equal to the model's outputs


@pytest.mark.parametrize("dtype", DTYPES)
def test_schnet_energy_and_forces_equal_the_model(schnet, ethanol, dtype):
    model = SchNet(**schnet.config)
    model.load_state_dict(schnet.state_dict())
    model = model.to(dtype).eval()
    calc = ModelCalculator(schnet, dtype=dtype)
    for g in ethanol[:3]:
        atoms = _atoms(g)
        atoms.calc = calc
        E, F = energy_and_forces(model, _as(g, dtype))
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        dE, dF = abs(e - E.detach().item()), np.abs(f - F.double().numpy()).max()
        print(f"{dtype}: E = {e:.6f} eV, |dE| = {dE:.1e}, max |dF| = {dF:.1e}")
        assert f.shape == (9, 3) and f.dtype == np.float64
        assert e == pytest.approx(E.detach().item(), rel=TOL[dtype], abs=0)
        np.testing.assert_allclose(f, F.double().numpy(), rtol=0, atol=TOL[dtype] * 10 * np.abs(f).max())
        assert atoms.get_potential_energy(force_consistent=True) == e  # free_energy


@pytest.mark.parametrize("dtype", DTYPES)
def test_mpnn_energy_and_forces_equal_the_model_with_the_box(mpnn, particles, dtype):
    model = InvariantMPNN(**mpnn.config)
    model.load_state_dict(mpnn.state_dict())
    model = model.to(dtype).eval()
    calc = ModelCalculator(mpnn, dtype=dtype)
    assert calc.system == "particles2d" and calc.units == "reduced"
    for g in particles:
        atoms = _particle_atoms(g)
        atoms.calc = calc
        E, F = energy_and_forces(model, _as(g, dtype))  # the graph has box [1, 2]
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        assert e == pytest.approx(E.detach().item(), rel=TOL[dtype], abs=0)
        np.testing.assert_allclose(f[:, :2], F.double().numpy(), rtol=0, atol=TOL[dtype] * 10 * np.abs(f).max())
        assert np.all(f[:, 2] == 0.0)


def test_model_and_caller_are_not_modified(schnet):
    before = {k: v.clone() for k, v in schnet.state_dict().items()}
    calc = ModelCalculator(schnet, dtype=torch.float64)
    assert next(schnet.parameters()).dtype == torch.float32 and calc.model is not schnet
    assert all(torch.equal(before[k], v) for k, v in schnet.state_dict().items())


# --------------------------------------------------------------------------- forces = -dE/dx


def _fd_check(atoms, components, h):
    f = atoms.get_forces()
    worst = 0.0
    for i, k in components:
        e = []
        for s in (1, -1):
            a = atoms.copy()
            a.calc = atoms.calc
            a.positions[i, k] += s * h
            e.append(a.get_potential_energy())
        fd = -(e[0] - e[1]) / (2 * h)
        worst = max(worst, abs(fd - f[i, k]))
    return worst, np.abs(f).max()


def test_forces_are_finite_differences_of_the_energy_float64(schnet, ethanol, mpnn, particles):
    atoms = _atoms(ethanol[0])
    atoms.calc = ModelCalculator(schnet, dtype=torch.float64)
    err, fmax = _fd_check(atoms, [(0, 0), (3, 1), (8, 2), (5, 0)], h=1e-5)
    print(f"SchNet: max |F - F_fd| = {err:.1e} eV/A (max |F| = {fmax:.2f})")
    assert err < 1e-7 * max(1.0, fmax)
    atoms = _particle_atoms(particles[0])
    atoms.calc = ModelCalculator(mpnn, dtype=torch.float64)
    err, fmax = _fd_check(atoms, [(0, 0), (4, 1), (7, 0), (11, 1)], h=1e-5)
    print(f"MPNN: max |F - F_fd| = {err:.1e} (max |F| = {fmax:.2f})")
    assert err < 1e-7 * max(1.0, fmax)


# --------------------------------------------------------------------------- periodic cells


def test_mpnn_periodic_translation_and_crossing_the_boundary(mpnn, particles):
    g = particles[1]
    L = float(g.box[0, 0])
    calc = ModelCalculator(mpnn, dtype=torch.float64)
    atoms = _particle_atoms(g)
    atoms.calc = calc
    e0, f0 = atoms.get_potential_energy(), atoms.get_forces()
    moved = atoms.copy()
    moved.calc = calc
    moved.positions[:, :2] += np.array([0.37 * L, -0.81 * L])  # every particle shifted, many across a face
    err_e = abs(moved.get_potential_energy() - e0)
    err_f = np.abs(moved.get_forces() - f0).max()
    print(f"periodic translation: |dE| = {err_e:.1e}, max |dF| = {err_f:.1e}")
    assert err_e < 1e-10 and err_f < 1e-10
    # unwrapped (outside the box) and wrapped positions give the same energy and forces
    wrapped = moved.copy()
    wrapped.calc = calc
    wrapped.wrap()
    assert np.abs(wrapped.positions - moved.positions).max() > 1.0
    assert abs(wrapped.get_potential_energy() - e0) < 1e-10
    # one particle walking across the face x = L: the energy changes smoothly
    walk = atoms.copy()
    walk.calc = calc
    i = 0
    energies = []
    for x in np.linspace(L - 0.02, L + 0.02, 5):
        walk.positions[i, 0] = x
        energies.append(walk.get_potential_energy())
    steps = np.abs(np.diff(energies))
    print("energy steps across the boundary:", " ".join(f"{s:.2e}" for s in steps))
    assert steps.max() < 2 * steps.min() + 1e-9  # no jump at x = L (the middle step)


def test_schnet_periodic_cell_is_passed_to_the_model(ethanol):
    """In a box small enough that the molecule sees its images (cutoff 2 A, L = 4.1 A), the energy differs
    from open space, equals the model's with ``box``, and does not change under a lattice translation."""
    torch.manual_seed(1)
    model = SchNet(hidden=32, filters=32, num_layers=2, num_basis=20, cutoff=2.0).double()
    model.fit_energy_scale(ethanol)
    model.scale.fill_(1.0)
    model.eval()
    g = ethanol[0]
    L = 4.1
    atoms = _atoms(g)
    atoms.calc = ModelCalculator(model)
    e_open = atoms.get_potential_energy()
    atoms.set_cell([L, L, L])
    atoms.set_pbc(True)
    gb = g.clone()
    gb.box = torch.tensor([[L, L, L]], dtype=torch.float64)
    E, F = energy_and_forces(model, gb)
    e = atoms.get_potential_energy()
    print(f"periodic - open energy: {e - e_open:.3e} eV")
    assert abs(e - e_open) > 1e-4
    assert e == pytest.approx(E.detach().item(), rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), F.numpy(), atol=1e-12)
    moved = atoms.copy()
    moved.calc = atoms.calc
    moved.positions += np.array([L, -2 * L, 3 * L]) + 0.3 * atoms.cell[0]  # lattice shift + a partial one
    moved_back = moved.copy()
    moved_back.calc = atoms.calc
    moved_back.positions -= 0.3 * atoms.cell[0]
    assert abs(moved_back.get_potential_energy() - e) < 1e-10
    assert abs(moved.get_potential_energy() - e) < 1e-10  # any translation (periodic invariance)


# --------------------------------------------------------------------------- refusals


def test_refuses_untrained_species(schnet, ethanol):
    assert schnet.trained_species == (1, 6, 8)
    atoms = _atoms(ethanol[0])
    atoms.numbers[2] = 7  # a nitrogen: SchNet has an embedding row for it, but never saw one
    atoms.calc = ModelCalculator(schnet)
    with pytest.raises(ValueError, match=r"not trained on N \(Z = \[7\]\); it knows H, C, O"):
        atoms.get_potential_energy()


def test_species_protocol_for_other_models(ethanol):
    """Any model with a ``species`` attribute (the elements it can embed) is checked when it records no
    ``trained_species``; without either, nothing is."""

    class Toy(nn.Module):
        species = (1, 6)

        def forward(self, batch):
            return (batch.pos**2).sum().reshape(1)

    atoms = _atoms(ethanol[0])
    atoms.calc = ModelCalculator(Toy().eval())
    with pytest.raises(ValueError, match="not trained on O"):
        atoms.get_potential_energy()
    Toy.species = None
    atoms.calc = ModelCalculator(Toy().eval())
    assert np.isfinite(atoms.get_potential_energy())


def test_schnet_species_is_saved_in_checkpoints(schnet, tmp_path):
    path = tmp_path / "schnet.pt"
    save_checkpoint(path, schnet, schnet.config)
    fresh = SchNet(**schnet.config)
    assert fresh.trained_species is None and fresh.species == tuple(range(1, 101))  # species: the embedding table
    load_checkpoint(path, fresh)
    assert fresh.trained_species == (1, 6, 8)
    old = {k: v for k, v in schnet.state_dict().items() if k != "trained_mask"}  # a checkpoint from before
    fresh = SchNet(**schnet.config)
    fresh.load_state_dict(old)
    assert fresh.trained_species is None
    # checkpoints written while the buffer was called species_mask load it under its new name
    renamed = {("species_mask" if k == "trained_mask" else k): v for k, v in schnet.state_dict().items()}
    fresh.load_state_dict(renamed)
    assert fresh.trained_species == (1, 6, 8)
    fresh.trained_species = (1, 8)
    assert fresh.trained_species == (1, 8)
    with pytest.raises(ValueError, match="outside 1..max_z"):
        fresh.trained_species = (0,)


def test_refuses_a_model_in_training_mode(schnet, ethanol):
    schnet.train()
    try:
        with pytest.raises(ValueError, match=r"training mode.*model\.eval\(\)"):
            ModelCalculator(schnet)
    finally:
        schnet.eval()
    calc = ModelCalculator(schnet)
    calc.model.interactions[0].train()  # a submodule switched to training mode later
    atoms = _atoms(ethanol[0])
    atoms.calc = calc
    with pytest.raises(ValueError, match="training mode"):
        atoms.get_potential_energy()


def test_particle_refusals(mpnn, particles):
    g = particles[0]
    calc = ModelCalculator(mpnn)

    def energy(atoms):
        atoms.calc = calc
        return atoms.get_potential_energy()

    atoms = _particle_atoms(g)
    atoms.set_constraint()
    atoms.positions[3, 2] = 0.5
    with pytest.raises(ValueError, match="plane z = 0, but particle 3 has z = 0.5"):
        energy(atoms)
    atoms = _particle_atoms(g)
    atoms.set_cell([10.0, 12.0, 10.0])
    with pytest.raises(ValueError, match="square box"):
        energy(atoms)
    atoms.set_cell([[10.0, 0, 0], [2.0, 10.0, 0], [0, 0, 10.0]])
    with pytest.raises(ValueError, match="square box"):
        energy(atoms)
    atoms = _particle_atoms(g)
    atoms.set_pbc(True)
    with pytest.raises(ValueError, match=r"pbc=\(True, True, False\)"):
        energy(atoms)
    atoms = _particle_atoms(g)
    del atoms.arrays["initial_charges"]
    with pytest.raises(ValueError, match="no charges"):
        energy(atoms)
    atoms.calc = ModelCalculator(mpnn, charges=g.charge.numpy())  # explicit charges instead
    assert np.isfinite(atoms.get_potential_energy())
    with pytest.raises(ValueError, match="use_speed=True"):
        ModelCalculator(InvariantMPNN(use_speed=True).eval())
    with pytest.raises(ValueError, match="square box"):
        particles_to_atoms(g.pos.numpy(), g.charge.numpy(), box=[10.0, 12.0])


def test_molecule_cell_refusals(schnet, ethanol):
    atoms = _atoms(ethanol[0])
    atoms.calc = ModelCalculator(schnet)
    atoms.set_cell([12.0, 12.0, 12.0])
    atoms.set_pbc((True, True, False))
    with pytest.raises(ValueError, match="mixed periodicity"):
        atoms.get_potential_energy()
    atoms.set_pbc(True)
    atoms.set_cell([[12.0, 0, 0], [3.0, 12.0, 0], [0, 0, 12.0]])
    with pytest.raises(ValueError, match="orthorhombic"):
        atoms.get_potential_energy()
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        ModelCalculator(schnet, dtype=torch.float16)


# --------------------------------------------------------------------------- dynamics


@pytest.mark.parametrize("dtype", DTYPES)
def test_schnet_velocity_verlet_and_langevin(schnet, ethanol, dtype):
    atoms = _atoms(ethanol[0])
    atoms.calc = ModelCalculator(schnet, dtype=dtype)
    _thermalize(atoms, 300)
    rec = run_md(VelocityVerlet(atoms, timestep=0.5 * units.fs), steps=5, stride=2)
    assert rec.time_unit == "fs" and np.allclose(rec.times, 0.5 * np.arange(6))
    assert rec.positions.shape == (3, 9, 3) and list(rec.frame_steps) == [0, 2, 4]
    assert rec.max_energy_error() < 1e-4
    dyn = Langevin(atoms, timestep=0.5 * units.fs, temperature_K=300, friction=0.02, fixcm=False,
                   rng=np.random.default_rng(0))
    rec = run_md(dyn, steps=5)
    assert len(rec.times) == 6 and np.all(np.isfinite(rec.total))


@pytest.mark.parametrize("dtype", DTYPES)
def test_mpnn_md_stays_in_the_plane(mpnn, particles, dtype):
    g = particles[0]
    atoms = particles_to_atoms(g.pos.numpy(), g.charge.numpy(), box=g.box.numpy(), vel=g.vel.numpy())
    atoms.calc = ModelCalculator(mpnn, dtype=dtype)
    assert atoms.get_number_of_degrees_of_freedom() == 2 * len(atoms)
    rec = run_md(VelocityVerlet(atoms, timestep=p2d.DT), steps=10, stride=5)
    assert rec.time_unit == "tau" and rec.times[-1] == pytest.approx(10 * p2d.DT)
    T = 1.0
    dyn = Langevin(atoms, timestep=p2d.DT_LANGEVIN, temperature_K=T / units.kB, friction=1.0, fixcm=False,
                   rng=np.random.default_rng(1))
    rec = run_md(dyn, steps=10)
    assert np.all(atoms.positions[:, 2] == 0.0) and np.all(atoms.get_velocities()[:, 2] == 0.0)
    assert np.all(rec.positions[..., 2] == 0.0)
    assert 0.1 < rec.temperature.mean() < 10  # reduced units (k_B T in eps), not kelvin


class ExactPairPotential(nn.Module):
    """The simulator's own potential as a 'model': ASE + calculator must reproduce particles2d's MD."""

    def forward(self, batch):
        return p2d.energy(batch.pos, batch.charge, float(batch.box[0, 0])).reshape(1)


def test_2d_path_reproduces_the_particle_simulator():
    """ASE's VelocityVerlet through the calculator = particles2d.velocity_verlet (units: time in tau)."""
    rng = np.random.default_rng(3)
    st = p2d.random_state(rng, [12], temperature=1.0)
    s = st.unpad(0)
    ref, _ = p2d.velocity_verlet(st, p2d.DT, 40)
    atoms = particles_to_atoms(s["pos"], s["charge"], box=p2d.BOX, vel=s["vel"])
    atoms.calc = ModelCalculator(ExactPairPotential().eval(), system="particles2d")
    e_ref, f_ref = p2d.energy_and_forces(s["pos"], s["charge"], p2d.BOX)
    assert atoms.get_potential_energy() == pytest.approx(e_ref, abs=1e-12)
    np.testing.assert_allclose(atoms.get_forces()[:, :2], f_ref, atol=1e-10)
    run_md(VelocityVerlet(atoms, timestep=p2d.DT), steps=40)
    diff = atoms.positions[:, :2] - ref.pos[0]  # ASE does not wrap, particles2d does: minimum image
    diff -= p2d.BOX * np.round(diff / p2d.BOX)
    print(f"ASE vs particles2d after 40 steps: max |dx| = {np.abs(diff).max():.1e}")
    assert np.abs(diff).max() < 1e-10
    np.testing.assert_allclose(atoms.get_velocities()[:, :2], ref.vel[0], atol=1e-10)


def test_nve_conserves_energy_schnet(schnet, ethanol):
    """NVE with a random-but-smooth SchNet (scale 1: forces ~1 eV/A, the molecule heats from 100 K to ~700 K):
    the energy error per atom stays below 2e-4 eV over 200 steps of 0.25 fs, and scales as dt^2 (Verlet)."""
    model = SchNet(**schnet.config)
    model.load_state_dict(schnet.state_dict())
    model.scale.fill_(1.0)
    model.eval()
    errors, drifts = {}, {}
    for dt in (0.25, 0.5):
        atoms = _atoms(ethanol[0])
        atoms.calc = ModelCalculator(model, dtype=torch.float64)
        _thermalize(atoms, 100)
        rec = run_md(VelocityVerlet(atoms, timestep=dt * units.fs), steps=int(50 / dt), stride=50,
                     max_bond_factor=None)  # a random model has no chemistry: bonds may break
        errors[dt] = rec.max_energy_error()
        drifts[dt] = energy_drift_per_ps(rec.times, rec.total, rec.n_atoms)
        print(f"dt = {dt} fs, {len(rec.times) - 1} steps: max |E - E0| = {errors[dt]:.2e} eV/atom, "
              f"drift {drifts[dt]:+.2e} eV/ps/atom, T {rec.temperature[0]:.0f} -> {rec.temperature[-1]:.0f} K")
    assert errors[0.25] < 2e-4 and abs(drifts[0.25]) < 1e-3
    assert 2.5 < errors[0.5] / errors[0.25] < 6.5  # second order: x4


# --------------------------------------------------------------------------- the MD guard


def test_guard_stops_a_huge_timestep_with_step_and_time():
    rng = np.random.default_rng(5)
    st = p2d.random_state(rng, [20], temperature=1.0)
    s = st.unpad(0)
    atoms = particles_to_atoms(s["pos"], s["charge"], box=p2d.BOX, vel=s["vel"])
    atoms.calc = ModelCalculator(ExactPairPotential().eval(), system="particles2d")
    dt = 0.1  # 200 x the simulator's timestep: particles jump into each other's cores
    with pytest.raises(MDInstability, match=r"MD unstable at step \d+ \(t = [0-9.]+ tau\): the total energy changed") \
            as err:
        run_md(VelocityVerlet(atoms, timestep=dt), steps=200)
    print(err.value)
    assert 1 <= err.value.step < 200 and err.value.time == pytest.approx(err.value.step * dt)


def test_guard_reports_nan_and_stretched_bonds(schnet, ethanol):
    class NaNModel(nn.Module):
        def forward(self, batch):
            return (batch.pos.sum() * math.nan).reshape(1)

    atoms = _atoms(ethanol[0])
    atoms.calc = ModelCalculator(NaNModel().eval())
    with pytest.raises(MDInstability, match=r"step 0 \(t = 0 fs\): NaN/inf forces"):
        run_md(VelocityVerlet(atoms, timestep=0.5 * units.fs), steps=3)

    class Unstable(nn.Module):  # inverted harmonic well: positions grow exponentially, then overflow
        def forward(self, batch):
            if not torch.isfinite(batch.pos).all():
                raise ValueError("'pos' contains NaN or inf")
            return (-1e4 * (batch.pos**2).sum()).reshape(1)

    atoms = _atoms(ethanol[0])
    atoms.calc = ModelCalculator(Unstable().eval())
    with pytest.raises(MDInstability, match="NaN/inf") as err:  # even with the energy and bond checks off
        run_md(VelocityVerlet(atoms, timestep=1 * units.fs), steps=500, max_energy_change=None,
               max_bond_factor=None)
    assert err.value.time == pytest.approx(err.value.step * 1.0)

    atoms = _atoms(ethanol[0])
    atoms.calc = ModelCalculator(schnet)
    _thermalize(atoms, 3000)
    with pytest.raises(MDInstability, match=r"bond [A-Z]\d+-[A-Z]\d+ stretched to"):
        run_md(VelocityVerlet(atoms, timestep=5 * units.fs), steps=100)


def test_energy_drift_helpers():
    t = np.linspace(0, 100, 51)  # fs
    e = -5.0 + 2e-4 * t + 1e-3 * np.sin(t)  # eV
    assert energy_drift(t, e) == pytest.approx(2e-4, rel=0.05)
    assert energy_drift_per_ps(t, e, n_atoms=4) == pytest.approx(0.05, rel=0.05)
    with pytest.raises(ValueError, match="NaN"):
        energy_drift(t, np.where(t > 50, np.nan, e))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_matches_cpu(schnet, ethanol, mpnn, particles):
    for model, atoms in ((schnet, _atoms(ethanol[0])), (mpnn, _particle_atoms(particles[0]))):
        atoms.calc = ModelCalculator(model, dtype=torch.float64)
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = ModelCalculator(model, device="cuda", dtype=torch.float64)
        assert atoms.get_potential_energy() == pytest.approx(e, rel=1e-10)
        np.testing.assert_allclose(atoms.get_forces(), f, atol=1e-8)
