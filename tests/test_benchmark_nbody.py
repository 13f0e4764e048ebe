"""The N-body benchmark script: quick mode end to end (subprocess), the summary over seeds, and the committed
results (>= 3 seeds per trained model, per-seed rows with curves and plateaus, the shipped checkpoint)."""

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from course_lib.models.nbody import EGNNDynamics
from course_lib.train import load_checkpoint, upgrade_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "nbody.py"
RESULTS = ROOT / "benchmarks" / "results" / "nbody.json"
MODELS = ("linear", "gnn", "rf", "egnn")
TOP_KEYS = {"schema_version", "benchmark", "command", "argv", "quick", "seed", "created", "data", "protocol",
            "machine", "load_start", "load_end", "published", "models", "checks", "out_json", "checkpoint",
            "total_wall_s"}
MODEL_KEYS = {"label", "cls", "config", "params", "lr", "max_epochs", "patience", "time_limit_s", "epochs_run",
              "forward_1thread",
              "best_epoch", "stop_reason", "val_mse", "test_mse", "train_wall_s", "wall_to_best_s", "forward",
              "history", "load_before", "load_after", "clip"}
MACHINE_KEYS = {"cpu", "cpu_count", "torch", "train_threads", "forward_threads"}


def _check_schema(res: dict, quick: bool):
    assert TOP_KEYS <= res.keys(), TOP_KEYS - res.keys()
    assert res["quick"] is quick and res["command"].startswith("python benchmarks/nbody.py")
    assert MACHINE_KEYS <= res["machine"].keys()
    assert set(res["models"]) == set(MODELS)
    for name, r in res["models"].items():
        assert MODEL_KEYS <= r.keys(), (name, MODEL_KEYS - r.keys())
        assert math.isfinite(r["test_mse"]) and r["test_mse"] > 0, name
        assert math.isfinite(r["val_mse"]) and r["forward"]["median_s"] > 0
        assert r["params"] > 0
        if name != "linear":
            assert r["epochs_run"] == len(r["history"]["val_mse"]) >= r["best_epoch"] >= 1
            assert min(r["history"]["val_mse"]) == pytest.approx(r["val_mse"], rel=1e-5)
            assert r["stop_reason"] in ("patience", "max_epochs", "time_limit")
            h = r["history"]
            assert len(h["grad_norm_max"]) == len(h["grad_norm_median"]) == r["epochs_run"]
            assert all(mx >= md > 0 for mx, md in zip(h["grad_norm_max"], h["grad_norm_median"]))


AGG_KEYS = {"schema_version", "benchmark", "command", "seed_commands", "seeds", "created", "data", "protocol",
            "machine", "published", "runs", "summary", "superseded", "checkpoint"}
ROW_KEYS = {"model", "seed", "label", "test_mse", "val_mse", "params", "lr", "max_epochs", "patience", "epochs_run",
            "best_epoch", "stop_reason", "plateau", "val_curve", "train_curve", "grad_norm_max", "source"}


def _check_summary(res: dict, min_seeds: dict):
    """The summary over seeds: every trained model has >= min_seeds[model] runs, each with its curve and plateau."""
    from course_lib import stats

    assert AGG_KEYS <= res.keys(), AGG_KEYS - res.keys()
    assert res["schema_version"] == 2 and res["command"].startswith("python benchmarks/nbody.py --aggregate")
    for row in res["runs"]:
        assert ROW_KEYS <= row.keys(), (row["model"], ROW_KEYS - row.keys())
        assert math.isfinite(row["test_mse"]) and row["test_mse"] > 0
        if row["model"] != "linear":
            assert len(row["val_curve"]) == row["epochs_run"] >= row["best_epoch"] >= 1
            assert row["plateau"] == stats.plateau(row["val_curve"])  # recomputable from the stored curve
    for name in ("gnn", "rf", "egnn"):
        seeds = [r["seed"] for r in res["runs"] if r["model"] == name]
        assert len(seeds) == len(set(seeds)) >= min_seeds[name], (name, seeds)
        s = stats.summarize([r["test_mse"] for r in res["runs"] if r["model"] == name])
        assert res["summary"][name]["test_mse_mean"] == pytest.approx(s.mean)


def test_quick_mode_end_to_end(tmp_path):
    out = tmp_path / "nbody.json"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--no-progress", "--timing-repeats", "5",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t0
    print(proc.stdout[-2000:], proc.stderr[-2000:], f"quick mode: {wall:.0f} s", sep="\n")
    assert proc.returncode == 0
    res = json.loads(out.read_text())
    _check_schema(res, quick=True)
    assert res["data"]["sizes"] == {"train": 300, "valid": 200, "test": 200}
    md = (tmp_path / "nbody.md").read_text()
    assert res["command"] in md and "| EGNN |" in md
    ckpt = tmp_path / "nbody_egnn.pt"
    model = EGNNDynamics(**upgrade_config(EGNNDynamics, res["models"]["egnn"]["config"]))
    payload = load_checkpoint(ckpt, model)
    assert payload["metrics"]["quick"] is True


def test_unknown_model_is_an_error(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--models", "egnn,transformer",
                           "--out", str(tmp_path / "x.json")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "unknown model" in proc.stderr


def _aggregate(folder, out):
    """``nbody.py --aggregate folder --out out`` in a subprocess."""
    return subprocess.run([sys.executable, str(SCRIPT), "--aggregate", str(folder), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_summary_over_seeds(tmp_path):
    """Two quick runs (seeds 0 and 1, EGNN in its own file as in the committed sweep) -> one summary."""
    folder = tmp_path / "seeds"
    for args in (["--models", "linear,gnn,rf", "--seed", "0", "--out", str(folder / "seed0.json")],
                 ["--models", "egnn", "--seed", "0", "--out", str(folder / "egnn_seed0.json")],
                 ["--models", "linear,gnn,rf,egnn", "--seed", "1", "--out", str(folder / "seed1.json")]):
        proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--no-progress", "--timing-repeats", "3",
                               "--epochs", "5", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "summary.json"
    proc = _aggregate(folder, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    _check_summary(res, min_seeds={"gnn": 2, "rf": 2, "egnn": 2})
    assert res["seeds"] == [0, 1]
    assert "mean ± s.e." in out.with_suffix(".md").read_text()
    assert res["superseded"] == []
    # the same (model, seed) with a larger epoch cap and otherwise the same settings replaces the run (recorded)
    longer = json.loads((folder / "egnn_seed0.json").read_text())
    longer["models"]["egnn"]["max_epochs"] = 7
    longer["models"]["egnn"]["test_mse"] *= 0.5
    (folder / "egnn_seed0_cap7.json").write_text(json.dumps(longer))
    proc = _aggregate(folder, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    _check_summary(res, min_seeds={"gnn": 2, "rf": 2, "egnn": 2})
    row = next(r for r in res["runs"] if r["model"] == "egnn" and r["seed"] == 0)
    assert row["source"].endswith("egnn_seed0_cap7.json") and row["test_mse"] == longer["models"]["egnn"]["test_mse"]
    (sup,) = res["superseded"]
    assert sup["superseded"].endswith("egnn_seed0.json") and (sup["old_max_epochs"], sup["new_max_epochs"]) == (5, 7)
    assert sup["curve_agreement"]["max_rel_diff"] == 0.0
    assert len(res["seed_commands"]) == 3  # the superseded file's command is not one of the summary's runs
    assert "egnn_seed0_cap7.json" in out.with_suffix(".md").read_text()
    # a larger patience is a larger budget too: a run with the larger cap and patience replaces both
    patient = json.loads((folder / "egnn_seed0_cap7.json").read_text())
    patient["models"]["egnn"]["patience"] = 9
    patient["models"]["egnn"]["test_mse"] *= 0.5
    (folder / "egnn_seed0_pat9.json").write_text(json.dumps(patient))
    proc = _aggregate(folder, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    row = next(r for r in res["runs"] if r["model"] == "egnn" and r["seed"] == 0)
    assert row["source"].endswith("egnn_seed0_pat9.json") and row["test_mse"] == patient["models"]["egnn"]["test_mse"]
    assert sorted((s["old_max_epochs"], s["old_patience"], s["new_patience"]) for s in res["superseded"]) == [
        (5, 5, 9), (7, 5, 9)]
    assert all("patience of 9 (was 5)" in s["reason"] for s in res["superseded"])
    # ... but a run with a larger cap and a smaller patience does not continue it: refused, with the cause
    shorter = json.loads((folder / "egnn_seed0_pat9.json").read_text())
    shorter["models"]["egnn"].update(max_epochs=11, patience=2)
    (folder / "egnn_seed0_cap11.json").write_text(json.dumps(shorter))
    proc = _aggregate(folder, out)
    assert proc.returncode != 0 and "largest epoch cap and the largest patience" in proc.stderr
    for name in ("egnn_seed0_pat9.json", "egnn_seed0_cap11.json"):
        (folder / name).unlink()
    # a seed run twice for the same model (same cap) is refused
    (folder / "dup.json").write_text((folder / "egnn_seed0.json").read_text())
    proc = _aggregate(folder, out)
    assert proc.returncode != 0 and "twice" in proc.stderr


@pytest.mark.skipif(not RESULTS.exists(), reason="no committed results (see benchmarks/README.md, N-body)")
def test_committed_full_results_are_consistent():
    """The shipped summary has the schema and its seeds, and the shipped EGNN checkpoint (seed 0) reproduces
    its test MSE."""
    from course_lib.simulate.nbody import load_nbody_arrays

    res = json.loads(RESULTS.read_text())
    _check_summary(res, min_seeds={"gnn": 3, "rf": 3, "egnn": 3})
    assert res["data"]["sizes"] == {"train": 3000, "valid": 2000, "test": 2000}
    egnn0 = next(r for r in res["runs"] if r["model"] == "egnn" and r["seed"] == res["checkpoint_seed"])
    config = json.loads((ROOT / egnn0["source"]).read_text())["models"]["egnn"]["config"]
    ckpt = ROOT / res["checkpoint"]
    assert ckpt.stat().st_size < 2e6
    model = EGNNDynamics(**upgrade_config(EGNNDynamics, config)).eval()
    load_checkpoint(ckpt, model)
    a = load_nbody_arrays("test")
    n = len(a["pos"])
    from torch_geometric.data import Data

    data = Data(pos=torch.from_numpy(a["pos"]).reshape(-1, 3), vel=torch.from_numpy(a["vel"]).reshape(-1, 3),
                charge=torch.from_numpy(a["charge"].astype("float32")).reshape(-1),
                batch=torch.arange(n).repeat_interleave(5))
    with torch.no_grad():
        pred = model(data)
    test_mse = float(((pred.double() - torch.from_numpy(a["target_pos"]).reshape(-1, 3).double()) ** 2).mean())
    print(f"shipped EGNN checkpoint: test MSE {test_mse:.5f} (JSON: {egnn0['test_mse']:.5f})")
    assert test_mse == pytest.approx(egnn0["test_mse"], rel=1e-3)
    assert (ROOT / "benchmarks" / "results" / "nbody.md").read_text().count(res["command"]) >= 1


LONG_PATIENCE = ROOT / "benchmarks" / "results" / "nbody_patience100.json"


@pytest.mark.skipif(not LONG_PATIENCE.exists(), reason="no committed patience-100 reruns (benchmarks/README.md)")
def test_committed_patience100_reruns_are_consistent():
    """The budget check of notebook 04: every trained model, 3 seeds, patience 100, each row recomputable from
    its per-seed file (the summary is what `--aggregate` makes of the committed files)."""
    res = json.loads(LONG_PATIENCE.read_text())
    _check_summary(res, min_seeds={"gnn": 3, "rf": 3, "egnn": 3})
    assert {r["patience"] for r in res["runs"]} == {100} and res["superseded"] == []
    for row in res["runs"]:
        run = json.loads((ROOT / row["source"]).read_text())["models"][row["model"]]
        assert run["history"]["val_mse"] == row["val_curve"] and run["test_mse"] == row["test_mse"]
