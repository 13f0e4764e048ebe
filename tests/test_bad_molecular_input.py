"""Bad molecular input gets a clear ValueError: unknown element symbols, atomic numbers outside a model's
embedding table, overlapping atoms (data contract, make_graph, loaders, simulator) and tampered data files."""

import json
import shutil

import numpy as np
import pytest
import torch

from course_lib import data as D
from course_lib.files import write_npz
from course_lib.models.schnet import SchNet

WATER = [[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]


def test_symbols_to_z():
    assert D.symbols_to_z(["H", "C", "N", "O", "Na", "Cl", "Og"]).tolist() == [1, 6, 7, 8, 11, 17, 118]
    assert D.symbols_to_z(["O", "H", "H"]).dtype == torch.long
    assert D.symbols_to_z([]).shape == (0,)
    with pytest.raises(ValueError, match=r"unknown element symbol 'Xx' at position 1; valid symbols are the 118 "
                                         r"elements H, He, Li, .*, Og$"):
        D.symbols_to_z(["C", "Xx", "H"])
    with pytest.raises(ValueError, match=r"'CL' at position 0 \(did you mean 'Cl'\? symbols are case-sensitive\)"):
        D.symbols_to_z(["CL"])
    with pytest.raises(ValueError, match="'X' at position 0"):  # ASE's dummy atom is not an element
        D.symbols_to_z(["X"])
    with pytest.raises(ValueError, match="unknown element symbol 6"):
        D.symbols_to_z([6, 1])
    with pytest.raises(ValueError, match=r"one per atom.*not the single string 'CH4'"):
        D.symbols_to_z("CH4")


def test_make_graph_takes_symbols():
    g = D.make_graph(WATER, z=["O", "H", "H"])
    assert g.z.tolist() == [8, 1, 1] and g.z.dtype == torch.long
    assert torch.equal(D.make_graph(WATER, z=[8, 1, 1]).z, g.z)
    with pytest.raises(ValueError, match="unknown element symbol 'Ow'"):
        D.make_graph(WATER, z=["Ow", "H", "H"])


def test_atomic_numbers_outside_the_embedding_table():
    # a SchNet for H..F (max_z = 9) given sodium chloride: refused, naming the table, not an index error
    nacl = D.make_graph([[0.0, 0.0, 0.0], [2.36, 0.0, 0.0]], z=["Na", "Cl"])
    with pytest.raises(ValueError, match=r"atomic numbers in \[11, 17\], outside the embedding table 1..max_z = 1..9"):
        SchNet(max_z=9)(nacl)
    nacl.energy = torch.tensor([-5.0])
    with pytest.raises(ValueError, match="max_z = 1..9"):
        SchNet(max_z=9).fit_energy_scale([nacl])
    assert SchNet(max_z=17)(nacl).shape == (1,)


def test_overlapping_atoms_in_the_data_contract():
    clash = [[0.0, 0.0, 0.0], [0.2, 0.0, 0.0], [0.0, 1.0, 0.0]]
    g = D.make_graph(clash, z=["O", "H", "H"])  # the check is opt-in: off for make_graph / validate by default
    with pytest.raises(D.ContractError, match=r"atoms 0 \(O\) and 1 \(H\) overlap: 0.200 Å apart \(less than 0.5 Å\)"):
        D.validate(g, min_distance=D.MIN_ATOM_DISTANCE)
    with pytest.raises(ValueError, match="overlap: 0.200 Å"):
        D.make_graph(clash, z=["O", "H", "H"], min_distance=D.MIN_ATOM_DISTANCE)
    D.validate(D.make_graph(WATER, z=["O", "H", "H"]), min_distance=D.MIN_ATOM_DISTANCE)
    assert D.check_min_distance(WATER) == pytest.approx(0.96, abs=1e-3)
    assert D.check_min_distance([[0.0, 0.0, 0.0]]) == float("inf")
    # large graphs are checked in blocks of rows: a clash between atom 3 and atom 1400 is still found
    grid = torch.stack(torch.meshgrid(*[torch.arange(12.0)] * 3, indexing="ij"), -1).reshape(-1, 3)  # 1728 atoms
    grid[1400] = grid[3] + torch.tensor([0.1, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"atoms 3 and 1400 overlap: 0.100 Å"):
        D.check_min_distance(grid)


def test_overlapping_atoms_in_the_simulator_and_to_graphs():
    pytest.importorskip("tblite")
    from ase import Atoms

    from course_lib.simulate import molecules as Mol

    clash = Atoms("OH2", positions=[[0, 0, 0], [0.3, 0, 0], [0, 1.0, 0]])
    with pytest.raises(ValueError, match=r"H2O: atoms 0 \(O\) and 1 \(H\) overlap: 0.300 Å"):
        Mol.check_atoms(clash)
    arrays = {"z": np.array([8, 1, 1]), "pos": np.array([WATER, [[0, 0, 0], [0.3, 0, 0], [0, 1.0, 0]]]),
              "energy": np.zeros(2), "forces": np.zeros((2, 3, 3))}
    with pytest.raises(ValueError, match=r"atoms 0 \(O\) and 1 \(H\) overlap: 0.300 Å"):
        Mol.to_graphs(arrays)


def _tiny_sets(tmp_path):
    """A tiny g2 set and a tiny ethanol set in one folder (the same manifest)."""
    from course_lib.simulate import molecules as Mol

    out = tmp_path / "molecules"
    Mol.generate_g2(out, ["H2O", "LiF"], n_frames=2, sample_every=2, equilibration_steps=2, verbose=False)
    Mol.generate(out, ["ethanol"], n_frames=2, sample_every=2, equilibration_steps=2)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("tblite")
    return _tiny_sets(tmp_path_factory.mktemp("bad"))


def test_loaders_refuse_overlapping_atoms(tiny, tmp_path):
    from course_lib.datasets import G2_FILE, load_g2_conformers

    bad = tmp_path / "molecules"
    shutil.copytree(tiny, bad)
    with np.load(bad / G2_FILE) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["pos"][7] = arrays["pos"][6] + [0.0, 0.0, 0.1]  # frame 2 (LiF, rows 6-7): Li and F 0.1 Å apart
    write_npz(bad / G2_FILE, arrays)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest[G2_FILE]["sha256"] = D.sha256_file(bad / G2_FILE)  # a consistent, but physically wrong, file
    (bad / "manifest.json").write_text(json.dumps(manifest))
    assert len(load_g2_conformers("all", root=tiny)) == 4
    with pytest.raises(D.ContractError, match=r"frame 2 \(LiF\): atoms 0 \(Li\) and 1 \(F\) overlap: 0.100 Å"):
        load_g2_conformers("all", root=bad)


@pytest.mark.parametrize("which", ["g2", "ethanol"])
def test_tampered_file_checksum(tiny, tmp_path, which):
    from course_lib.data import sha256_file
    from course_lib.datasets import G2_FILE, load_g2_conformers, load_molecules

    filename, load, command = {
        "g2": (G2_FILE, lambda root: load_g2_conformers("all", root=root),
               "python -m course_lib.simulate.molecules --g2 --out DIR"),
        "ethanol": ("ethanol.npz", lambda root: load_molecules("ethanol", "all", root=root),
                    "python -m course_lib.simulate.molecules --out DIR --frames 1000"),
    }[which]
    bad = tmp_path / "molecules"
    shutil.copytree(tiny, bad)
    expected = sha256_file(bad / filename)
    with open(bad / filename, "r+b") as f:
        f.seek(60)
        f.write(b"\x00\x01\x02")
    got = sha256_file(bad / filename)
    with pytest.raises(ValueError) as err:
        load(bad)
    msg = str(err.value)
    assert "checksum mismatch" in msg and f"expected sha256 {expected}, got {got}" in msg
    assert command in msg and "root=DIR" in msg
    assert len(load(tiny)) in (2, 4)  # the original still loads
