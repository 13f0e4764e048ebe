"""The O(3)/SO(3) mirror-image experiment (benchmarks/nequip_parity.py, notebook 07 section 8b) and the pieces it
adds to the library: rotamer labels (course_lib.observables.conformers) and the 1000 K out-of-distribution set
(course_lib.datasets.load_molecules_ood, course_lib.simulate.molecules.generate_ood)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from course_lib import symmetry as S
from course_lib.datasets import load_molecules, load_molecules_ood
from course_lib.models.nequip import NequIP
from course_lib.observables import ETHANOL_HOCC, conformers, dihedral_angles

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "benchmarks" / "results" / "nequip_parity.json"
MIRROR = S.orthogonal(S.reflection_matrix([1.0, 0.0, 0.0]), "mirror x -> -x")


def _load():
    spec = importlib.util.spec_from_file_location("nequip_parity", ROOT / "benchmarks" / "nequip_parity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _frames(n=4):
    frames = load_molecules("ethanol", "test", dtype=torch.float64)[:n]
    return Batch.from_data_list(frames)


def test_conformer_labels_and_the_mirror_swaps_the_gauche_wells():
    assert list(conformers([60.0, -60.0, 179.0, -150.0, 0.0])) == ["gauche+", "gauche-", "trans", "trans", "gauche+"]
    pos = np.stack([g.pos.double().numpy() for g in load_molecules("ethanol", "test", dtype=torch.float64)[:50]])
    mirrored = pos * np.array([-1.0, 1.0, 1.0])
    phi, phi_m = dihedral_angles(pos, *ETHANOL_HOCC), dihedral_angles(mirrored, *ETHANOL_HOCC)
    np.testing.assert_allclose(phi_m, -phi, atol=1e-9)
    swap = {"gauche+": "gauche-", "gauche-": "gauche+", "trans": "trans"}
    inner = np.abs(phi) > 1e-6  # phi = 0 exactly would stay gauche+
    assert [swap[c] for c in conformers(phi)[inner]] == list(conformers(phi_m)[inner])
    with pytest.raises(ValueError, match="trans_above"):
        conformers([10.0], trans_above=200)


def test_o3_model_gives_mirror_images_the_same_energy_and_so3_does_not():
    b = _frames()
    bm = MIRROR(b)
    assert torch.equal(bm.energy, b.energy) and torch.equal(bm.forces[:, 0], -b.forces[:, 0])
    torch.manual_seed(0)
    o3_model = NequIP(l_max=1, hidden=8, num_layers=3).double().eval()
    torch.manual_seed(0)
    so3_model = NequIP(l_max=1, hidden=8, num_layers=3, parity=False).double().eval()  # 3 blocks: (a x b) . c
    with torch.no_grad():
        assert float((o3_model(b) - o3_model(bm)).abs().max()) < 1e-10
        assert float((so3_model(b) - so3_model(bm)).abs().max()) > 1e-6  # can fail: the SO(3) model is chiral
    rot = S.rotation(3, generator=0)
    with torch.no_grad():
        assert float((so3_model(b) - so3_model(rot(b))).abs().max()) < 1e-10  # but rotation invariant


def test_ood_set_loads_verified_and_is_hotter():
    ood = load_molecules_ood("ethanol")
    assert len(ood) == 200 and all(g.pos.shape == (9, 3) for g in ood)
    manifest = json.loads((ROOT / "data" / "molecules" / "manifest.json").read_text())
    entry = manifest["ethanol_1000K.npz"]
    assert entry["temperature_K"] == 1000.0 and entry["seed"] != manifest["ethanol.npz"]["seed"]
    train = load_molecules("ethanol", "all")
    e_ood = torch.cat([g.energy for g in ood])
    e_500 = torch.cat([g.energy for g in train])
    assert float(e_ood.std()) > 1.3 * float(e_500.std())  # hotter: a wider energy distribution
    with pytest.raises(ValueError, match="no out-of-distribution set"):
        load_molecules_ood("aspirin")


def test_generate_ood_writes_a_verified_file(tmp_path):
    pytest.importorskip("tblite")
    from course_lib.data import sha256_file
    from course_lib.simulate import molecules as Mol

    Mol.main(["--ood", "--out", str(tmp_path), "--molecules", "ethanol", "--frames", "2", "--sample-every", "3",
              "--equilibration-steps", "5", "--temperature", "800"])
    path = tmp_path / "ethanol_800K.npz"
    entry = json.loads((tmp_path / "manifest.json").read_text())[path.name]
    assert entry["sha256"] == sha256_file(path) and entry["temperature_K"] == 800.0 and entry["n_frames"] == 2
    with np.load(path) as f:
        assert f["pos"].shape == (2, 9, 3)


def _check_schema(res):
    for key in ("command", "date", "machine", "protocol", "seeds", "seeds_done", "sets", "runs", "summary",
                "paired_differences", "scan", "ood_shipped"):
        assert key in res, key
    assert set(res["sets"]) == {"gplus_test", "gminus_test", "mirror_gplus_test", "ood_1000K", "ood_1000K_gplus"}
    for r in res["runs"]:
        for key in ("variant", "parity", "seed", "errors", "mirror_energy_gap_eV", "val_curve", "steps_run",
                    "scan_energy_eV"):
            assert key in r, key
        assert set(r["errors"]) == set(res["sets"])
        if r["parity"]:  # the O(3) model: mirror images have the same energy, to round-off
            assert r["mirror_energy_gap_eV"] < 1e-8
            for k in ("energy_mae_meV", "force_mae_meV_A"):
                assert r["errors"]["mirror_gplus_test"][k] == pytest.approx(r["errors"]["gplus_test"][k], abs=0.05)
    for row in res["ood_shipped"]:
        assert {"checkpoint", "model", "random_test", "ood_1000K"} <= set(row)


def test_quick_run_schema(tmp_path):
    res = _load().main(["--quick", "--out", str(tmp_path), "--no-progress"])
    on_disk = json.loads((tmp_path / "nequip_parity.json").read_text())
    _check_schema(on_disk)
    assert {r["variant"] for r in res["runs"]} == {"o3", "so3"}
    assert (tmp_path / "nequip_parity.md").exists()


def test_committed_results():
    if not COMMITTED.exists():
        pytest.skip("no committed results yet")
    res = json.loads(COMMITTED.read_text())
    _check_schema(res)
    assert len(res["seeds_done"]) >= 3
    steps = {r["steps_run"] for r in res["runs"]}
    assert len(steps) == 1  # equal budgets
