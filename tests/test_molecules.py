"""Tests of the GFN2-xTB molecular-dynamics generator (course_lib.simulate.molecules)."""

import json

import numpy as np
import pytest
import torch
from ase import Atoms

pytest.importorskip("tblite")

from course_lib.data import sha256_file, validate  # noqa: E402
from course_lib.simulate import molecules as Mol  # noqa: E402

TINY = {"n_frames": 3, "sample_every": 5, "seed": 7, "equilibration_steps": 10}


@pytest.fixture(scope="module")
def ethanol():
    return Mol.make_molecule("ethanol")


@pytest.fixture(scope="module")
def run(ethanol):
    return Mol.run_md(ethanol, **TINY)


def test_same_seed_bit_identical(ethanol, run):
    again = Mol.run_md(ethanol, **TINY)
    assert list(run) == list(again)
    for k in run:
        assert run[k].dtype == again[k].dtype
        assert np.array_equal(run[k], again[k]), k
    other = Mol.run_md(ethanol, **{**TINY, "seed": 8})
    assert not np.array_equal(run["pos"], other["pos"])


def test_cli_files_bit_identical(tmp_path):
    for d in ("a", "b"):
        Mol.main(["--out", str(tmp_path / d), "--molecules", "ethanol", "--frames", "2", "--sample-every", "3",
                  "--equilibration-steps", "5", "--seed", "3"])
    a, b = tmp_path / "a" / "ethanol.npz", tmp_path / "b" / "ethanol.npz"
    assert a.read_bytes() == b.read_bytes()
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    entry = manifest["ethanol.npz"]
    assert entry["sha256"] == sha256_file(a)
    assert entry["n_frames"] == 2 and entry["temperature_K"] == 500.0 and entry["timestep_fs"] == 0.5
    with np.load(a) as f:
        assert f["pos"].shape == (2, 9, 3) and f["energy"].shape == (2,)


def test_shapes_units_and_labels(ethanol, run):
    n = len(ethanol)
    assert run["z"].dtype == np.int64 and run["z"].shape == (n,)
    assert np.array_equal(run["z"], ethanol.get_atomic_numbers())
    assert run["pos"].shape == (3, n, 3) and run["forces"].shape == (3, n, 3) and run["energy"].shape == (3,)
    assert np.allclose(run["time_fs"], [5.0, 7.5, 10.0])
    # eV, not Hartree: ethanol is about -310 eV (-11.4 Eh) in GFN2-xTB, within a few eV at 500 K
    assert np.all((run["energy"] > -320) & (run["energy"] < -300))
    # the stored labels are those of the stored positions
    atoms = ethanol.copy()
    atoms.calc = Mol.xtb_calculator()
    atoms.positions = run["pos"][-1]
    assert run["energy"][-1] == pytest.approx(atoms.get_potential_energy(), abs=1e-5)
    # the MD calculator starts each SCF from the previous wavefunction, a fresh one from the atomic guess:
    # the two agree to the SCF convergence (about 1e-4 eV/Å at accuracy 1)
    assert np.allclose(run["forces"][-1], atoms.get_forces(), atol=1e-3)
    # the frames moved (MD ran) but no atom went far
    assert not np.array_equal(run["pos"][0], run["pos"][1])
    assert np.abs(run["pos"]).max() < 5.0


def test_forces_are_minus_energy_gradient(run):
    atoms = Atoms(numbers=run["z"], positions=run["pos"][0])
    atoms.calc = Mol.xtb_calculator(accuracy=0.01)  # tight SCF convergence for the finite differences
    f = atoms.get_forces()
    assert np.allclose(f, run["forces"][0], atol=1e-3)
    h = 1e-3
    for i, c in [(0, 0), (8, 2)]:  # a carbon and the hydroxyl hydrogen
        e = []
        for s in (+h, -h):
            a = atoms.copy()
            a.calc = Mol.xtb_calculator(accuracy=0.01)
            a.positions[i, c] += s
            e.append(a.get_potential_energy())
        fd = -(e[0] - e[1]) / (2 * h)
        assert abs(f[i, c]) > 0.05  # a component large enough for the sign to mean something
        assert np.sign(fd) == np.sign(f[i, c])
        assert fd == pytest.approx(f[i, c], abs=2e-3)
    # moving an atom along its force lowers the energy
    step = 1e-3 * f / np.abs(f).max()
    a = atoms.copy()
    a.calc = Mol.xtb_calculator(accuracy=0.01)
    a.positions += step
    assert a.get_potential_energy() < atoms.get_potential_energy()


def test_to_graphs_follow_contract(run):
    graphs = Mol.to_graphs(run)
    assert len(graphs) == 3
    for g in graphs:
        validate(g, require=("z", "energy", "forces"))
        assert g.z.dtype == torch.long and g.pos.shape == (9, 3) and g.energy.shape == (1,)
        assert g.forces.shape == (9, 3) and g.pos.dtype == torch.get_default_dtype()


def test_hand_built_molecules_are_sound():
    for name, formula in [("malonaldehyde", "C3H4O2"), ("aspirin", "C9H8O4")]:
        atoms = Mol.make_molecule(name, relax=False)
        assert atoms.get_chemical_formula() == formula
        d = atoms.get_all_distances()
        np.fill_diagonal(d, np.inf)
        assert d.min() > 0.9
    assert len(Mol.make_molecule("aspirin", relax=False)) == 21


def test_reference_energies_and_species_shift():
    ref = Mol.reference_energies(["H", "O"])
    assert ref["H"] == pytest.approx(-10.7072, abs=1e-3)  # -0.393483 Eh, the xtb program's H atom
    spin = Mol.reference_energies(["H"], spin_polarized=True)
    assert spin["H"] < ref["H"]
    shift = Mol.fit_species_shift([np.array([1, 1, 8]), np.array([1, 1]), np.array([8, 8])], [-4.0, -2.0, -4.0])
    assert shift == pytest.approx({1: -1.0, 8: -2.0})


def test_bad_input():
    with pytest.raises(ValueError, match="valid choices: ethanol, malonaldehyde, aspirin"):
        Mol.make_molecule("benzene")
    with pytest.raises(ValueError, match="valid choices"):
        Mol.generate("/nonexistent", ["ethanol", "uracil"], 1)
    with pytest.raises(ValueError, match="unknown element 'Xx'; valid choices: H, "):
        Mol.reference_energies(["H", "Xx"])
    clash = Atoms("OH2", positions=[[0, 0, 0], [0.3, 0, 0], [0, 1.0, 0]])
    with pytest.raises(ValueError, match="overlap"):
        Mol.run_md(clash, n_frames=1)
    with pytest.raises(ValueError, match="overlap"):
        Mol.check_atoms(clash)
    with pytest.raises(ValueError):
        Mol.run_md(Mol.make_molecule("ethanol", relax=False), n_frames=0)
