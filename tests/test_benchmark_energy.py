"""The energy learning-curve benchmark runs end to end (quick mode), follows the experiment protocol in
its results file (seeds, random subsets, equal step budgets, per-run validation curves and plateau), resumes
from its per-run files, and the shipped results agree with the shipped checkpoints."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("energy_lc", ROOT / "benchmarks" / "energy_learning_curve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _check_schema(res, models, sizes, seeds):
    assert res["sizes"] == sizes and res["seeds"] == seeds
    assert {"command", "date", "machine", "protocol", "run_commands", "test_energy_std"} <= set(res)
    assert {"steps_per_run", "evals_per_run", "batch_size", "n_val", "n_test", "test_set"} <= set(res["protocol"])
    assert list(res["models"]) == models
    for res_m in res["models"].values():
        rows = res_m["runs"]
        assert sorted((r["n_train"], r["seed"]) for r in rows) == sorted((n, s) for n in sizes for s in seeds)
        for r in rows:
            assert r["test_mae"] > 0 and r["steps"] == r["steps_per_eval"] * len(r["val_curve"])
            assert len(r["val_curve"]) == len(r["train_curve"]) == res["protocol"]["evals_per_run"]
            assert 0 <= r["best_eval"] < len(r["val_curve"])
            assert {"plateaued", "best", "last_window_gain"} <= set(r["plateau"])
        assert len({r["steps"] for r in rows}) == 1  # equal budgets in steps, whatever the size
        assert [s["n_train"] for s in res_m["summary"]] == sizes
        assert all(s["runs"] == len(seeds) and s["test_mae_se"] >= 0 for s in res_m["summary"])


def test_quick_run_schema_and_resume(bench, tmp_path, one_thread):
    out = tmp_path / "lc"
    args = ["--quick", "--models", "mpnn,vec_gnn", "--sizes", "20,40", "--seeds", "0,1,2", "--out", str(out),
            "--no-progress"]
    res = bench.main(args)
    _check_schema(res, ["mpnn", "vec_gnn"], [20, 40], [0, 1, 2])
    on_disk = json.loads((out / "energy_learning_curve.json").read_text())
    assert on_disk["models"].keys() == res["models"].keys()
    assert (out / "energy_mpnn.pt").exists() and (out / "energy_vec_gnn.pt").exists()  # seed 0, largest size
    # one file per finished run; a second start trains nothing and rebuilds the same rows
    files = sorted((out / "energy_learning_curve_runs").glob("*.json"))
    assert len(files) == 2 * 2 * 3
    stamps = [f.stat().st_mtime_ns for f in files]
    again = bench.main(args)
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert again["models"]["mpnn"]["runs"] == res["models"]["mpnn"]["runs"]


def test_subsets_are_random_per_seed_and_shared_across_models(bench):
    from course_lib import stats

    a, b = (stats.random_subset(range(2400), 100, s) for s in (0, 1))
    assert list(a) != list(range(100)) and set(a) != set(b)


def test_unknown_model_is_refused(bench, tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        bench.main(["--quick", "--models", "mpnn,transformer", "--out", str(tmp_path)])


def test_shipped_results_follow_the_protocol():
    res = json.loads((RESULTS / "energy_learning_curve.json").read_text())
    assert len(res["seeds"]) >= 3 and len(res["sizes"]) >= 3
    _check_schema(res, ["mpnn", "abs_gnn", "abs_gnn_aug", "vec_gnn"], res["sizes"], res["seeds"])


def test_shipped_results_match_the_shipped_checkpoints(bench):
    """The committed MAE of each checkpoint is what the committed checkpoint gives on the test split (the
    first final model was trained before the smooth cutoff and loads with smooth_cutoff=False)."""
    from torch_geometric.loader import DataLoader

    from course_lib.datasets import load_particles
    from course_lib.train import evaluate, load_model

    test = DataLoader(load_particles("energy", "test"), batch_size=256)
    for suffix, smooth in (("_nocutoff", False), ("", True)):  # notebook 08: the first version and the fixed one
        final = json.loads((RESULTS / f"energy_final{suffix}.json").read_text())
        model, _ = load_model(RESULTS / f"energy_mpnn_final{suffix}.pt")
        assert model.smooth_cutoff is smooth
        assert evaluate(model, test, bench.energy_mae) == pytest.approx(
            final["models"]["mpnn"]["runs"][0]["test_mae"], rel=1e-4)
    curve = json.loads((RESULTS / "energy_learning_curve.json").read_text())
    n, seed = max(curve["sizes"]), 0
    for name in ("mpnn", "vec_gnn"):
        model, payload = load_model(RESULTS / f"energy_{name}.pt")
        row = next(r for r in curve["models"][name]["runs"] if r["n_train"] == n and r["seed"] == seed)
        assert payload["metrics"]["n_train"] == n and model.config["smooth_cutoff"] is True
        assert evaluate(model, test, bench.energy_mae) == pytest.approx(row["test_mae"], rel=1e-4)


def test_shipped_plateau_runs_reach_their_plateau_honestly():
    """The runs to a plateau at 1000 systems (``--tag plateau``): every model, >= 3 seeds, the same step cap, the
    learning rate only ever decreasing, early stopping only after ``patience`` points without a better one, and the
    recorded plateau flag equal to the one recomputed from the stored validation curve."""
    from course_lib import stats

    res = json.loads((RESULTS / "energy_plateau.json").read_text())
    proto = res["protocol"]
    assert len(res["seeds"]) >= 3 and 1000 in res["sizes"]
    assert set(res["models"]) == {"mpnn", "abs_gnn", "abs_gnn_aug", "vec_gnn"}
    for res_m in res["models"].values():
        rows = [r for r in res_m["runs"] if r["n_train"] == 1000]
        assert sorted(r["seed"] for r in rows) == res["seeds"]
        for r in rows:
            curve, lr = r["val_curve"], r["lr_curve"]
            assert r["steps"] == proto["steps_per_run"] and len(lr) == len(curve) == len(r["train_curve"])
            assert r["steps_run"] == r["steps_per_eval"] * len(curve) <= r["steps"]
            assert all(b <= a for a, b in zip(lr, lr[1:])) and min(lr) >= 1e-6
            assert r["best_eval"] == min(range(len(curve)), key=curve.__getitem__)
            if r["stopped_early"]:
                assert len(curve) - 1 - r["best_eval"] == r["patience"] == proto["patience"]
            else:
                assert len(curve) == proto["evals_per_run"]
            assert r["plateau"] == stats.plateau(curve)
