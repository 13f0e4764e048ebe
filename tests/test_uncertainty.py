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
