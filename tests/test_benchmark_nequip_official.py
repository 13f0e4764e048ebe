"""The official-NequIP benchmark (benchmarks/nequip_official.py): its data export, log parsing and config,
and the committed results. The training itself needs the separate nequip venv and is not run here."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "nequip_official.py"
CONFIG = ROOT / "benchmarks" / "nequip_official" / "config.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "nequip_official.json"

#: the "comparison config" shared with course_lib/models/nequip.py
COMPARISON = {"r_max": 4.0, "num_layers": 3, "l_max": 1, "parity": True, "num_features": 32, "num_bessels": 8,
              "polynomial_cutoff_p": 6, "radial_mlp_depth": 2, "radial_mlp_width": 64, "model_dtype": "float32"}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("nequip_official", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # module level: standard library and numpy only
    return mod


def test_extxyz_export_round_trips_the_course_splits(bench, tmp_path):
    from ase.io import read

    arrays = bench.load_split_arrays()
    assert {s: len(a["energy"]) for s, a in arrays.items()} == {"train": 800, "val": 100, "test": 100}
    small = {s: {k: (v if k == "z" else v[:3]) for k, v in a.items()} for s, a in arrays.items()}
    info = bench.export_extxyz(small, tmp_path)
    assert {s: i["frames"] for s, i in info.items()} == {"train": 3, "val": 3, "test": 3}
    images = read(tmp_path / "test.xyz", index=":")
    for atoms, e, f, pos in zip(images, small["test"]["energy"], small["test"]["forces"], small["test"]["pos"]):
        assert not atoms.pbc.any()
        np.testing.assert_array_equal(atoms.numbers, small["test"]["z"])
        np.testing.assert_allclose(atoms.positions, pos, rtol=0, atol=1e-7)
        np.testing.assert_allclose(atoms.get_potential_energy(), e, rtol=0, atol=1e-7)
        np.testing.assert_allclose(atoms.get_forces(), f, rtol=0, atol=1e-7)


def test_summarize_timing_skips_the_warmup_epoch(bench):
    timing = {"fit_s": 10.0, "step_s": [1.0, 1.0, 0.1, 0.3, 0.2],
              "epochs": [{"epoch": 0, "steps": 2, "frames": 10, "train_s": 2.5, "val_s": 0.1, "lr": 0.01},
                         {"epoch": 1, "steps": 3, "frames": 15, "train_s": 0.75, "val_s": 0.2, "lr": 0.01}]}
    s = bench.summarize_timing(timing)
    assert s["warmup_epochs"] == 1 and s["measured_steps"] == 3 and s["total_steps"] == 5
    assert s["train_frames_per_s"] == pytest.approx(20.0)
    assert s["step_s_median"] == pytest.approx(0.2)


def test_read_csv_log_splits_validation_rows_and_test_metrics(bench, tmp_path):
    path = tmp_path / "metrics.csv"
    cols = ["epoch", "step", "val0_epoch/weighted_sum", "val0_epoch/forces_mae", "test0_epoch/forces_mae"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerow({"epoch": 0, "step": 9, "val0_epoch/weighted_sum": 2.0, "val0_epoch/forces_mae": 0.5})
        w.writerow({"epoch": 1, "step": 19, "val0_epoch/weighted_sum": 1.0, "val0_epoch/forces_mae": 0.25})
        w.writerow({"epoch": 1, "step": 19, "test0_epoch/forces_mae": 0.3})
    val, test = bench.read_csv_log(path)
    assert [r["epoch"] for r in val] == [0, 1] and val[1]["weighted_sum"] == 1.0
    assert test == {"forces_mae": 0.3}


def test_config_is_the_comparison_config():
    cfg = yaml.safe_load(CONFIG.read_text())
    model = cfg["training_module"]["model"]
    resolved = {k: (cfg["cutoff_radius"] if k == "r_max" else model[k]) for k in COMPARISON}
    assert resolved == COMPARISON
    assert cfg["data"]["train_dataloader"]["batch_size"] == 5
    assert cfg["training_module"]["_target_"] == "nequip.train.NequIPLightningModule"  # no EMA
    assert cfg["training_module"]["optimizer"] == {"_target_": "torch.optim.Adam", "lr": 0.01}
    sched = cfg["training_module"]["lr_scheduler"]["scheduler"]
    assert (sched["factor"], sched["patience"]) == (0.8, 5)
    assert cfg["training_module"]["loss"]["coeffs"] == {"total_energy": 1.0, "forces": 1.0}


def test_committed_results(bench):
    res = json.loads(RESULTS.read_text())
    # the results belong to the committed config
    assert res["config"]["template_sha256"] == bench._sha256(CONFIG)
    assert res["versions"]["nequip"] and res["threads"]["training_process"]["torch_threads"] == 1
    m = res["model"]["model"]
    assert {k: m[k] for k in COMPARISON} == COMPARISON
    # the test stage of nequip-train and the script's own frame-by-frame evaluation agree
    eager, stage = res["test"]["eager_recomputed"], res["test"]["nequip_test_stage"]
    assert eager["frames"] == 100
    assert eager["energy_mae_meV"] == pytest.approx(stage["energy_mae_meV"], abs=1e-2)
    assert eager["forces_mae_meV_per_A"] == pytest.approx(stage["forces_mae_meV_per_A"], abs=1e-2)
    assert 0 < eager["energy_mae_meV"] < 1000 and 0 < eager["forces_mae_meV_per_A"] < 1000
    t = res["training"]
    assert t["total_steps"] == res["hyperparameters"]["epochs"] * 160
    assert len(t["val_curve"]) == res["hyperparameters"]["epochs"] and t["train_frames_per_s"] > 0
    assert res["inference"]["eager"]["model"]["median_ms"] > 0
    # the committed predictions give the committed errors
    pred = np.load(ROOT / res["test"]["predictions"]["file"])
    ref = bench.load_split_arrays()["test"]
    np.testing.assert_array_equal(pred["index"], ref["index"])
    assert 1e3 * np.abs(pred["energy"] - ref["energy"]).mean() == pytest.approx(eager["energy_mae_meV"], abs=1e-3)
    assert 1e3 * np.abs(pred["forces"] - ref["forces"]).mean() == pytest.approx(eager["forces_mae_meV_per_A"],
                                                                               abs=1e-3)
    aot = res["inference"]["aotinductor"]
    if aot.get("ok"):
        assert aot["max_abs_diff_vs_eager"]["forces_meV_per_A"] < 1.0


# --------------------------------------------------------------------------------------------
# the extra seeds (nequip_official.py --seed S --no-timing) and their summary (--aggregate)
# --------------------------------------------------------------------------------------------

SEEDS_DIR = ROOT / "benchmarks" / "results" / "nequip_official_seeds"


def _fake_run(path: Path, seed: int, energy_mae: float, forces_mae: float, parameters: int = 216704) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    test = {"energy_mae_meV": energy_mae, "energy_mae_offset_removed_meV": energy_mae / 5,
            "energy_mean_error_meV": -energy_mae, "forces_mae_meV_per_A": forces_mae}
    path.write_text(json.dumps({
        "hyperparameters": {"seed": seed, "epochs": 30}, "test": {"eager_recomputed": test},
        "model": {"parameters": parameters, "epoch_of_checkpoint": 29},
        "training": {"total_steps": 4800, "wall_s": 1.0}, "config": {"template_sha256": "x"}}))


def test_summarize_seeds_recomputes_mean_and_standard_error(bench, tmp_path):
    from course_lib.stats import summarize

    files = {s: tmp_path / f"seed{s}.json" for s in (0, 1, 2)}
    for (s, p), (e, f) in zip(files.items(), [(60.0, 35.0), (40.0, 33.0), (50.0, 31.0)]):
        _fake_run(p, s, e, f)
    res = bench.summarize_seeds(files)
    assert res["seeds"] == [0, 1, 2] and res["parameters"] == 216704
    ref = summarize([35.0, 33.0, 31.0])
    assert res["test"]["forces_mae_meV_per_A"]["mean"] == pytest.approx(ref.mean)
    assert res["test"]["forces_mae_meV_per_A"]["se"] == pytest.approx(ref.se)
    assert res["test"]["energy_mae_meV"]["values"] == [60.0, 40.0, 50.0]
    # runs of different models (or budgets) are refused, not averaged
    _fake_run(files[2], 2, 50.0, 31.0, parameters=1000)
    with pytest.raises(ValueError, match="parameters"):
        bench.summarize_seeds(files)
    _fake_run(files[2], 3, 50.0, 31.0)  # a file whose content is another seed than its name
    with pytest.raises(ValueError, match="seed 3"):
        bench.summarize_seeds(files)


def test_seed_paths_keep_the_committed_run(bench):
    assert bench.results_path(0) == ROOT / "benchmarks" / "results" / "nequip_official.json"
    assert bench.results_path(2) == SEEDS_DIR / "seed2.json"
    assert bench.default_work_name(False, 0) == "nequip_official"
    assert bench.default_work_name(False, 1) != bench.default_work_name(False, 2)
    args = bench.parse_args(["--seed", "1", "--no-timing"])
    assert args.seed == 1 and args.no_timing


def test_committed_seed_files_and_summary(bench):
    from course_lib.stats import summarize

    files = bench.seed_results()
    base = json.loads(RESULTS.read_text())
    ref = bench.load_split_arrays()["test"]
    for seed, path in files.items():
        if seed == 0:
            continue
        res = json.loads(path.read_text())
        # the same config, package version, budget and model as the committed seed-0 run; only the seed differs
        assert path == SEEDS_DIR / f"seed{seed}.json" and res["hyperparameters"]["seed"] == seed
        assert f"seed={seed}" in res["config"]["overrides"]
        assert res["config"]["template_sha256"] == bench._sha256(CONFIG)
        assert res["versions"]["nequip"] == base["versions"]["nequip"]
        assert res["hyperparameters"]["epochs"] == base["hyperparameters"]["epochs"]
        assert res["training"]["total_steps"] == base["training"]["total_steps"]
        assert res["model"]["parameters"] == base["model"]["parameters"]
        assert len(res["training"]["val_curve"]) == res["hyperparameters"]["epochs"]
        t = res["test"]["eager_recomputed"]
        assert t["frames"] == 100 and 0 < t["forces_mae_meV_per_A"] < 1000
        assert t["energy_mae_meV"] == pytest.approx(res["test"]["nequip_test_stage"]["energy_mae_meV"], abs=1e-2)
        pred = np.load(path.with_name(path.stem + "_test_predictions.npz"))
        np.testing.assert_array_equal(pred["index"], ref["index"])
        de = 1e3 * (pred["energy"] - ref["energy"])
        assert np.abs(de).mean() == pytest.approx(t["energy_mae_meV"], abs=1e-3)
        assert np.abs(de - de.mean()).mean() == pytest.approx(t["energy_mae_offset_removed_meV"], abs=1e-3)
        assert 1e3 * np.abs(pred["forces"] - ref["forces"]).mean() == pytest.approx(t["forces_mae_meV_per_A"],
                                                                                   abs=1e-3)
    summary_path = SEEDS_DIR / "summary.json"
    if len(files) > 1:
        assert summary_path.exists(), "run: python benchmarks/nequip_official.py --aggregate"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        assert summary["seeds"] == sorted(files)  # every finished seed, none left out
        for key, s in summary["test"].items():
            per_seed = [json.loads(files[seed].read_text())["test"]["eager_recomputed"][key] for seed in files]
            assert s["values"] == pytest.approx(per_seed)
            ref_s = summarize(per_seed)
            assert s["mean"] == pytest.approx(ref_s.mean)
            assert s["se"] == pytest.approx(ref_s.se)
