"""The notebook-10 checker accepts the reference solution and rejects typical mistakes with specific messages."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from reference_solutions import reference

from course_lib.teaching.exercises import check
from course_lib.teaching.exercises import nb10 as checkers

nb10 = reference("nb10")
EX = "10.harmonic_wavenumbers"
FLAG = "10.failure_flag"


def _msgs(res):
    return " ".join(res.messages) + (res.error or "")


def test_reference_passes_public_and_hidden_cases():
    for kw in ({}, {"seed": 1, "n": 3}, {"seed": 2, "n": 9}):
        live = {"expected": nb10.compute} if kw else {}
        res = check(EX, nb10.harmonic_wavenumbers, verbose=False, **kw, **live)
        assert res.passed, res


@pytest.mark.parametrize("variant, expected", [
    ("no mass weighting", "diagonalised the Hessian itself"),
    ("mass product", "not by m_i m_j"),
    ("masses tiled", "repeated per atom"),
    ("angular frequency", "divide by 2 pi"),
    ("no sqrt", "square root"),
    ("imaginary as positive", "must come out negative"),
    ("unsorted", "sorted in increasing order"),
])
def test_named_mistakes_get_their_message_once(variant, expected):
    res = check(EX, lambda h, m: nb10.compute(EX, variant, h, m), verbose=False)
    assert not res.passed and expected in _msgs(res), _msgs(res)
    assert "harmonic diatomic" not in _msgs(res)  # not reported again through its consequences


def test_nan_and_shape_and_wrong_constant():
    def nan(h, m):
        mm = np.repeat(m, 3)
        with np.errstate(invalid="ignore"):
            return np.sqrt(np.linalg.eigvalsh(h / np.sqrt(np.outer(mm, mm)))) * 521.47

    assert "NaN" in _msgs(check(EX, nan, verbose=False))
    assert "one wavenumber per coordinate" in _msgs(check(EX, lambda h, m: np.zeros(len(m)), verbose=False))
    res = check(EX, lambda h, m: 1.01 * nb10.harmonic_wavenumbers(h, m), verbose=False)
    assert not res.passed and "unit conversion" in _msgs(res) and "harmonic diatomic" in _msgs(res)


def test_hidden_tests_accept_the_reference_and_reject_a_non_invariant_answer():
    from course_lib.teaching.checks import Feedback

    path = Path(__file__).resolve().parents[1] / "grading" / "hidden" / "nb10.py"
    spec = importlib.util.spec_from_file_location("_hidden_nb10", path)
    hidden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hidden)
    assert set(hidden.HIDDEN) == {EX, FLAG}
    fb = Feedback()
    hidden.HIDDEN[EX](nb10.harmonic_wavenumbers, fb)
    assert not fb.failed and all(score == 1.0 for _, score in fb.cases), (fb.failed, fb.cases)

    def diagonal_only(h, m):  # ignores the couplings: wrong values, and not rotation invariant
        mm = np.repeat(m, 3)
        lam = np.sort(np.diag(h) / mm)
        return np.sign(lam) * np.sqrt(np.abs(lam)) * 521.47
    fb = Feedback()
    hidden.HIDDEN[EX](diagonal_only, fb)
    assert fb.failed


# ------------------------------------------------------------------ 10.failure_flag (a design exercise)


def _hidden_scores(fn):
    """Per-case scores and the failure messages of the hidden test of 10.failure_flag (public + two hidden)."""
    from course_lib.teaching.checks import Feedback

    path = Path(__file__).resolve().parents[1] / "grading" / "hidden" / "nb10.py"
    spec = importlib.util.spec_from_file_location("_hidden_nb10_design", path)
    hidden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hidden)
    fb = Feedback()
    hidden.HIDDEN[FLAG](fn, fb)
    return [score for _, score in fb.cases], " | ".join(fb.failed)


def _sigma(forces):
    """Per-atom disagreement [N] of member forces [M, N, 3]."""
    return ((forces - forces.mean(0)).pow(2).sum((0, 2)) / (forces.shape[0] - 1)).sqrt()


def largest_disagreement(z, pos, forces, energies):
    """Another valid design, section 8's: the largest per-atom disagreement (a 0-d tensor, not a float)."""
    return _sigma(forces).max()


def test_failure_flag_accepts_the_reference_and_another_design():
    for fn in (nb10.failure_score, largest_disagreement):
        scores, failed = _hidden_scores(fn)
        assert scores == [1.0, 1.0, 1.0], (fn.__name__, failed)


def test_failure_flag_scores_a_broken_symmetry_zero_and_names_it():
    def x_components(z, pos, forces, energies):  # the spread of the x components only: not rotation invariant
        return float(forces[..., 0].std(0).mean())

    scores, failed = _hidden_scores(x_components)
    assert scores == [0.0, 0.0, 0.0], scores
    assert "not invariant under the rotation of the frame" in failed and "the score changes by" in failed
    assert "scores 0" in failed and "translation" not in failed

    def first_atoms(z, pos, forces, energies):  # the carbons and the oxygen by their place in the list
        return float(_sigma(forces)[:3].mean())

    scores, failed = _hidden_scores(first_atoms)
    assert scores == [0.0, 0.0, 0.0] and "not invariant under the renumbering of the atoms" in failed, failed

    def two_members(z, pos, forces, energies):  # member 0 against member 1: the third is ignored
        return float((forces[0] - forces[1]).norm(dim=-1).mean())

    scores, failed = _hidden_scores(two_members)
    assert scores == [0.0, 0.0, 0.0] and "renumbering of the committee members" in failed, failed


def test_failure_flag_refuses_a_score_that_ignores_the_committee():
    def mean_energy(z, pos, forces, energies):  # ranks the frames about as well, but needs no committee
        return float(energies.mean())

    scores, failed = _hidden_scores(mean_energy)
    assert scores == [0.0, 0.0, 0.0] and "ignores the committee's disagreement" in failed, failed

    def falls(z, pos, forces, energies):  # a frame on which the members disagree more looks safer
        return -float(_sigma(forces).mean())

    scores, failed = _hidden_scores(falls)
    assert scores == [0.0, 0.0, 0.0] and "does not rise on every frame" in failed, failed


def test_failure_flag_a_weak_design_misses_the_bar_with_numbers():
    def energy_spread(z, pos, forces, energies):  # a committee score, but of the energies: blind to force errors
        return float(energies.std())

    scores, failed = _hidden_scores(energy_spread)
    assert all(0.0 < s < 0.5 for s in scores), scores
    assert "missed the bar" in failed and f"the bar is {checkers.AUROC_BAR}" in failed and "is 0." in failed
    assert "scores 0" not in failed and "not invariant" not in failed

    def mean_force(z, pos, forces, energies):  # large forces, large errors? plus a trace of the disagreement
        return float(forces.mean(0).norm(dim=-1).mean() + 1e-3 * _sigma(forces).mean())

    scores, failed = _hidden_scores(mean_force)
    assert all(0.0 < s < 0.5 for s in scores) and "missed the bar" in failed, (scores, failed)


def test_failure_flag_shape_budget_and_nan(monkeypatch):
    res = check(FLAG, lambda z, pos, forces, energies: _sigma(forces), verbose=False)  # per atom, not per frame
    assert not res.passed and "return one number per frame" in _msgs(res)
    res = check(FLAG, lambda z, pos, forces, energies: float(_sigma(forces).mean() / 0.0), verbose=False)
    assert not res.passed and "the score is inf" in _msgs(res)
    monkeypatch.setattr(checkers, "SCORE_SECONDS", 0.0)  # every design is "too slow" against a zero budget
    res = check(FLAG, nb10.failure_score, verbose=False)
    assert not res.passed and "too slow" in _msgs(res) and "the budget is 0 s" in _msgs(res)


def test_failure_flag_auroc():
    errors = np.arange(10.0)
    assert checkers.flag_auroc(errors, errors) == 1.0 and checkers.flag_auroc(-errors, errors) == 0.0
    assert checkers.flag_auroc(np.zeros(10), errors) == 0.5  # ties count one half
    assert torch.is_tensor(torch.as_tensor(checkers.flag_auroc(errors, errors)))
