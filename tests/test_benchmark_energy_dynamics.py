"""The energy-based dynamics benchmark (notebook 02 §9b) runs end to end in quick mode, and the shipped results hold
what the notebook reads."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from course_lib.models.mpnn import InvariantMPNN
from course_lib.train import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "energy_dynamics.py"
SHIPPED = ROOT / "benchmarks" / "results" / "energy_dynamics.json"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("energy_dynamics", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _check_dynamics(d: dict, steps: int):
    assert len(d["rollout_pos_mse_per_step"]) == steps + 1 and d["rollout_pos_mse_per_step"][0] == 0.0
    assert d["one_step_pos_mse"] > 0 and d["speed_w1"] >= 0
    assert len(d["vel_hist"]) == len(d["true_vel_hist"]) == len(d["maxwell_boltzmann"]) == 40
    assert all(x >= 0 for x in d["energy_drift_per_traj"])


def test_quick_run(bench, tmp_path):
    threads = torch.get_num_threads()
    try:
        res = bench.main(["--quick", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    on_disk = json.loads((tmp_path / "energy_dynamics.json").read_text())
    assert on_disk["protocol"]["quick"] and len(on_disk["runs"]) == len(res["runs"]) == 1
    row = on_disk["runs"][0]
    _check_dynamics(row["dynamics"], 3)
    _check_dynamics(on_disk["references"]["true_potential"], 3)
    # the learned energy conserves momentum up to the float32 rounding of the frames
    assert row["dynamics"]["momentum_change_max"] < 1e-5
    # the EGNN reference over seeds: the shipped per-seed checkpoint of seed 0, scored like the learned energy
    (egnn_row,) = on_disk["references"]["egnn_seeds"]
    assert egnn_row["seed"] == 0 and egnn_row["checkpoint"] == "egnn_s0.pt"
    assert on_disk["references"]["egnn_ckpt_dir"] == bench.DEFAULT_EGNN_CKPT_DIR  # where they came from
    _check_dynamics(egnn_row, 3)
    assert on_disk["summary_egnn"]["momentum_change_max"]["n"] == 1
    assert on_disk["protocol"]["dt_integrator"] / on_disk["protocol"]["dt_simulator"] == pytest.approx(80)  # quick: 5
    model = InvariantMPNN(**load_checkpoint(tmp_path / "energy_dynamics_runs" / "mpnn_s0.pt")["config"])
    load_checkpoint(tmp_path / "energy_dynamics_runs" / "mpnn_s0.pt", model)


@pytest.mark.parametrize("name", ["energy_dynamics.json", "energy_dynamics_2x.json"])
def test_shipped_results_follow_the_protocol(name):
    res = json.loads((SHIPPED.parent / name).read_text())
    assert not res["protocol"]["quick"]
    assert sorted(r["seed"] for r in res["runs"]) == [0, 1, 2]
    assert all(r["val_curve"] and r["plateau"] is not None for r in res["runs"])
    for k, s in res["summary"].items():
        assert s["n"] == 3, k
    for r in res["runs"]:
        _check_dynamics(r["dynamics"], res["protocol"]["rollout_steps"])
    # the EGNN side is three seeds too (notebook 02 §9b compares 3 seeds with 3 seeds)
    assert [r["seed"] for r in res["references"]["egnn_seeds"]] == [0, 1, 2]
    for r in res["references"]["egnn_seeds"]:
        _check_dynamics(r, res["protocol"]["rollout_steps"])
    assert all(s["n"] == 3 for s in res["summary_egnn"].values())
    assert all(len(r["val_curve"]) == res["protocol"]["evals_per_run"] for r in res["runs"])


def test_twice_the_steps_is_the_same_protocol():
    """energy_dynamics_2x.json: the same seeds, data and validation interval as energy_dynamics.json, twice the
    steps; its EGNN reference is the one-step EGNN of the longest budget (the checkpoints of
    egnn_dynamics_seeds_32x), so notebook 02 §9b compares the longest budgets of both models."""
    short = json.loads(SHIPPED.read_text())
    long = json.loads((SHIPPED.parent / "energy_dynamics_2x.json").read_text())
    assert long["protocol"]["steps_per_run"] == 2 * short["protocol"]["steps_per_run"]
    assert long["protocol"]["evals_per_run"] == 2 * short["protocol"]["evals_per_run"]
    assert {k: v for k, v in long["protocol"].items() if k not in ("steps_per_run", "evals_per_run")} == {
        k: v for k, v in short["protocol"].items() if k not in ("steps_per_run", "evals_per_run")}
    assert long["references"]["egnn_ckpt_dir"] == "benchmarks/results/egnn_dynamics_seeds_32x/ckpt"
    # the longer runs repeat the shorter ones exactly, then go on (same seeds and validation interval; the learning
    # rate depends only on the validation losses): notebook 02 §9b compares the two budgets paired by seed
    for a, b in zip(sorted(short["runs"], key=lambda r: r["seed"]), sorted(long["runs"], key=lambda r: r["seed"]),
                    strict=True):
        assert a["seed"] == b["seed"] and b["val_curve"][:len(a["val_curve"])] == a["val_curve"]


def test_diagnostics_reuse_the_rollout(bench):
    """physics() given the rollout of evaluate_dynamics gives exactly what it computes by rolling out itself."""
    from course_lib.datasets import load_particles
    from course_lib.train import load_model

    trajs = load_particles("trajectories", "test")[:2]
    model, _ = load_model(ROOT / "benchmarks" / "results" / "egnn_dynamics_seeds" / "ckpt" / "egnn_s0.pt")
    _, rolled = bench.evaluate_dynamics(model, trajs, 3, return_rollout=True)
    assert bench.physics(model, trajs, 3, rolled=rolled) == bench.physics(model, trajs, 3)


def test_a_finished_seed_of_another_budget_is_not_reused(bench, tmp_path):
    """Rerunning into a folder whose seed was trained with another budget stops with what to do, instead of
    silently mixing budgets (the seeds of a folder are reused, to make the script resumable)."""
    runs = tmp_path / "energy_dynamics_runs"
    runs.mkdir()
    (runs / "mpnn_s0.json").write_text(json.dumps({"seed": 0, "steps": 4000, "val_curve": [1.0] * 40}) + "\n")
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit, match="another --out"):
            bench.main(["--seeds", "0", "--steps", "8000", "--evals", "80", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)


def test_reference_checkpoints_are_named_relative_to_the_repository(bench, tmp_path):
    assert bench._repo_relative(ROOT / bench.DEFAULT_EGNN_CKPT_DIR) == bench.DEFAULT_EGNN_CKPT_DIR
    assert bench._repo_relative(tmp_path) == str(tmp_path.resolve())
