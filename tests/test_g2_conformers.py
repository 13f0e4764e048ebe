"""The multi-element g2 conformer set: selection rule, deterministic generation, ragged layout, by-molecule splits,
the loader load_g2_conformers and the shipped file."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tblite")

from course_lib import datasets as D  # noqa: E402
from course_lib.data import sha256_file, validate  # noqa: E402
from course_lib.simulate import molecules as Mol  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "molecules"
TINY = ["H2O", "LiF", "NaCl", "HCl", "NH3", "CH4", "CO", "HF", "SiH4", "PH3"]  # 10 molecules, 9 elements
TINY_MD = {"n_frames": 3, "sample_every": 2, "equilibration_steps": 2}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("g2") / "molecules"
    Mol.generate_g2(out, TINY, seed=5, verbose=False, **TINY_MD)
    return out


def test_selection_rule():
    keep, excluded = Mol.select_g2()
    assert len(keep) == 118 and len(keep) + len(excluded) == 162  # ASE's g2 collection has 162 entries
    assert keep == sorted(keep)
    for name in ("H2O", "LiF", "Na2", "AlCl3", "BF3", "SiH2_s1A1d", "CH2_s1A1d", "H2"):  # closed-shell singlets
        assert name in keep, name
    assert "radical" in excluded["OH"] and "radical" in excluded["BeH"] and "radical" in excluded["NO"]
    assert "open shell" in excluded["O2"] and "open shell" in excluded["CH2_s3B1d"]
    assert excluded["Na"] == "single atom"
    with pytest.raises(ValueError, match=r"'OH' is not available \(odd number of electrons.*valid choices: "):
        Mol.generate_g2("/nonexistent", ["H2O", "OH"])
    with pytest.raises(ValueError, match="'water' is not available .not in ase.collections.g2"):
        Mol.generate_g2("/nonexistent", ["water"])


def test_connectivity_check():
    z = np.array([1, 1])
    assert Mol.is_connected(z, [[0, 0, 0], [0.74, 0, 0]])
    assert Mol.is_connected(z, [[0, 0, 0], [0.95, 0, 0]])  # a thermally stretched H2 (1.3x) is still bonded
    assert not Mol.is_connected(z, [[0, 0, 0], [2.0, 0, 0]])


def test_cli_bit_identical_and_seeded(tmp_path):
    args = ["--g2", "--molecules", "H2O,LiF", "--frames", "2", "--sample-every", "2", "--equilibration-steps", "2"]
    for d in ("a", "b"):
        Mol.main(["--out", str(tmp_path / d), *args])
    Mol.main(["--out", str(tmp_path / "c"), *args, "--seed", "1"])
    for f in (Mol.G2_FILE, Mol.G2_SPLITS_FILE):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert (tmp_path / "a" / Mol.G2_FILE).read_bytes() != (tmp_path / "c" / Mol.G2_FILE).read_bytes()
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    entry = manifest[Mol.G2_FILE]
    assert entry["sha256"] == sha256_file(tmp_path / "a" / Mol.G2_FILE)
    assert entry["molecules"] == ["H2O", "LiF"] and entry["n_frames"] == 4 and entry["temperature_K"] == 500.0
    assert entry["element_counts"] == {"H": {"molecules": 1, "atoms": 4}, "Li": {"molecules": 1, "atoms": 2},
                                       "O": {"molecules": 1, "atoms": 2}, "F": {"molecules": 1, "atoms": 2}}
    # the seed of a molecule does not depend on which other molecules run
    Mol.main(["--out", str(tmp_path / "d"), *args[:2], "LiF", *args[3:]])
    with np.load(tmp_path / "a" / Mol.G2_FILE) as a, np.load(tmp_path / "d" / Mol.G2_FILE) as d:
        assert np.array_equal(a["pos"][6:], d["pos"]) and np.array_equal(a["energy"][2:], d["energy"])


def test_ragged_layout_and_labels(tiny):
    with np.load(tiny / Mol.G2_FILE) as f:
        a = {k: f[k] for k in f.files}
    assert list(a) == ["names", "z", "pos", "forces", "energy", "n_atoms", "molecule"]
    assert a["names"].tolist() == TINY
    F = len(TINY) * 3
    assert a["energy"].shape == a["n_atoms"].shape == a["molecule"].shape == (F,)
    assert a["z"].shape == (a["n_atoms"].sum(),) and a["pos"].shape == a["forces"].shape == (a["n_atoms"].sum(), 3)
    assert a["z"].dtype == np.int64 and a["pos"].dtype == np.float64
    assert a["molecule"].tolist() == np.repeat(np.arange(len(TINY)), 3).tolist()
    # frame 4 is the second frame of LiF: rows 9 (3 x H2O) + 2 = 11 and 12
    ptr = np.concatenate([[0], np.cumsum(a["n_atoms"])])
    assert ptr[4] == 11 and a["z"][11:13].tolist() == [3, 9]
    # its label is the xTB energy and force of its positions
    from ase import Atoms

    atoms = Atoms(numbers=a["z"][11:13], positions=a["pos"][11:13])
    atoms.calc = Mol.xtb_calculator()
    assert atoms.get_potential_energy() == pytest.approx(a["energy"][4], abs=1e-4)
    assert np.allclose(atoms.get_forces(), a["forces"][11:13], atol=2e-3)
    assert not np.array_equal(a["pos"][9:11], a["pos"][11:13])  # the frames differ (MD ran)


def test_molecule_splits_cover_elements():
    zs = [np.array([1, 8]), np.array([3, 9]), np.array([6, 1]), np.array([1, 7])] * 5  # 20 molecules
    zs[7] = np.array([11, 17])  # the only Na / Cl molecule: must land in train
    for seed in range(20):
        s = Mol.make_molecule_splits(zs, seed)
        assert sorted(np.concatenate(list(s.values())).tolist()) == list(range(20))
        assert 7 in s["train"]
        train_elements = {int(v) for k in s["train"] for v in zs[k]}
        for part in ("val", "test"):
            assert all(set(zs[k].tolist()) <= train_elements for k in s[part])
    assert len(s["val"]) == len(s["test"]) == 2
    assert all(np.array_equal(Mol.make_molecule_splits(zs, 3)[k], Mol.make_molecule_splits(zs, 3)[k]) for k in s)


def test_loader_splits_by_molecule(tiny):
    parts = {s: D.load_g2_conformers(s, root=tiny) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [24, 3, 3]
    names = {s: {g.name for g in parts[s]} for s in parts}
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"])
    assert not (names["val"] & names["test"])
    assert names["train"] | names["val"] | names["test"] == set(TINY)
    train_z = {int(v) for g in parts["train"] for v in g.z}
    assert all(set(g.z.tolist()) <= train_z for s in ("val", "test") for g in parts[s])
    for g in parts["train"]:
        validate(g, require=("z", "energy", "forces"))
        assert g.pos.dtype == torch.float32 and g.forces.shape == g.pos.shape and isinstance(g.name, str)
    everything = D.load_g2_conformers("all", root=tiny, dtype=torch.float64)
    assert len(everything) == 30 and everything[0].energy.dtype == torch.float64
    lif = [g for g in everything if g.name == "LiF"]
    assert len(lif) == 3 and lif[0].z.tolist() == [3, 9]
    # PyG batches graphs of different molecules (the names become a list)
    from torch_geometric.data import Batch

    b = Batch.from_data_list(everything[:5])
    assert b.num_graphs == 5 and b.name[:3] == ["H2O"] * 3 and b.energy.shape == (5,)
    with pytest.raises(ValueError, match="unknown split"):
        D.load_g2_conformers("training", root=tiny)


@pytest.mark.skipif(not (DATA / D.G2_FILE).exists(), reason="g2 conformer set not shipped")
def test_shipped_g2_set():
    manifest = json.loads((DATA / "manifest.json").read_text())
    entry = manifest[D.G2_FILE]
    assert sha256_file(DATA / D.G2_FILE) == entry["sha256"]
    assert (DATA / D.G2_FILE).stat().st_size < 2_000_000
    assert entry["n_molecules"] == 118 and entry["n_frames"] == 118 * 8
    assert set(entry["element_counts"]) == {"H", "Li", "B", "C", "N", "O", "F", "Na", "Al", "Si", "P", "S", "Cl"}
    parts = {s: D.load_g2_conformers(s) for s in ("train", "val", "test")}
    assert sum(len(p) for p in parts.values()) == entry["n_frames"]
    assert not ({g.name for g in parts["train"]} & {g.name for g in parts["test"]})
    # one label recomputed, on a molecule of third-row elements
    g = next(g for g in D.load_g2_conformers("all", dtype=torch.float64) if g.name == "AlCl3")
    from ase import Atoms

    atoms = Atoms(numbers=g.z.numpy(), positions=g.pos.numpy())
    atoms.calc = Mol.xtb_calculator()
    assert atoms.get_potential_energy() == pytest.approx(float(g.energy), abs=1e-3)
