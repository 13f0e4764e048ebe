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
