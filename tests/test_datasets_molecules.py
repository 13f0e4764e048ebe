"""Loaders of the GFN2-xTB molecular data sets (course_lib.datasets.load_molecules)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tblite")

from course_lib import datasets as D  # noqa: E402
from course_lib.data import sha256_file  # noqa: E402
from course_lib.simulate import molecules as Mol  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "molecules"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("mol") / "molecules"
    Mol.generate(out, ["ethanol"], n_frames=10, sample_every=2, equilibration_steps=4)
    return out


def test_tiny_generated_set_loads_by_split(tiny):
    parts = {s: D.load_molecules("ethanol", s, root=tiny) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    g = parts["train"][0]
    assert g.z.dtype == torch.long and g.pos.shape == (9, 3) and g.forces.shape == (9, 3) and g.energy.shape == (1,)
    assert float(g.energy) < -100  # total xTB energy in eV
    everything = D.load_molecules("ethanol", "all", root=tiny, dtype=torch.float64)
    with np.load(tiny / "ethanol_splits.npz") as f:
        idx = np.concatenate([f["train"], f["val"], f["test"]])
    assert sorted(idx.tolist()) == list(range(10))  # the splits partition the frames
    assert everything[0].pos.dtype == torch.float64


def test_checksum_mismatch_and_bad_names(tiny, tmp_path):
    bad = tmp_path / "molecules"
    shutil.copytree(tiny, bad)
    with open(bad / "ethanol.npz", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="checksum mismatch"):
        D.load_molecules("ethanol", "train", root=bad)
    with pytest.raises(ValueError, match="unknown molecule"):
        D.load_molecules("benzene", root=tiny)
    with pytest.raises(ValueError, match="unknown split"):
        D.load_molecules("ethanol", "training", root=tiny)


@pytest.mark.skipif(not (DATA / "manifest.json").exists(), reason="molecular data not shipped")
def test_shipped_files_match_manifest_and_labels():
    manifest = json.loads((DATA / "manifest.json").read_text())
    for name, entry in manifest.items():
        assert sha256_file(DATA / name) == entry["sha256"], name
    for mol in D.MOLECULES:
        train, val, test = (D.load_molecules(mol, s) for s in ("train", "val", "test"))
        n = manifest[f"{mol}.npz"]["n_frames"]
        assert len(train) + len(val) + len(test) == n
    # the stored label of one frame is the xTB energy of its stored positions
    g = D.load_molecules("ethanol", "test", dtype=torch.float64)[0]
    atoms = Mol.make_molecule("ethanol", relax=False)
    atoms.set_positions(g.pos.numpy())
    atoms.calc = Mol.xtb_calculator()
    assert atoms.get_potential_energy() == pytest.approx(float(g.energy), abs=1e-3)


@pytest.mark.skipif(not (DATA / "manifest.json").exists(), reason="molecular data not shipped")
def test_molecule_split_frames_are_the_loaded_frames():
    everything = D.load_molecules("ethanol", "all")
    for scheme in D.MOLECULE_SPLIT_SCHEMES:
        frames = D.molecule_split_frames("ethanol", scheme)
        assert np.allclose(np.diff(frames["time_fs"]), 10.0)  # one frame every 10 fs (data/README.md)
        for split in ("train", "val", "test"):
            graphs = D.load_molecules("ethanol", split, scheme=scheme)
            assert len(graphs) == len(frames[split])
            k = int(frames[split][-1])
            assert torch.equal(graphs[-1].pos, everything[k].pos), (scheme, split)
    with pytest.raises(ValueError, match="unknown split scheme"):
        D.molecule_split_frames("ethanol", "blocks")
