"""The dynamics benchmark runs end to end in quick mode and writes loadable results."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from course_lib.models.baselines import AbsoluteCoordinateGNN
from course_lib.models.egnn import EGNN
from course_lib.train import load_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "egnn_dynamics.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("egnn_dynamics", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_run(bench, tmp_path):
    threads = torch.get_num_threads()
    try:
        res = bench.main(["--quick", "--out", str(tmp_path), "--log-every", "0", "--hidden", "16", "--layers", "2"])
    finally:
        torch.set_num_threads(threads)
    on_disk = json.loads((tmp_path / "egnn_dynamics.json").read_text())
    assert set(on_disk["models"]) == set(bench.MODELS) == set(res["models"])
    for name, entry in on_disk["models"].items():
        t = entry["test"]
        assert len(t["rollout_pos_mse_per_step"]) == 40 and t["rollout_pos_mse_per_step"][0] == 0.0
        assert t["one_step_pos_mse"] > 0 and t["speed_w1"] >= 0
        if name.startswith("ballistic"):
            assert not (tmp_path / f"dyn_{name}.pt").exists()
            continue
        payload = load_checkpoint(tmp_path / f"dyn_{name}.pt")
        model = (AbsoluteCoordinateGNN if payload["model_class"] == "AbsoluteCoordinateGNN" else EGNN)(
            **payload["config"])
        load_checkpoint(tmp_path / f"dyn_{name}.pt", model)
    assert on_disk["models"]["egnn_crystal"]["test"]["crystal_drift_final"] == 0.0
    assert "crystal_drift_final" in on_disk["models"]["egnn_crystal_free"]["test"]
    assert "load_average_start" in on_disk["machine"] and on_disk["command"].endswith("--layers 2")


def test_merge(bench, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    threads = torch.get_num_threads()
    try:
        bench.main(["--quick", "--models", "ballistic", "--out", str(a)])
        bench.main(["--quick", "--models", "ballistic_crystal", "--out", str(b)])
        merged = bench.main(["--merge", f"{a},{b}", "--out", str(tmp_path / "m")])
    finally:
        torch.set_num_threads(threads)
    assert list(merged["models"]) == ["ballistic", "ballistic_crystal"]
