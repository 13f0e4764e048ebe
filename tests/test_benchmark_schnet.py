"""The SchNet molecular benchmark runs end to end (quick mode) and its shipped results match its checkpoints."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_final_and_curve(tmp_path, one_thread):
    bench = _load("schnet_molecules")
    res = bench.main(["final", "--quick", "--molecules", "ethanol", "--out", str(tmp_path), "--no-progress"])
    row = res["molecules"]["ethanol"]
    assert row["force_mae_meV_A"] > 0 and row["energy_mae_meV"] > 0 and row["n_train"] == 40
    assert (tmp_path / "schnet_ethanol.pt").exists()
    curve = bench.main(["curve", "--quick", "--sizes", "10,20", "--seeds", "0,1", "--out", str(tmp_path),
                        "--no-progress"])
    assert set(curve["runs"]) == {"energy", "forces"}
    on_disk = json.loads((tmp_path / "schnet_curve.json").read_text())
    runs = on_disk["runs"]["forces"]
    assert [(r["seed"], r["n_train"]) for r in runs] == [(0, 10), (0, 20), (1, 10), (1, 20)]
    assert len(list((tmp_path / "schnet_curve").glob("*.json"))) == 8  # one file per finished run
    for r in runs:
        assert len(r["val_curve"]) == r["epochs_run"] and "plateaued" in r["plateau"]
    assert "time blocks" in on_disk["split"] and "random_subset" in on_disk["subsets"]
    # a rerun resumes: finished runs are skipped (the files are not rewritten)
    stamp = (tmp_path / "schnet_curve" / "forces_n10_s0.json").stat().st_mtime_ns
    bench.main(["curve", "--quick", "--sizes", "10", "--seeds", "0", "--out", str(tmp_path), "--no-progress"])
    assert (tmp_path / "schnet_curve" / "forces_n10_s0.json").stat().st_mtime_ns == stamp


def test_random_subsets_differ_between_seeds_and_nest_within_a_seed():
    from course_lib.stats import random_subset

    a0, b0, a1 = random_subset(range(700), 25, 0), random_subset(range(700), 50, 0), random_subset(range(700), 25, 1)
    assert set(a0) <= set(b0) and set(a0) != set(a1)
    assert a0.max() > 350  # drawn across the whole pool, not its first frames (train[:n] was the first 0.25 ps)


def test_time_splits_separate_train_val_test_in_time():
    import numpy as np

    from course_lib.datasets import load_molecules
    from course_lib.simulate.molecules import make_time_splits

    s = make_time_splits(1000)
    assert s["train"].max() + 25 < s["val"].min() and s["val"].max() + 25 < s["test"].min()
    assert [len(s[k]) for k in ("train", "val", "test")] == [700, 75, 175]
    shipped = np.load(ROOT / "data" / "molecules" / "ethanol_time_splits.npz")
    assert all(np.array_equal(shipped[k], s[k]) for k in s)
    # the random splits (the old files) still load, and differ
    assert len(load_molecules("ethanol", "test")) == 100
    assert len(load_molecules("ethanol", "test", scheme="time")) == 175
    with pytest.raises(ValueError, match="unknown split scheme"):
        load_molecules("ethanol", "test", scheme="block")


def test_quick_nequip_curve(tmp_path, one_thread):
    bench = _load("nequip_learning_curve")
    res = bench.main(["--lmax", "0", "--quick", "--sizes", "10", "--features", "4", "--layers", "1",
                      "--out", str(tmp_path), "--no-progress"])
    assert res["runs"][0]["n_train"] == 10 and res["runs"][0]["force_mae_meV_A"] > 0
    assert not list(tmp_path.glob("*.pt"))  # never over the shipped pilot checkpoints nequip_curve_l*.pt
    bench.main(["--lmax", "0", "--quick", "--sizes", "10", "--features", "4", "--layers", "1",
                "--out", str(tmp_path / "saved"), "--no-progress", "--save-checkpoint"])
    assert [p.name for p in (tmp_path / "saved").glob("*.pt")] == ["nequip_curve_time_l0.pt"]


def test_nequip_curve_aggregate(tmp_path, one_thread):
    """Per-seed files of two l_max values -> mean ± s.e., slopes, differences paired by seed, markdown."""
    bench = _load("nequip_learning_curve")
    for l_max in (0, 1):
        for seed in (0, 1, 2):
            bench.main(["--lmax", str(l_max), "--seed", str(seed), "--quick", "--sizes", "10,20", "--features", "4",
                        "--layers", "1", "--out", str(tmp_path), "--no-progress"])
    assert (tmp_path / "nequip_curve_l1_s2.json").exists()
    res = bench.main(["--aggregate", "--out", str(tmp_path)])
    assert res["seeds"] == {"l0": [0, 1, 2], "l1": [0, 1, 2]} and res["incomplete"] == []
    per_seed = res["per_seed"]["l1"]["force_mae_meV_A"]["20"]
    assert len(per_seed) == 3 and res["summary"]["l1"]["20"]["force_mae_meV_A"]["mean"] == pytest.approx(
        sum(per_seed) / 3)
    assert res["slopes"]["l0"]["n"] == 3 and len(res["slopes"]["l0"]["per_seed"]) == 3
    pair = res["paired_differences"]["l1-l0"]
    assert pair["seeds"] == [0, 1, 2]
    assert pair["slope"]["mean"] == pytest.approx(res["slopes"]["l1"]["mean"] - res["slopes"]["l0"]["mean"])
    assert "| 1 | 0, 1, 2 |" in (tmp_path / "nequip_curve_summary.md").read_text()
    with pytest.raises(FileNotFoundError):  # no random-split files there
        bench.main(["--aggregate", "--split", "random", "--out", str(tmp_path)])
    # a sweep extended by a size that one file has: --sizes summarises the sizes every file holds
    path = tmp_path / "nequip_curve_l0_s1.json"
    one = json.loads(path.read_text())
    one["sizes"], one["runs"] = [10, 15, 20], [*one["runs"], {**one["runs"][0], "n_train": 15}]
    path.write_text(json.dumps(one))
    with pytest.raises(ValueError, match="--sizes"):
        bench.main(["--aggregate", "--out", str(tmp_path)])
    again = bench.main(["--aggregate", "--out", str(tmp_path), "--sizes", "10,20"])
    assert again["sizes"] == [10, 20] and again["per_seed"] == res["per_seed"] and again["command"].endswith("10,20")


def test_shipped_schnet_results_match_the_checkpoint():
    from torch_geometric.loader import DataLoader

    from course_lib.datasets import load_molecules
    from course_lib.losses import molecule_errors
    from course_lib.models.schnet import SchNet
    from course_lib.train import load_checkpoint

    res = json.loads((RESULTS / "schnet_final.json").read_text())["molecules"]["ethanol"]
    model = SchNet()
    load_checkpoint(RESULTS / "schnet_ethanol.pt", model)
    err = molecule_errors(model.eval(), DataLoader(load_molecules("ethanol", "test"), batch_size=50))
    assert err["force_mae_meV_A"] == pytest.approx(res["force_mae_meV_A"], rel=1e-4)
    assert err["energy_mae_meV"] == pytest.approx(res["energy_mae_meV"], rel=1e-3)
