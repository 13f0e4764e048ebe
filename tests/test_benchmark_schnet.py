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
    curve = bench.main(["curve", "--quick", "--sizes", "10", "--out", str(tmp_path), "--no-progress"])
    assert set(curve["runs"]) == {"energy", "forces"}
    on_disk = json.loads((tmp_path / "schnet_curve.json").read_text())
    assert [r["n_train"] for r in on_disk["runs"]["forces"]] == [10]


def test_quick_nequip_curve(tmp_path, one_thread):
    bench = _load("nequip_learning_curve")
    res = bench.main(["--lmax", "0", "--quick", "--sizes", "10", "--features", "4", "--layers", "1",
                      "--out", str(tmp_path), "--no-progress"])
    assert res["runs"][0]["n_train"] == 10 and res["runs"][0]["force_mae_meV_A"] > 0
    assert (tmp_path / "nequip_curve_l0.pt").exists()


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
