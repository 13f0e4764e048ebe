"""The N-body benchmark script: quick mode end to end (subprocess), and the committed full results."""

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
              "history", "load_before", "load_after"}
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


@pytest.mark.skipif(not RESULTS.exists(), reason="no committed full results (run python benchmarks/nbody.py)")
def test_committed_full_results_are_consistent():
    """The shipped JSON has the schema, and the shipped EGNN checkpoint reproduces its test MSE."""
    from course_lib.simulate.nbody import load_nbody_arrays

    res = json.loads(RESULTS.read_text())
    _check_schema(res, quick=False)
    assert res["data"]["sizes"] == {"train": 3000, "valid": 2000, "test": 2000}
    ckpt = ROOT / res["checkpoint"]
    assert ckpt.stat().st_size < 2e6
    model = EGNNDynamics(**upgrade_config(EGNNDynamics, res["models"]["egnn"]["config"])).eval()
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
    print(f"shipped EGNN checkpoint: test MSE {test_mse:.5f} (JSON: {res['models']['egnn']['test_mse']:.5f})")
    assert test_mse == pytest.approx(res["models"]["egnn"]["test_mse"], rel=1e-3)
    assert (ROOT / "benchmarks" / "results" / "nbody.md").read_text().count(res["command"]) >= 1
