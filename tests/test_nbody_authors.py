"""benchmarks/nbody_authors.py without the authors' code or the network: the export writes what their loader reads
(checked by a small stand-in loader written from the shapes documented in the script, not from their code), the
course's arrays round-trip, a missing source gives a clear error, the log parser and the aggregation work on a tiny
fake log, and the shipped results (when present) have the protocol's shape."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "nbody_authors.json"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("nbody_authors", ROOT / "benchmarks" / "nbody_authors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fake_authors_loader(folder: Path, split: str, frame_0: int = 30, frame_T: int = 40):
    """What their NBodyDataset does with the files of `--dataset nbody_small`, restated from its documented
    layout: loc/vel [S, T, 3, N] -> [S, T, N, 3]; edge attribute of edge (i, j), i != j, = edges[:, i, j]."""
    sfx = f"{split}_charged5_initvel1small"
    loc, vel, edges, charges = (np.load(folder / f"{k}_{sfx}.npy") for k in ("loc", "vel", "edges", "charges"))
    loc, vel = loc.transpose(0, 1, 3, 2), vel.transpose(0, 1, 3, 2)
    n = loc.shape[2]
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    edge_attr = np.stack([edges[:, i, j] for i, j in pairs], axis=1)[..., None]
    return loc[:, frame_0], vel[:, frame_0], edge_attr, charges, loc[:, frame_T]


def test_export_matches_their_layout_and_round_trips(bench, tmp_path):
    from course_lib.simulate.nbody import load_nbody_arrays

    sizes = {"train": 7, "valid": 5, "test": 4}
    written = bench.export(tmp_path, sizes)
    assert len(written) == 12
    for split, n in sizes.items():
        a = load_nbody_arrays(split, n=n)
        sfx = f"{split}_charged5_initvel1small"
        assert np.load(tmp_path / f"loc_{sfx}.npy").shape == (n, 41, 3, 5)
        assert np.load(tmp_path / f"vel_{sfx}.npy").shape == (n, 41, 3, 5)
        assert np.load(tmp_path / f"edges_{sfx}.npy").shape == (n, 5, 5)
        assert np.load(tmp_path / f"charges_{sfx}.npy").shape == (n, 5, 1)
        assert all(np.load(p).dtype == np.float32 for p in tmp_path.glob(f"*_{sfx}.npy"))
        pos, vel, edge_attr, charges, target = fake_authors_loader(tmp_path, split)
        np.testing.assert_array_equal(pos, a["pos"])
        np.testing.assert_array_equal(vel, a["vel"])
        np.testing.assert_array_equal(target, a["target_pos"])
        np.testing.assert_array_equal(charges[..., 0], a["charge"])
        q = a["charge"].astype(np.float32)
        assert edge_attr.shape == (n, 20, 1)
        np.testing.assert_array_equal(edge_attr[:, 0, 0], q[:, 0] * q[:, 1])  # first edge: (0, 1)
        # every other frame is NaN: reading the wrong frame would poison the loss
        assert np.isnan(np.load(tmp_path / f"loc_{sfx}.npy")[:, 29]).all()


def test_missing_source_says_how_to_get_it(bench, tmp_path):
    with pytest.raises(SystemExit, match="git clone https://github.com/vgsatorras/egnn"):
        bench.check_authors_src(None)
    with pytest.raises(SystemExit, match="no main_nbody.py"):
        bench.check_authors_src(str(tmp_path))
    with pytest.raises(SystemExit, match="--authors-src is required"):
        bench.main(["--seed", "0"])


FAKE_LOG = """[t=4.0] Namespace(...)
[t=8.0] train epoch 0 avg loss: 0.15000
[t=9.0] ==> val epoch 0 avg loss: 0.10000
[t=9.5] ==> test epoch 0 avg loss: 0.11000
[t=9.5] *** Best Val Loss: 0.10000 \t Best Test Loss: 0.11000 \t Best epoch 0
[t=12.5] train epoch 1 avg loss: 0.08000
[t=13.5] ==> val epoch 1 avg loss: 0.05000
[t=14.0] ==> test epoch 1 avg loss: 0.06000
[t=14.0] *** Best Val Loss: 0.05000 \t Best Test Loss: 0.06000 \t Best epoch 1
[t=16.0] train epoch 2 avg loss: 0.07000
[t=17.0] ==> val epoch 2 avg loss: 0.90000
[t=17.5] ==> test epoch 2 avg loss: 0.80000
[t=17.5] *** Best Val Loss: 0.05000 \t Best Test Loss: 0.06000 \t Best epoch 1
"""


def test_parse_fake_log_and_aggregate(bench):
    r = bench.parse_log(FAKE_LOG, test_curve=[0.11, 0.0601234, 0.8])
    assert r["epochs_run"] == 3 and r["best_epoch"] == 2 and r["best_epoch_theirs"] == 1
    assert r["val_mse"] == 0.05 and r["test_mse"] == 0.0601234  # full precision from losess.json
    assert r["val_curve"] == [0.1, 0.05, 0.9] and r["train_curve"] == [0.15, 0.08, 0.07]
    assert r["s_per_epoch"] == [4.0, 3.0]  # end of the previous test evaluation -> this epoch's validation
    assert r["s_per_epoch_median"] == 3.5 and r["s_train_median"] == 2.5
    assert r["max_val_after_best"] == 0.9 and math.isclose(r["max_val_after_best_ratio"], 18.0)
    runs = [dict(r, seed=s, test_mse=t) for s, t in ((2, 0.3), (0, 0.1), (1, 0.2))]
    res = bench.aggregate_runs(runs, {"shims": ["x"]})
    s = res["summary"]
    assert s["seeds"] == [0, 1, 2] and math.isclose(s["test_mse_mean"], 0.2)
    assert math.isclose(s["test_mse_se"], 0.1 / math.sqrt(3))
    assert s["max_val_spike"] == [18.0, 18.0, 18.0]  # 0.9 after a best of 0.05
    with pytest.raises(SystemExit, match="twice"):
        bench.aggregate_runs(runs + runs[:1], {})
    with pytest.raises(ValueError, match="test_interval 1"):
        bench.parse_log(FAKE_LOG.replace("val epoch 1", "val epoch 5"))


def test_shipped_results_follow_the_protocol():
    if not RESULTS.exists():
        pytest.skip("benchmarks/results/nbody_authors.json not shipped")
    res = json.loads(RESULTS.read_text())
    s = res["summary"]
    assert len(s["seeds"]) >= 3 and res["authors_commit"] and res["shims"]
    assert res["sizes"] == {"train": 3000, "valid": 2000, "test": 2000}
    for r in res["runs"]:
        assert len(r["val_curve"]) == r["epochs_run"] == r["epochs"]
        assert r["val_mse"] == min(r["val_curve"])
        assert r["test_mse"] == pytest.approx(r["test_curve"][r["best_epoch"] - 1])
