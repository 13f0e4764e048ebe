"""The MACE benchmark (benchmarks/mace_ethanol.py): its protocol against painn_ethanol.py, its log parsing, the
committed results file, and notebook 10's use of it. The course never installs or imports mace: the training
quick run needs the separate MACE venv (``MACE_PYTHON``, default /work/venv-mace/bin/python) and is skipped
without it (CI)."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from course_lib import stats

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "mace_ethanol.py"
RESULTS = ROOT / "benchmarks" / "results" / "mace_ethanol.json"
COURSE = ROOT / "benchmarks" / "results" / "painn_ethanol.json"
NOTEBOOK = ROOT / "notebooks" / "10_vibrations.py"
MACE_PYTHON = Path(os.environ.get("MACE_PYTHON", "/work/venv-mace/bin/python"))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("mace_ethanol", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # module level: standard library, numpy, course_lib.stats (no mace)
    return mod


@pytest.fixture(scope="module")
def results():
    return json.loads(RESULTS.read_text())


def test_the_script_imports_no_mace_at_module_level(bench):
    assert "mace" not in sys.modules


def test_training_frames_are_those_of_painn_ethanol(bench):
    for seed in (0, 1, 2):
        assert bench.train_indices(seed, 100) == [int(k) for k in stats.random_subset(range(800), 100, seed)]
    assert bench.train_indices(0, 100) != bench.train_indices(1, 100)


def test_training_arguments_follow_the_course_protocol(bench, tmp_path):
    args = dict(a[2:].split("=", 1) for a in bench.mace_args("m", tmp_path, 3, 100, 30, bench.MODEL))
    assert args["loss"] == "weighted" and float(args["energy_weight"]) == 1 and float(args["forces_weight"]) == 1
    assert int(args["batch_size"]) == 5 and float(args["lr"]) == 0.01 and float(args["lr_factor"]) == 0.5
    assert float(args["clip_grad"]) == 10 and float(args["weight_decay"]) == 0 and args["default_dtype"] == "float32"
    assert int(args["max_num_epochs"]) * 20 == 2000 and int(args["scheduler_patience"]) * 20 == 600
    assert float(args["r_max"]) == 4.0 and int(args["num_channels"]) == 16 and int(args["seed"]) == 3
    assert "ema" not in args and "swa" not in args
    assert "a.amsgrad = False" in bench.TRAIN_SNIPPET


def test_read_val_curve_rescales_to_the_mean_loss(bench, tmp_path):
    (tmp_path / "results").mkdir()
    lines = [{"loss": 9.0, "mode": "eval", "epoch": None, "mae_f": 1.0},   # the untrained model: dropped
             {"loss": 0.5, "mode": "opt", "epoch": 0},
             {"loss": 0.01, "mode": "eval", "epoch": 0, "mae_f": 0.2, "mae_e_per_atom": 0.003},
             {"loss": 0.02, "mode": "eval", "epoch": 1, "mae_f": 0.1, "mae_e_per_atom": 0.002}]
    (tmp_path / "results" / "m_run-7_train.txt").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rows = bench.read_val_curve(tmp_path, "m", 7, n_val=100, valid_batch=50)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert rows[0]["loss"] == pytest.approx(0.5) and rows[1]["loss"] == pytest.approx(1.0)  # x 100 frames / 2 batches
    assert rows[0]["mae_f_meV_A"] == pytest.approx(200.0) and rows[1]["mae_e_per_atom_meV"] == pytest.approx(2.0)


def test_committed_results_schema(bench, results):
    course = json.loads(COURSE.read_text())
    for key in ("command", "date", "machine", "versions", "seeds", "runs", "mace_model", "mace_train_args",
                "differences_from_course_protocol", "citation"):
        assert key in results, key
    assert results["external_reference"] is True and "NeurIPS 2022" in results["citation"]
    for pkg in ("mace-torch", "e3nn", "torch"):
        assert results["versions"][pkg]
    assert results["n_train"] == course["n_train"] == 100
    assert results["steps_per_run"] == course["steps_per_run"] == 2000
    assert results["batch_size"] == course["batch_size"] and results["lr"] == course["lr"]
    assert sorted(r["seed"] for r in results["runs"]) == sorted(results["seeds"]) and len(results["seeds"]) >= 3
    for r in results["runs"]:
        assert r["train_positions"] == bench.train_indices(r["seed"], 100)
        assert r["n"] == 100 and r["steps_run"] == 2000
        assert len(r["val_curve"]) == 20 and r["val_curve_steps"] == list(range(100, 2001, 100))
        assert len(r["val_curve_every_eval"]) == 100
        assert r["plateau"] == stats.plateau(r["val_curve"])
        assert r["best_step"] == r["val_steps"][int(np.argmin(r["val_curve_every_eval"]))]
        assert 0 < r["force_mae_meV_A"] < r["force_rmse_meV_A"] and r["energy_mae_meV"] > 0
        assert r["parameters"] > 0
    if "stability" in results:
        s = results["stability"]
        assert s["temperature_K"] == 1000.0 and s["model_seed"] == results["seeds"][0] and s["rows"]
        assert s["stable_replicas"] == sum(r["failure_time_fs"] is None for r in s["rows"])
        assert sorted(r["seed"] for r in s["rows"]) == list(range(len(s["rows"])))
        for r in s["rows"]:
            assert r["failure_time_fs"] is None or 0 < r["failure_time_fs"] <= 1000 * s["limit_ps"]


def test_notebook_reads_the_shipped_file_and_never_imports_mace():
    src = NOTEBOOK.read_text()
    start = src.index("## 10. The model people use today: MACE")
    section = src[start:src.index("# %% [markdown]\n# ## ", start + 10)]
    assert 'repo_file("benchmarks/results/mace_ethanol.json")' in section
    assert "import mace" not in src and "from mace" not in src
    assert "Batatia" in section and re.search(r"NeurIPS\*? 2022", section)
    assert "claims." in section and "NBVAL_CHECK_OUTPUT" in section
    # no number typed in the prose of the section: they are printed from the results file
    typed = [line for line in section.splitlines() if line.startswith("# ") and re.search(r"\d\s*meV", line)]
    assert not typed, typed


def test_notebook_table_numbers_come_from_the_results_file(results):
    """The executed notebook (if it has outputs) prints MACE's mean force MAE from the committed file."""
    ipynb = NOTEBOOK.with_suffix(".ipynb")
    nb = json.loads(ipynb.read_text())
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                   for o in c.get("outputs", []))
    if "MACE (mace-torch" not in text:
        pytest.skip("notebook 10 has not been executed since the MACE section was added")
    s = stats.summarize([r["force_mae_meV_A"] for r in results["runs"]])
    assert f"{s.mean:.1f} ± {s.se:.1f}" in text


@pytest.mark.skipif(not MACE_PYTHON.exists(), reason="no MACE venv (set MACE_PYTHON); CI never installs mace")
def test_quick_run_in_the_mace_venv(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    subprocess.run([str(MACE_PYTHON), str(SCRIPT), "--quick", "--out", str(tmp_path), "--work", str(tmp_path / "w")],
                   check=True, env=env, cwd=ROOT, capture_output=True, timeout=900)
    res = json.loads((tmp_path / "mace_ethanol.json").read_text())
    assert res["versions"]["mace-torch"] and len(res["runs"]) == 1
    row = res["runs"][0]
    assert row["n"] == 10 and row["steps_run"] == 4 and np.isfinite(row["force_mae_meV_A"])
    assert len(row["val_curve_every_eval"]) == 2
