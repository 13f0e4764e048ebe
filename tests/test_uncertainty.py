"""course_lib.uncertainty: committee disagreement (zero for identical members, the sample std otherwise), per-frame
means, Spearman; and benchmarks/committee.py in quick mode with its schema (and the shipped results' schema)."""

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib import uncertainty as U
from course_lib.datasets import load_molecules
from course_lib.models.schnet import SchNet

ROOT = Path(__file__).resolve().parents[1]


def test_disagreement_is_the_sample_std_of_the_force_vectors():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(4, 7, 3))
    expected = np.sqrt(((f - f.mean(0)) ** 2).sum(axis=(0, 2)) / 3)
    assert np.allclose(U.force_disagreement(f), expected)
    assert np.allclose(U.force_disagreement(np.repeat(f[:1], 3, axis=0)), 0.0)
    # a rotation of all the members' forces leaves the disagreement unchanged
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    assert np.allclose(U.force_disagreement(f @ q.T), expected)
    with pytest.raises(ValueError, match="K >= 2"):
        U.force_disagreement(f[:1])


def test_per_frame_mean_and_spearman():
    assert np.allclose(U.per_frame_mean([1.0, 3.0, 10.0], [0, 0, 1]), [2.0, 10.0])
    assert U.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert U.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_committee_of_identical_models_agrees_and_of_different_seeds_does_not(one_thread):
    frames = load_molecules("ethanol", "test", dtype=torch.float32)[:3]
    torch.manual_seed(0)
    a = SchNet(hidden=16, filters=16, num_layers=1, num_basis=10).eval()
    torch.manual_seed(1)
    b = SchNet(hidden=16, filters=16, num_layers=1, num_basis=10).eval()
    e, f, idx = U.committee_forces([a, copy.deepcopy(a)], frames)
    assert e.shape == (2, 3) and f.shape == (2, 27, 3) and idx.tolist() == [i for i in range(3) for _ in range(9)]
    assert np.allclose(U.force_disagreement(f), 0.0, atol=1e-6)
    _, f2, _ = U.committee_forces([a, b], frames)
    assert U.force_disagreement(f2).min() > 0
    with pytest.raises(ValueError, match="training mode"):
        U.committee_forces([a, copy.deepcopy(a).train()], frames)


def _check_schema(res, members):
    assert {"command", "date", "machine", "protocol", "members", "per_atom", "per_frame"} <= set(res)
    assert [r["seed"] for r in res["members"]] == list(range(members))
    n = res["protocol"]["test_frames"]
    assert len(res["per_frame"]["error_eV_A"]) == n == len(res["per_frame"]["sigma_eV_A"])
    assert len(res["per_atom"]["error_eV_A"]) == 9 * n == len(res["per_atom"]["sigma_eV_A"])
    assert -1 <= res["spearman_per_frame"] <= 1


def test_committee_benchmark_quick(tmp_path, one_thread):
    spec = importlib.util.spec_from_file_location("bench_committee", ROOT / "benchmarks" / "committee.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--quick", "--out", str(tmp_path), "--members", "2", "--epochs", "1"])
    _check_schema(json.loads((tmp_path / "committee.json").read_text()), 2)
    assert (tmp_path / "committee_s1.pt").exists()
    again = mod.main(["--quick", "--out", str(tmp_path), "--members", "2", "--epochs", "1"])  # resumes: no training
    assert again["members"][0]["force_mae_meV_A"] == pytest.approx(res["members"][0]["force_mae_meV_A"])


def test_shipped_committee_results_have_the_schema():
    path = ROOT / "benchmarks" / "results" / "committee.json"
    if not path.exists():
        pytest.skip("benchmarks/results/committee.json not made yet (python benchmarks/committee.py)")
    res = json.loads(path.read_text())
    _check_schema(res, 3)
    assert res["protocol"]["test_frames"] == 100


# ------------------------------------------------------------------ disagreement along MD, selection for labelling


def test_per_replica_max():
    v = np.array([1.0, 5.0, 2.0, 0.5, 0.1, 0.7])
    assert U.per_replica_max(v, 3).tolist() == [5.0, 0.7]
    assert U.per_replica_max(v, 6).tolist() == [5.0]
    with pytest.raises(ValueError, match="multiple of n_atoms"):
        U.per_replica_max(v, 4)


def test_first_crossing_and_lead_time():
    t = np.arange(6) * 10.0
    s = np.array([0.1, 0.2, 0.9, 0.3, 1.5, 2.0])
    assert U.first_crossing(t, s, 0.5) == 20.0
    assert U.first_crossing(t, s, 1.0) == 40.0
    assert U.first_crossing(t, s, 5.0) is None
    assert U.first_crossing(t, s, 0.2) == 20.0  # strictly above
    # lead time: failure at 45 fs, first crossing of 1.0 at 40 fs -> 5 fs; of 0.5 at 20 fs -> 25 fs
    assert U.warning_lead_time(t, s, 1.0, 45.0) == pytest.approx(5.0)
    assert U.warning_lead_time(t, s, 0.5, 45.0) == pytest.approx(25.0)
    # a crossing after the failure is no warning; no failure, no lead time
    assert U.warning_lead_time(t, s, 1.0, 30.0) is None
    assert U.warning_lead_time(t, s, 0.5, None) is None
    with pytest.raises(ValueError, match="increasing"):
        U.first_crossing(t[::-1], s, 0.5)
    with pytest.raises(ValueError, match="matching"):
        U.first_crossing(t, s[:-1], 0.5)


def test_select_decorrelated_takes_the_highest_scores_apart_in_time():
    times = np.array([0.0, 5.0, 10.0, 60.0, 0.0, 5.0])
    traj = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.9, 0.8, 0.5, 0.7, 0.2])
    # 1 (0.9, traj 0 t=5) first; 2 (t=10) is within 50 fs of it; 4 (traj 1) is another trajectory; then 3 (t=60)
    assert U.select_decorrelated(times, traj, scores, 3, 50.0).tolist() == [1, 4, 3]
    # without a separation rule: simply the top scores
    assert U.select_decorrelated(times, traj, scores, 3, 0.0).tolist() == [1, 2, 4]
    # fewer frames than asked for when the rule leaves fewer
    assert len(U.select_decorrelated(times, traj, scores, 10, 50.0)) == 3
    with pytest.raises(ValueError, match="matching"):
        U.select_decorrelated(times, traj[:-1], scores, 2, 50.0)


def _tiny(seed):
    torch.manual_seed(seed)
    m = SchNet(hidden=16, filters=16, num_layers=1, num_basis=10)
    m.fit_energy_scale(load_molecules("ethanol", "train")[:10])
    return m.eval()


def test_committee_calculator_is_the_mean_of_its_members(one_thread):
    from ase import Atoms

    from course_lib.ase_calculator import ModelCalculator

    g = load_molecules("ethanol", "test", dtype=torch.float64)[0]
    atoms = Atoms(numbers=g.z.numpy(), positions=g.pos.numpy())
    a, b = _tiny(0), _tiny(1)
    singles = []
    for m in (a, b):
        x = atoms.copy()
        x.calc = ModelCalculator(m)
        singles.append((x.get_potential_energy(), x.get_forces()))
    atoms.calc = U.CommitteeCalculator([a, b])
    assert atoms.get_potential_energy() == pytest.approx((singles[0][0] + singles[1][0]) / 2, abs=1e-9)
    assert np.allclose(atoms.get_forces(), (singles[0][1] + singles[1][1]) / 2, atol=1e-9)
    sigma = atoms.calc.results["force_sigma"]
    assert sigma.shape == (9,)
    assert np.allclose(sigma, U.force_disagreement(np.stack([singles[0][1], singles[1][1]])))
    # the mean force is minus the gradient of the mean energy (finite difference along one coordinate)
    h, (i, k) = 1e-5, (3, 1)
    e = []
    for sign in (1, -1):
        x = atoms.copy()
        x.positions[i, k] += sign * h
        x.calc = U.CommitteeCalculator([a, b])
        e.append(x.get_potential_energy())
    assert -(e[0] - e[1]) / (2 * h) == pytest.approx(atoms.get_forces()[i, k], abs=1e-5)
    # identical members agree exactly
    same = atoms.copy()
    same.calc = U.CommitteeCalculator([a, copy.deepcopy(a)])
    same.get_forces()
    assert np.allclose(same.calc.results["force_sigma"], 0.0)
    with pytest.raises(ValueError, match="at least 2"):
        U.CommitteeCalculator([a])
    with pytest.raises(ValueError, match="training mode"):
        U.CommitteeCalculator([a, copy.deepcopy(a).train()])


def _al_bench():
    spec = importlib.util.spec_from_file_location("bench_active_learning", ROOT / "benchmarks" / "active_learning.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def check_flag_schema(res):
    keys = {"command", "date", "machine", "protocol", "threshold_eV_A", "multiples", "runs", "test_sigma_eV_A"}
    assert keys <= set(res)
    assert res["threshold_eV_A"] == pytest.approx(np.quantile(res["test_sigma_eV_A"], 0.99))
    temps = {r["temperature_K"] for r in res["runs"]}
    assert {500.0, 1000.0} <= temps
    for r in res["runs"]:
        assert set(r["first_crossing_fs"]) == set(r["lead_time_fs"]) == {str(m) for m in res["multiples"]}
        assert len(r["trace"]["time_fs"]) == len(r["trace"]["sigma_eV_A"])
        if r["failure_time_fs"] is None:
            assert all(v is None for v in r["lead_time_fs"].values())
        for lead in r["lead_time_fs"].values():
            if lead is not None:
                assert 0 <= lead <= r["failure_time_fs"]


def check_al_schema(res, seeds, rounds):
    assert {"command", "date", "machine", "protocol", "seeds"} <= set(res)
    assert sorted(s["seed"] for s in res["seeds"]) == seeds
    p = res["protocol"]
    for s in res["seeds"]:
        assert set(s["arms"]) == {"al", "random"}
        # round 0 is the same committee for both arms
        assert s["arms"]["al"][0]["force_mae_500K_meV_A"] == s["arms"]["random"][0]["force_mae_500K_meV_A"]
        for rows in s["arms"].values():
            assert [r["round"] for r in rows] == list(range(rounds + 1))
            assert rows[0]["labels"] == p["n_initial"]
            for r in rows:
                assert r["force_mae_500K_meV_A"] > 0 and r["force_mae_1000K_meV_A"] > 0
                assert len(r["failure_time_fs"]) == p["replicas"]
                assert 0 < r["mean_time_to_failure_fs"] <= 1000 * p["limit_ps"] + 1e-6
            for a, b in zip(rows, rows[1:]):
                assert b["labels"] - a["labels"] == b["selection"]["selected"] - b["selection"]["xtb_dropped"]
                assert b["selection"]["selected"] <= p["n_add"]
        # equal budgets: nearly the same number of labels per round in both arms (the pool is topped up until n_add
        # frames can be picked in time order; the greedy pick in the arm's own order can find up to a few fewer) and
        # the same gradient steps up to rounding to whole epochs
        for a, b in zip(s["arms"]["al"][1:], s["arms"]["random"][1:]):
            assert abs(a["labels"] - b["labels"]) <= 3
            assert abs(a["training"]["steps"] - b["training"]["steps"]) <= -(-max(a["labels"], b["labels"]) // 10)


def test_active_learning_benchmark_quick(tmp_path, one_thread):
    mod = _al_bench()
    res = mod.main(["flag", "--quick", "--out", str(tmp_path)])
    check_flag_schema(json.loads((tmp_path / "active_learning_flag.json").read_text()))
    assert res["protocol"]["driving"] == "committee mean"
    if importlib.util.find_spec("tblite") is None:
        pytest.skip("GFN2-xTB (tblite) not installed: the active-learning part labels frames with it")
    mod.main(["al", "--quick", "--out", str(tmp_path)])
    check_al_schema(json.loads((tmp_path / "active_learning.json").read_text()), [0], 1)


def test_shipped_active_learning_results_have_the_schema():
    flag = ROOT / "benchmarks" / "results" / "active_learning_flag.json"
    al = ROOT / "benchmarks" / "results" / "active_learning.json"
    if not flag.exists() or not al.exists():
        pytest.skip("benchmarks/results/active_learning*.json not made yet (python benchmarks/active_learning.py)")
    check_flag_schema(json.loads(flag.read_text()))
    res = json.loads(al.read_text())
    assert len(res["seeds"]) >= 3
    check_al_schema(res, sorted(s["seed"] for s in res["seeds"]), res["protocol"]["rounds"])
