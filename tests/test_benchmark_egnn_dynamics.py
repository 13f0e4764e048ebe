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
        res = bench.main(["--quick", "--out", str(tmp_path), "--log-every", "0", "--hidden", "16", "--layers", "2",
                          "--epochs", "2", "--finetune-epochs", "1", "--checkpoint-dir", str(tmp_path / "ckpt")])
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
        # the per-seed copy (--checkpoint-dir) holds the same weights
        per_seed = load_checkpoint(tmp_path / "ckpt" / f"{name}_s0.pt")
        assert per_seed["metrics"]["seed"] == 0 and per_seed["metrics"]["epochs"] == 2
        assert all(torch.equal(per_seed["state_dict"][k], v) for k, v in payload["state_dict"].items())
        assert entry["train"]["epochs_run"] == len(entry["train"]["history"]) == 2
    # fine-tuning shares the epoch budget: 1 epoch of the one-step loss, then 1 of the multi-step loss
    ft = on_disk["models"]["egnn_finetune"]["train"]
    assert (ft["pretrain_epochs"], ft["finetune_epochs"]) == (1, 1) and [h["epoch"] for h in ft["history"]] == [0, 1]
    assert on_disk["protocol"]["finetune_epochs"] == 1
    assert on_disk["models"]["egnn_crystal"]["test"]["crystal_drift_final"] == 0.0
    assert "crystal_drift_final" in on_disk["models"]["egnn_crystal_free"]["test"]
    assert "load_average_start" in on_disk["machine"] and "--layers 2" in on_disk["command"]


def test_an_interrupted_run_resumes_to_the_numbers_of_an_uninterrupted_one(bench, tmp_path):
    """--stop-after-epoch pauses a call (the training state kept), --resume goes on: the same numbers as one call,
    through a pause inside each phase of the fine-tuned recipe."""
    threads = torch.get_num_threads()
    common = ["--quick", "--log-every", "0", "--hidden", "16", "--layers", "2", "--epochs", "3", "--finetune-epochs",
              "1", "--time-limit", "1e9", "--models", "ballistic_crystal,egnn_finetune,egnn_crystal"]
    parts = tmp_path / "parts"
    try:
        whole = bench.main([*common, "--out", str(tmp_path / "whole")])
        first = bench.main([*common, "--out", str(parts), "--stop-after-epoch", "1"])  # in the one-step phase
        assert "paused" in first and set(first["models"]) == {"ballistic_crystal"}
        assert (parts / "resume_egnn_finetune_pretrain.pt").exists()
        other = list(common)
        other[other.index("--epochs") + 1] = "4"
        with pytest.raises(SystemExit, match="other settings"):  # another budget cannot go on from this state
            bench.main([*other, "--out", str(parts), "--resume"])
        second = bench.main([*common, "--out", str(parts), "--resume", "--stop-after-epoch", "2"])
        assert "paused" in second and "multi-step phase" in second["paused"]  # before the fine-tuning's first epoch
        third = bench.main([*common, "--out", str(parts), "--resume"])
    finally:
        torch.set_num_threads(threads)
    assert "paused" not in third and not list(parts.glob("resume_*"))
    on_disk = json.loads((parts / "egnn_dynamics.json").read_text())
    assert on_disk["command"] == whole["command"].replace(str(tmp_path / "whole"), str(parts))
    assert set(on_disk["models"]) == set(whole["models"])
    def numbers(d):  # everything but the timings
        return {k: v for k, v in d.items() if "seconds" not in k}

    for name, entry in whole["models"].items():
        assert numbers(on_disk["models"][name]["test"]) == numbers(entry["test"]), name
        if entry["train"] is not None:
            resumed = on_disk["models"][name]["train"]
            assert [numbers(h) for h in resumed["history"]] == [numbers(h) for h in entry["train"]["history"]], name
            assert resumed["best_epoch"] == entry["train"]["best_epoch"], name


def test_per_seed_checkpoints_are_the_seed_table_runs():
    """results/egnn_dynamics_seeds/ckpt/egnn_s<seed>.pt (retrained with --checkpoint-dir) hold the models whose test
    numbers are those of the seed table (box_s<seed>.json): the retrain reproduced them exactly (one thread)."""
    folder = SCRIPT.parent / "results" / "egnn_dynamics_seeds"
    for seed in (0, 1, 2):
        metrics = load_checkpoint(folder / "ckpt" / f"egnn_s{seed}.pt")["metrics"]
        table = json.loads((folder / f"box_s{seed}.json").read_text())["models"]["egnn"]["test"]
        assert metrics["seed"] == seed and metrics["epochs"] == 10
        for key in ("one_step_pos_mse", "rollout_pos_mse_mean", "speed_w1"):
            assert metrics[key] == table[key], (seed, key)


@pytest.mark.parametrize("argv, message", [
    (["--finetune-time", "300"], "never wall-clock"),
    (["--init-dir", "/tmp"], "never wall-clock"),
    (["--models", "egnn_finetune", "--epochs", "4", "--finetune-epochs", "4"], "must lie between 1 and"),
])
def test_finetune_budget_is_epochs(bench, argv, message):
    """The wall-clock budget of the fine-tuning recipe is gone, with an error that says what to use instead."""
    with pytest.raises(SystemExit, match=message):
        bench.main(argv + ["--out", "/nonexistent/never-written"])


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


def test_longest_budget_checkpoints_are_the_32x_runs():
    """results/egnn_dynamics_seeds_32x/ckpt/egnn_s<seed>.pt (the weights each 320-epoch run saved as dyn_egnn.pt,
    read by energy_dynamics.py --egnn-ckpt-dir for notebook 02 §9b) hold the models whose test numbers are those of
    egnn_dynamics_seeds_32x/egnn_s<seed>.json."""
    folder = SCRIPT.parent / "results" / "egnn_dynamics_seeds_32x"
    for seed in (0, 1, 2):
        metrics = load_checkpoint(folder / "ckpt" / f"egnn_s{seed}.pt")["metrics"]
        run = json.loads((folder / f"egnn_s{seed}.json").read_text())
        assert f"--seed {seed} " in run["command"] and "--epochs 320 " in run["command"]
        for key in ("one_step_pos_mse", "rollout_pos_mse_mean", "speed_w1"):
            assert metrics[key] == run["models"]["egnn"]["test"][key], (seed, key)


@pytest.mark.parametrize("suffix", ["", "_2x", "_4x", "_8x", "_16x", "_32x"])
def test_shipped_summaries_are_the_aggregate_of_their_per_seed_runs(bench, tmp_path, suffix):
    """Notebooks 02 and 03 read the summaries; each must be exactly `--aggregate` of the per-seed files shipped
    beside it (a run added, replaced or edited without re-aggregating fails here)."""
    shipped = SCRIPT.parent / "results" / f"egnn_dynamics_seeds{suffix}.json"
    fresh = bench.aggregate(SCRIPT.parent / "results" / f"egnn_dynamics_seeds{suffix}", tmp_path / "summary.json")
    assert json.loads(json.dumps(fresh)) == json.loads(shipped.read_text())
    assert (tmp_path / "summary.md").read_text() == shipped.with_suffix(".md").read_text()
