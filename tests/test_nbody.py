"""The charged N-body simulator (EGNN protocol) and its shipped data file."""

import json

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from course_lib.data import validate, verify_checksum
from course_lib.simulate import nbody as nb
from course_lib.symmetry import equivariance_error, random_orthogonal, standard_transforms

DATA = nb._repo_data_dir()
FILE = DATA / nb.FILENAME
MANIFEST = DATA / nb.MANIFEST


def _coulomb_potential(pos, charge):
    e = 0.0
    for i in range(len(pos)):
        for j in range(i + 1, len(pos)):
            e += charge[i] * charge[j] / np.linalg.norm(pos[i] - pos[j])
    return e


@pytest.fixture(scope="module")
def smooth_run():
    """32 trajectories over 3000 steps (t = 3), frames every 10 steps."""
    s0 = nb.initial_state(32, seed=7)
    return s0, nb.integrate(s0["pos"], s0["vel"], s0["charge"], steps=3000, save_every=10, n_frames=301)


# --------------------------------------------------------------------------- physics


def test_forces_antisymmetric_and_momentum_conserved(smooth_run):
    s0 = nb.initial_state(64, seed=3)
    f = nb.forces(s0["pos"], s0["charge"], max_force=None)
    scale = np.abs(f).max(axis=(1, 2))
    assert np.all(np.abs(f.sum(axis=1)).max(axis=1) <= 1e-13 * np.maximum(scale, 1.0))  # Newton's third law

    s0, run = smooth_run
    free = ~run["clipped"]
    assert free.sum() >= 10, "too few trajectories without clipping"
    p = run["vel"][free].sum(axis=2)  # [S, F, 3] total momentum (unit masses)
    drift = np.abs(p - p[:, :1]).max()
    print(f"momentum drift over {len(run['time'])} frames, {free.sum()} trajectories: {drift:.1e}")
    assert drift < 1e-10


def test_energy_conserved_on_smooth_trajectories(smooth_run):
    s0, run = smooth_run
    smooth = ~run["clipped"] & (run["max_force"] < 10.0)  # no close encounter
    assert smooth.sum() >= 5
    e = nb.energy(run["pos"][smooth], run["vel"][smooth], run["charge"][smooth][:, None, :].repeat(301, axis=1))
    kin0 = 0.5 * (run["vel"][smooth, 0] ** 2).sum(axis=(1, 2))
    scale = np.maximum(np.abs(e[:, 0]), kin0)  # |E0| can be small when kinetic and potential energy cancel
    rel = (np.abs(e - e[:, :1]).max(axis=1) / scale).max()
    print(f"relative energy drift over t = 3 ({smooth.sum()} smooth trajectories): {rel:.1e}")
    assert rel < 1e-4


def test_energy_error_scales_as_dt_squared(smooth_run):
    s0, run = smooth_run
    k = int(np.argmax(np.where(run["clipped"], -1.0, run["max_force"])))  # closest unclipped encounter
    assert 1.0 < run["max_force"][k] < nb.MAX_FORCE
    errs = []
    for dt, steps in ((0.002, 1500), (0.001, 3000)):
        r = nb.integrate(s0["pos"][k], s0["vel"][k], s0["charge"][k], steps=steps, dt=dt, save_every=steps // 30)
        e = nb.energy(r["pos"], r["vel"], np.broadcast_to(s0["charge"][k], r["pos"].shape[:2]))
        errs.append(np.abs(e - e[0]).max())
    ratio = errs[0] / errs[1]
    print(f"max energy error dt=0.002: {errs[0]:.2e}, dt=0.001: {errs[1]:.2e}, ratio {ratio:.2f} (dt^2: 4)")
    assert 3.0 < ratio < 5.0


def test_force_branches_and_batch_size_give_identical_bits():
    s0 = nb.initial_state(nb._GATHER_MAX_S + 50, seed=2)
    big = nb.forces(s0["pos"], s0["charge"])  # pair-by-pair branch
    small = nb.forces(s0["pos"][:7], s0["charge"][:7])  # all-pairs gather branch
    np.testing.assert_array_equal(big[:7], small)
    np.testing.assert_array_equal(nb.forces(s0["pos"][3], s0["charge"][3]), big[3])  # single system


def test_forces_are_minus_gradient_of_potential():
    s0 = nb.initial_state(5, seed=11)
    h = 1e-6
    for pos, q in zip(s0["pos"], s0["charge"]):
        f = nb.forces(pos, q)
        assert np.linalg.norm(f, axis=1).max() < nb.MAX_FORCE  # clipping inactive here
        num = np.zeros_like(pos)
        for i in range(pos.shape[0]):
            for k in range(pos.shape[1]):
                dp = np.zeros_like(pos)
                dp[i, k] = h
                num[i, k] = -(_coulomb_potential(pos + dp, q) - _coulomb_potential(pos - dp, q)) / (2 * h)
        np.testing.assert_allclose(f, num, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(nb.energy(pos, np.zeros_like(pos), q), _coulomb_potential(pos, q), rtol=1e-13)


def _close_pair_state():
    rng = np.random.default_rng(0)
    pos = rng.standard_normal((5, 3))
    pos[1] = pos[0] + np.array([0.03, 0.02, -0.01])  # r = 0.037: |F| ~ 700
    return pos, np.array([1.0, -1.0, 1.0, 1.0, -1.0])


def test_clipping_caps_the_norm_and_keeps_the_direction():
    pos, q = _close_pair_state()
    raw = nb.forces(pos, q, max_force=None)
    f = nb.forces(pos, q)
    n_raw, n = np.linalg.norm(raw, axis=1), np.linalg.norm(f, axis=1)
    assert n_raw[0] > 5 * nb.MAX_FORCE and n_raw[1] > 5 * nb.MAX_FORCE
    assert np.all(n <= nb.MAX_FORCE * (1 + 1e-12))
    np.testing.assert_allclose(n[:2], nb.MAX_FORCE, rtol=1e-12)
    np.testing.assert_allclose(f[:2] / n[:2, None], raw[:2] / n_raw[:2, None], rtol=1e-12)  # same direction
    np.testing.assert_array_equal(f[2:], raw[2:])  # untouched below the cap

    # norm clipping commutes with rotations; the original per-component clipping does not
    R = random_orthogonal(3, det=-1, generator=1).numpy()
    err_norm = np.abs(nb.forces(pos @ R.T, q) - f @ R.T).max()
    err_comp = np.abs(nb.forces(pos @ R.T, q, clip="component") - nb.forces(pos, q, clip="component") @ R.T).max()
    print(f"O(3) error of the clipped forces: norm clipping {err_norm:.1e}, component clipping {err_comp:.1e}")
    assert err_norm < 1e-12 * nb.MAX_FORCE
    assert err_comp > 1.0


def test_simulator_is_e3_and_permutation_equivariant():
    """Transforming the initial state transforms the whole trajectory: the data respect E(3) x S_n."""
    s0 = nb.initial_state(4, seed=5)
    pos, q = _close_pair_state()  # plus one system that starts with clipping active
    graphs = [Data(pos=torch.from_numpy(p), vel=torch.from_numpy(v), charge=torch.from_numpy(c))
              for p, v, c in zip(s0["pos"], s0["vel"], s0["charge"])]
    graphs.append(Data(pos=torch.from_numpy(pos), vel=torch.zeros(5, 3, dtype=torch.float64),
                       charge=torch.from_numpy(q)))
    batch = Batch.from_data_list(graphs)

    def run(b):
        G = b.num_graphs
        r = nb.integrate(b.pos.numpy().reshape(G, 5, 3), b.vel.numpy().reshape(G, 5, 3),
                         b.charge.numpy().reshape(G, 5), steps=500, save_every=500, n_frames=2)  # t = 0.5
        assert r["clipped"][-1] and np.linalg.norm(r["pos"][:, 1] - r["pos"][:, 0], axis=-1).mean() > 0.1
        return Data(pos=torch.from_numpy(r["pos"][:, -1].reshape(-1, 3)),
                    vel=torch.from_numpy(r["vel"][:, -1].reshape(-1, 3)), charge=b.charge)

    transforms = standard_transforms(batch, generator=0)
    assert transforms["reflection"].det == pytest.approx(-1.0)
    for name, T in transforms.items():
        err = equivariance_error(run, batch, T)
        print(f"simulator {name}: error {err:.1e}")
        assert err < 1e-9, f"simulator breaks {name}: {err:.2e}"


# --------------------------------------------------------------------------- files


def test_generation_is_deterministic_and_prefix_stable(tmp_path):
    sizes = {"train": 6, "valid": 3, "test": 3}
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    ea, eb = nb.save_nbody(a, sizes=sizes), nb.save_nbody(b, sizes=sizes)
    assert a.read_bytes() == b.read_bytes() and ea["sha256"] == eb["sha256"]
    # a smaller split is a prefix of the full one (bit-identical after the float32 cast)
    shipped = nb.load_nbody_arrays("train")
    with np.load(a) as z:
        for key in ("pos", "vel", "target_pos", "charge"):
            np.testing.assert_array_equal(z[f"train_{key}"], shipped[key][:6])


def test_shipped_file_matches_manifest():
    assert FILE.is_file(), f"{FILE} is missing: run python -m course_lib.simulate.nbody --out data"
    verify_checksum(FILE, manifest=MANIFEST)
    man = json.loads(MANIFEST.read_text())
    entry = man["files"][nb.FILENAME]
    assert entry["size"] == FILE.stat().st_size < 2_000_000
    assert entry["sizes"] == nb.SIZES and entry["seeds"] == nb.SEEDS
    assert man["protocol"] == nb.protocol()
    for name, ref in nb.EXPECTED.items():  # built-in fallback agrees with the manifest
        assert {k: man["files"][name][k] for k in ref} == ref, name


def test_corrupted_copy_raises_checksum_error(tmp_path):
    raw = bytearray(FILE.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / nb.FILENAME).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum mismatch.*corrupt"):
        nb.load_nbody("train", root=tmp_path, n=3)


def test_loader_shapes_and_dtypes():
    graphs = nb.load_nbody("valid")
    assert len(graphs) == nb.SIZES["valid"]
    assert len(nb.load_nbody("val", n=7)) == 7
    g = graphs[0]
    validate(g)
    for key, shape in (("pos", (5, 3)), ("vel", (5, 3)), ("charge", (5,)), ("target_pos", (5, 3))):
        assert getattr(g, key).shape == shape and getattr(g, key).dtype == torch.float32, key
    q = torch.stack([g.charge for g in graphs])
    assert set(q.unique().tolist()) == {-1.0, 1.0}
    speed = torch.stack([g.vel for g in graphs]).norm(dim=-1)
    assert speed.mean() > 0.3  # the particles move (initial speed 0.5)


def test_input_and_target_are_frames_30_and_40():
    a = nb.load_nbody_arrays("test", n=3)
    assert a["meta"]["input_frame"] == 30 and a["meta"]["target_frame"] == 40
    assert a["meta"]["steps_between"] == 1000
    sim = nb.simulate(3, nb.SEEDS["test"], n_frames=42)  # frames 0..41, re-simulated from the seed
    f32 = sim["pos"].astype(np.float32)
    np.testing.assert_array_equal(a["pos"], f32[:, 30])
    np.testing.assert_array_equal(a["vel"], sim["vel"][:, 30].astype(np.float32))
    np.testing.assert_array_equal(a["target_pos"], f32[:, 40])
    assert not np.array_equal(a["target_pos"], f32[:, 39]) and not np.array_equal(a["target_pos"], f32[:, 41])
    np.testing.assert_array_equal(a["traj_pos"][:3, 0], a["pos"])
    np.testing.assert_array_equal(a["traj_pos"][:3, 10], a["target_pos"])
    assert a["traj_pos"].shape == (nb.N_TRAJ_FRAMES, 11, 5, 3)


def test_generated_on_the_fly_into_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(nb, "_repo_data_dir", lambda: tmp_path / "no_repo_data")
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    graphs = nb.load_nbody("train", n=10)  # generates the small set, verified against EXPECTED
    assert "generating" in capsys.readouterr().err
    assert (tmp_path / "cache" / "course_lib" / "data" / nb.SMALL_FILENAME).is_file()
    shipped = nb.load_nbody_arrays("train", root=DATA, n=10)
    np.testing.assert_array_equal(torch.stack([g.pos for g in graphs]).numpy(), shipped["pos"])
    nb.load_nbody("train", n=10)  # found in the cache now
    assert "generating" not in capsys.readouterr().err


def test_platform_mismatch_message(tmp_path, monkeypatch):
    monkeypatch.setattr(nb, "_repo_data_dir", lambda: tmp_path / "no_repo_data")
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(nb, "SMALL_SIZES", {"train": 4, "valid": 2, "test": 2})
    monkeypatch.setitem(nb.EXPECTED, nb.SMALL_FILENAME, {"sha256": "0" * 64, "content_sha256": "0" * 64})
    with pytest.raises(ValueError, match="different floating-point results"):
        nb.load_nbody("train", n=2)


def test_cli_small(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(nb, "SMALL_SIZES", {"train": 3, "valid": 2, "test": 2})  # the real one: see above
    assert nb.main(["--out", str(tmp_path), "--small"]) == 0
    assert "wall time" in capsys.readouterr().out
    verify_checksum(tmp_path / nb.SMALL_FILENAME, manifest=tmp_path / nb.MANIFEST)
    entry = json.loads((tmp_path / nb.MANIFEST).read_text())["files"][nb.SMALL_FILENAME]
    assert entry["sizes"] == {"train": 3, "valid": 2, "test": 2} and entry["seeds"] == nb.SEEDS
