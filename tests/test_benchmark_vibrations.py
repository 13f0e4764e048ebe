"""benchmarks/vibrations.py (notebook 10) runs end to end in quick mode and writes its JSON with the schema the
notebook reads; the shipped results have the same schema. A tiny random SchNet stands in for the models."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib.datasets import load_molecules
from course_lib.models.schnet import SchNet
from course_lib.train import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "benchmarks" / "results" / "vibrations.json"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_vibrations", ROOT / "benchmarks" / "vibrations.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def check_schema(res: dict, methods: set, vdos: set):
    assert set(res["methods"]) == methods and res["reference"] in methods
    assert {"command", "date", "machine", "protocol", "oh_mode"} <= set(res)
    for name, row in res["methods"].items():
        assert len(row["all_wavenumbers_cm"]) == 27 and len(row["rigid_overlap"]) == 27
        assert len(row["wavenumbers_cm"]) == 21 and row["wavenumbers_cm"] == sorted(row["wavenumbers_cm"])
        assert np.array(row["positions_A"]).shape == (9, 3)
        cmp = row["vs_reference"]
        assert sorted(cmp["match"]) == list(range(21)) and len(cmp["errors_cm"]) == 21
        assert cmp["mae_cm"] == pytest.approx(np.abs(cmp["errors_cm"]).mean())
        assert "rotated_max_diff_cm" in row
        if name in vdos:
            v = row["vdos"]
            assert len(v["oh_peak_cm"]) == len(v["seeds"]) and len(v["wavenumbers_cm"]) == len(v["dos"])
    assert res["methods"][res["reference"]]["vs_reference"]["mae_cm"] == 0.0


def test_vibrations_quick(tmp_path, one_thread):
    torch.manual_seed(0)
    model = SchNet(hidden=16, filters=16, num_layers=1, num_basis=10, cutoff=4.0)
    model.fit_energy_scale(load_molecules("ethanol", "train")[:20])
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, model, config=model.config, metrics={"force_mae_meV_A": 1.0})
    have_xtb = importlib.util.find_spec("tblite") is not None
    args = ["--quick", "--out", str(tmp_path), "--models", "schnet", "--schnet", str(ckpt), "--vdos-ps", "0.02",
            "--vdos", "schnet"] + ([] if have_xtb else ["--no-xtb"])
    res = _bench().main(args)
    on_disk = json.loads((tmp_path / "vibrations.json").read_text())
    methods = {"schnet", "xtb"} if have_xtb else {"schnet"}
    check_schema(on_disk, methods, {"schnet"})
    assert res["methods"]["schnet"]["rotated_max_diff_cm"] < 1e-3  # autograd Hessian: rotation invariant


def test_shipped_results_have_the_schema():
    if not SHIPPED.exists():
        pytest.skip("benchmarks/results/vibrations.json not made yet (python benchmarks/vibrations.py)")
    res = json.loads(SHIPPED.read_text())
    check_schema(res, {"xtb", "schnet", "nequip_l0", "nequip_l1", "nequip_l2"}, {"xtb", "schnet"})
    assert res["reference"] == "xtb" and len(res["methods"]["schnet"]["vdos"]["seeds"]) >= 3
