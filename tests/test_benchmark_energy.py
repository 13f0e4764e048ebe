"""The energy learning-curve benchmark runs end to end (quick mode) and its results merge."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("energy_lc", ROOT / "benchmarks" / "energy_learning_curve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_run_and_merge(bench, tmp_path, one_thread):
    a, b = tmp_path / "a", tmp_path / "b"
    bench.main(["--quick", "--models", "mpnn", "--sizes", "20,40", "--out", str(a), "--no-progress"])
    bench.main(["--quick", "--models", "mlp", "--sizes", "20,40", "--out", str(b), "--no-progress"])
    merged = bench.main(["--merge", str(a), str(b), "--out", str(tmp_path / "m")])
    assert list(merged["models"]) == ["mpnn", "mlp"]
    for res in merged["models"].values():
        assert [r["n_train"] for r in res["runs"]] == [20, 40]
        assert all(r["test_mae"] > 0 for r in res["runs"])
    assert (tmp_path / "m" / "energy_mpnn.pt").exists() and (tmp_path / "m" / "energy_mlp.pt").exists()
    on_disk = json.loads((tmp_path / "m" / "energy_learning_curve.json").read_text())
    assert on_disk["models"].keys() == merged["models"].keys()


def test_shipped_results_match_the_shipped_checkpoint(bench):
    """The committed MAE of the final model is what its committed checkpoint gives on the test split."""
    from torch_geometric.loader import DataLoader

    from course_lib.datasets import load_particles
    from course_lib.models.mpnn import InvariantMPNN
    from course_lib.train import evaluate, load_checkpoint

    res = json.loads((ROOT / "benchmarks" / "results" / "energy_final.json").read_text())
    model = InvariantMPNN()
    load_checkpoint(ROOT / "benchmarks" / "results" / "energy_mpnn_final.pt", model)
    mae = evaluate(model.eval(), DataLoader(load_particles("energy", "test"), batch_size=256), bench.energy_mae)
    assert mae == pytest.approx(res["models"]["mpnn"]["runs"][0]["test_mae"], rel=1e-4)
