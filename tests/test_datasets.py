"""Tests of the shipped particle datasets, their generator and their loaders (course_lib.datasets)."""

import json
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from course_lib import datasets as D
from course_lib import files
from course_lib.data import ContractError, sha256_file
from course_lib.simulate import make_datasets as M
from course_lib.simulate import particles2d as p2d

DATA = M.REPO_DATA_DIR
MANIFEST = json.loads((DATA / "manifest.json").read_text())


@pytest.fixture(scope="module")
def energy_val():
    return D.load_particles("energy", "val", root=DATA)


@pytest.fixture(scope="module")
def trajs():
    return D.load_particles("trajectories", "val", root=DATA)


@pytest.fixture(scope="module")
def crystal():
    return D.load_particles("crystal_trajectories", "test", root=DATA)


# --------------------------------------------------------------------------- shipped files


def test_shipped_files_match_manifest_and_package_checksums():
    packaged = json.loads(M.PACKAGE_CHECKSUMS.read_text())["files"]
    total = 0
    for name, entry in MANIFEST["files"].items():
        path = DATA / name
        assert sha256_file(path) == entry["sha256"] == packaged[name]["sha256"], name
        assert path.stat().st_size == entry["size_bytes"]
        total += entry["size_bytes"]
    assert set(MANIFEST["files"]) == set(D.FILES.values())
    print(f"total size of the shipped data: {total / 1e6:.2f} MB")
    assert total < 6e6


@pytest.mark.parametrize("name", list(D.FILES))
def test_split_sizes_match_manifest(name):
    splits = MANIFEST["files"][D.FILES[name]]["splits"]
    arrays = D.load_arrays(name, root=DATA)
    idx = [arrays[f"{s}_idx"] for s in ("train", "val", "test")]
    assert [len(i) for i in idx] == [splits[s] for s in ("train", "val", "test")]
    assert np.array_equal(np.sort(np.concatenate(idx)), np.arange(len(arrays["num_nodes"])))  # a partition
    assert len(D.load_particles(name, "val", root=DATA)) == splits["val"]
    if name == "energy":  # snapshots of one MD run all belong to the same split
        runs = [set(arrays["run"][i]) for i in idx]
        assert not (runs[0] & runs[1] or runs[0] & runs[2] or runs[1] & runs[2])


def test_energy_graphs_follow_the_contract(energy_val):
    for g in energy_val[:50]:
        n = g.num_nodes
        assert 4 <= n <= 24
        for key, shape in {"pos": (n, 2), "vel": (n, 2), "charge": (n,), "box": (1, 2), "energy": (1,),
                           "forces": (n, 2)}.items():
            assert tuple(g[key].shape) == shape and g[key].dtype == torch.float32, key
        assert g.pos.min() >= 0 and g.pos.max() < p2d.BOX
        assert set(g.charge.tolist()) <= {-1.0, 1.0}
    batch = Batch.from_data_list(energy_val[:8])
    assert batch.box.shape == (8, 2) and batch.energy.shape == (8,)


def test_energy_labels_equal_simulator_energy(energy_val):
    err_e = err_f = 0.0
    for g in energy_val[:100]:
        e, f = p2d.energy_and_forces(g.pos.double().numpy(), g.charge.double().numpy(), float(g.box[0, 0]))
        err_e = max(err_e, abs(e - float(g.energy)) / max(1.0, abs(e)))
        err_f = max(err_f, np.abs(f - g.forces.double().numpy()).max() / max(1.0, np.abs(f).max()))
    print(f"label errors (float32 storage): energy {err_e:.1e}, forces {err_f:.1e}")
    assert err_e < 1e-6 and err_f < 1e-6


def test_trajectory_graphs(trajs):
    for g in trajs:
        n = g.num_nodes
        assert g.traj_pos.shape == (n, 40, 2) and g.traj_vel.shape == (n, 40, 2)
        assert g.traj_pos.dtype == torch.float32 and g.fixed.dtype == torch.bool
        assert torch.equal(g.pos, g.traj_pos[:, 0]) and torch.equal(g.vel, g.traj_vel[:, 0])
        assert not g.fixed.any() and g.box.shape == (1, 2)
        assert g.traj_pos.min() >= 0 and g.traj_pos.max() < p2d.BOX
    assert abs(float(trajs[0].frame_dt) - p2d.DT * p2d.STEPS_PER_FRAME) < 1e-6
    batch = Batch.from_data_list(trajs[:3])
    assert batch.traj_pos.shape == (sum(g.num_nodes for g in trajs[:3]), 40, 2)


def test_stored_trajectories_conserve_energy():
    arrays = D.load_arrays("trajectories", root=DATA)
    drift = arrays["energy_drift"]
    print(f"relative energy drift of the shipped trajectories: max {drift.max():.2e}, median {np.median(drift):.2e}")
    assert drift.max() <= 1e-4
    # recompute one trajectory's energy from the stored (float32) frames
    n = int(arrays["num_nodes"][0])
    pos = arrays["traj_pos"][:n].transpose(1, 0, 2).astype(np.float64)
    e = p2d.energy(pos, np.broadcast_to(arrays["charge"][:n], (40, n)), p2d.BOX)
    assert np.allclose(e, arrays["potential_energy"][0], atol=1e-4)


def test_trajectory_pairs(trajs):
    pairs = D.trajectory_pairs(trajs[:5])
    assert len(pairs) == 39 * 5
    for k, p in enumerate(pairs):
        tr, t = trajs[k // 39], k % 39
        assert torch.equal(p.pos, tr.traj_pos[:, t]) and torch.equal(p.target_pos, tr.traj_pos[:, t + 1])
        assert torch.equal(p.vel, tr.traj_vel[:, t]) and torch.equal(p.target_vel, tr.traj_vel[:, t + 1])
    assert len(D.trajectory_pairs(trajs[:2], steps=3)) == 37 * 2
    assert torch.allclose(D.trajectory_pairs(trajs[:1], steps=3)[0].dt, 3 * trajs[0].frame_dt)
    with pytest.raises(ValueError, match="steps"):
        D.trajectory_pairs(trajs[:1], steps=40)


def test_crystal_atoms_never_move(crystal):
    lattice = torch.tensor(p2d.crystal_lattice()[0], dtype=torch.float32)
    for g in crystal:
        f = g.fixed
        assert int(f.sum()) == 16 and 4 <= int((~f).sum()) <= 12
        assert torch.equal(g.traj_pos[f], lattice[:, None, :].expand(16, 40, 2))
        assert torch.all(g.traj_vel[f] == 0) and torch.all(g.charge[f] == 1)
        assert (g.traj_pos[~f, 1:] != g.traj_pos[~f, :1]).any()  # the mobile particles do move


# --------------------------------------------------------------------------- loader errors and sources


def test_checksum_mismatch_is_detected(tmp_path):
    name = D.FILES["trajectories"]
    shutil.copy(DATA / name, tmp_path / name)
    shutil.copy(DATA / "manifest.json", tmp_path / "manifest.json")
    raw = bytearray((tmp_path / name).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / name).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum mismatch"):
        D.load_particles("trajectories", root=tmp_path)


def test_missing_files_say_how_to_regenerate(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="make_datasets --out DIR"):
        D.load_particles("energy", root=tmp_path)
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="COURSE_DATA_DIR"):
        D.load_particles("energy")
    with pytest.raises(ValueError, match="unknown dataset"):
        D.load_particles("molecules")
    with pytest.raises(ValueError, match="unknown split"):
        D.load_particles("energy", split="training", root=DATA)


def test_env_var_folder_is_used(tmp_path, monkeypatch):
    name = D.FILES["crystal_trajectories"]
    shutil.copy(DATA / name, tmp_path / name)  # no manifest here: the packaged checksums are used
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    assert D.data_path("crystal_trajectories") == tmp_path / name
    assert len(D.load_particles("crystal_trajectories", "val")) == MANIFEST["files"][name]["splits"]["val"]


def test_download_to_cache_and_offline_error(tmp_path, monkeypatch):
    assert files.raw_url("data/x.npz").startswith("https://raw.githubusercontent.com/")
    assert files.raw_url("data/x.npz").endswith("/main/data/x.npz")
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(D, "_REPO_DATA", tmp_path / "no-checkout")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(files.urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError, match="offline.*make_datasets --out DIR.*COURSE_DATA_DIR"):
        D.data_path("crystal_trajectories")
    monkeypatch.undo()
    # a "download" from the local file (file:// URL) lands in the cache and is verified
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    monkeypatch.setattr(D, "_REPO_DATA", tmp_path / "no-checkout")
    monkeypatch.setattr(files, "raw_url", lambda rel: (DATA.parent / rel).resolve().as_uri())
    path = D.data_path("crystal_trajectories")
    assert path == tmp_path / "course_lib" / "data" / D.FILES["crystal_trajectories"]
    assert sha256_file(path) == MANIFEST["files"][path.name]["sha256"]


def test_trajectory_fields_are_checked():
    bad = Data(pos=torch.zeros(3, 2), vel=torch.zeros(3, 2), charge=torch.ones(3), box=torch.ones(1, 2),
               fixed=torch.zeros(3, dtype=torch.bool), traj_pos=torch.zeros(3, 2), traj_vel=torch.zeros(3, 5, 2),
               frame_dt=torch.ones(1))
    with pytest.raises(ContractError, match="traj_pos"):
        D.trajectory_pairs([bad])


# --------------------------------------------------------------------------- the generator


def test_generator_is_bit_identical(tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        M.main(["--out", str(out), "--only", "energy", "--num-systems", "2"])
        M.main(["--out", str(out), "--only", "crystal_trajectories", "--num-systems", "1", "--num-frames", "3"])
    names = ["particles_energy.npz", "crystal_trajectories.npz", "manifest.json"]
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    # the small files load, and the manifest written with them is used for the checksum
    graphs = D.load_particles("crystal_trajectories", "all", root=outs[0])
    assert len(graphs) == 1 and graphs[0].traj_pos.shape[1] == 3
    assert len(D.load_particles("energy", "all", root=outs[0])) == 2 * M.DATASETS["particles_energy.npz"][
        "snapshots_per_run"]
    with np.load(outs[0] / "particles_energy.npz") as f:  # an ordinary npz
        assert f["pos"].dtype == np.float32


def test_write_npz_roundtrip(tmp_path):
    arrays = {"a": np.arange(5, dtype=np.int64), "b": np.ones((2, 3), dtype=np.float32),
              "c": np.array([True, False])}
    M.write_npz(tmp_path / "x.npz", arrays)
    M.write_npz(tmp_path / "y.npz", arrays)
    assert (tmp_path / "x.npz").read_bytes() == (tmp_path / "y.npz").read_bytes()
    with np.load(tmp_path / "x.npz") as f:
        for k, v in arrays.items():
            assert np.array_equal(f[k], v) and f[k].dtype == v.dtype
    assert isinstance(Path(M.REPO_DATA_DIR), Path)
