"""The notebook-10 checker accepts the reference solution and rejects typical mistakes with specific messages."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from reference_solutions import reference

from course_lib.teaching.exercises import check

nb10 = reference("nb10")
EX = "10.harmonic_wavenumbers"


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
    assert set(hidden.HIDDEN) == {EX}
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
