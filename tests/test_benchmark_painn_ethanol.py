"""The PaiNN-vs-NequIP benchmark runs end to end (quick mode) and writes its JSON with the protocol's fields."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run(tmp_path, one_thread):
    spec = importlib.util.spec_from_file_location("painn_ethanol", ROOT / "benchmarks" / "painn_ethanol.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.main(["--quick", "--out", str(tmp_path)])
    stored = json.loads((tmp_path / "painn_ethanol.json").read_text())
    assert {"command", "date", "machine", "seeds", "steps_per_run", "n_train", "test", "runs"} <= stored.keys()
    assert {(r["model"], r["seed"]) for r in res["runs"]} == {("painn", 0), ("nequip_l1", 0)}
    for r in stored["runs"]:
        assert {"force_mae_meV_A", "energy_mae_meV", "val_curve", "steps_run", "cpu_seconds", "plateau"} <= r.keys()
        assert r["n_train"] == 10 and r["force_mae_meV_A"] > 0


def test_quick_run_saves_checkpoints_under_their_own_name(tmp_path, one_thread):
    """--save-checkpoint: one loadable file per (model, seed) with the row's test errors; without it, none."""
    from course_lib.train import load_model

    spec = importlib.util.spec_from_file_location("painn_ethanol", ROOT / "benchmarks" / "painn_ethanol.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--quick", "--out", str(tmp_path / "plain"), "--models", "schnet"])
    assert not (tmp_path / "plain" / "painn_ethanol_ckpt").exists()
    res = bench.main(["--quick", "--out", str(tmp_path), "--models", "painn,schnet", "--save-checkpoint"])
    files = sorted(p.name for p in (tmp_path / "painn_ethanol_ckpt").iterdir())
    assert files == ["painn_s0.pt", "schnet_s0.pt"]
    for row in res["runs"]:
        model, payload = load_model(bench.checkpoint_path(tmp_path, row["model"], row["seed"]))
        assert type(model).__name__ == {"painn": "PaiNN", "schnet": "SchNet"}[row["model"]]
        assert payload["metrics"]["force_mae_meV_A"] == row["force_mae_meV_A"]
        assert (payload["metrics"]["model"], payload["metrics"]["seed"]) == (row["model"], row["seed"])
