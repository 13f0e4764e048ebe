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


def largest_disagreement(z, forces, energies):
    """Another valid design, section 8's: the largest per-atom disagreement (a 0-d tensor, not a float)."""
    return _sigma(forces).max()


def test_failure_flag_accepts_the_reference_and_another_design():
    for fn in (nb10.failure_score, largest_disagreement):
        scores, failed = _hidden_scores(fn)
        assert scores == [1.0, 1.0, 1.0], (fn.__name__, failed)


def test_failure_flag_scores_a_broken_symmetry_zero_and_names_it():
    def x_components(z, forces, energies):  # the spread of the x components only: not rotation invariant
        return float(forces[..., 0].std(0).mean())

    scores, failed = _hidden_scores(x_components)
    assert scores == [0.0, 0.0, 0.0], scores
    assert "not invariant under the rotation of the frame" in failed and "the score changes by" in failed
    assert "scores 0" in failed and "renumbering" not in failed

    def first_atoms(z, forces, energies):  # the carbons and the oxygen by their place in the list
        return float(_sigma(forces)[:3].mean())

    scores, failed = _hidden_scores(first_atoms)
    assert scores == [0.0, 0.0, 0.0] and "not invariant under the renumbering of the atoms" in failed, failed

    def two_members(z, forces, energies):  # member 0 against member 1: the third is ignored
        return float((forces[0] - forces[1]).norm(dim=-1).mean())

    scores, failed = _hidden_scores(two_members)
    assert scores == [0.0, 0.0, 0.0] and "renumbering of the committee members" in failed, failed


def test_failure_flag_refuses_a_score_that_ignores_the_committee():
    def mean_energy(z, forces, energies):  # ranks the frames about as well, but needs no committee
        return float(energies.mean())

    scores, failed = _hidden_scores(mean_energy)
    assert scores == [0.0, 0.0, 0.0] and "ignores the committee's disagreement" in failed, failed

    def falls(z, forces, energies):  # a frame on which the members disagree more looks safer
        return -float(_sigma(forces).mean())

    scores, failed = _hidden_scores(falls)
    assert scores == [0.0, 0.0, 0.0] and "does not rise on every frame" in failed, failed


def test_failure_flag_a_weak_design_misses_the_bar_with_numbers():
    def energy_spread(z, forces, energies):  # a committee score, but of the energies: blind to force errors
        return float(energies.std())

    scores, failed = _hidden_scores(energy_spread)
    assert all(0.0 < s < 0.5 for s in scores), scores
    assert "missed the bar" in failed and f"the bar is {checkers.AUROC_BAR}" in failed and "is 0." in failed
    assert "scores 0" not in failed and "not invariant" not in failed

    def mean_force(z, forces, energies):  # large forces, large errors? plus a trace of the disagreement
        return float(forces.mean(0).norm(dim=-1).mean() + 1e-3 * _sigma(forces).mean())

    scores, failed = _hidden_scores(mean_force)
    assert all(0.0 < s < 0.5 for s in scores) and "missed the bar" in failed, (scores, failed)


def test_failure_flag_shape_budget_and_nan(monkeypatch):
    res = check(FLAG, lambda z, forces, energies: _sigma(forces), verbose=False)  # per atom, not per frame
    assert not res.passed and "return one number per frame" in _msgs(res)
    res = check(FLAG, lambda z, forces, energies: float(_sigma(forces).mean() / 0.0), verbose=False)
    assert not res.passed and "the score is inf" in _msgs(res)
    monkeypatch.setattr(checkers, "SCORE_SECONDS", 0.0)  # every design is "too slow" against a zero budget
    res = check(FLAG, nb10.failure_score, verbose=False)
    assert not res.passed and "too slow" in _msgs(res) and "the budget is 0 s" in _msgs(res)


def test_failure_flag_auroc():
    errors = np.arange(10.0)
    assert checkers.flag_auroc(errors, errors) == 1.0 and checkers.flag_auroc(-errors, errors) == 0.0
    assert checkers.flag_auroc(np.zeros(10), errors) == 0.5  # ties count one half
    assert torch.is_tensor(torch.as_tensor(checkers.flag_auroc(errors, errors)))


# ------------------------------------------- 10.failure_flag: the two cheats (student code is hostile input)


def _hidden_module():
    path = Path(__file__).resolve().parents[1] / "grading" / "hidden" / "nb10.py"
    spec = importlib.util.spec_from_file_location("_hidden_nb10_cheats", path)
    hidden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hidden)
    return hidden


def test_failure_flag_never_passes_the_positions():
    """Cheat 2, the reference method: with the positions, GFN2-xTB (importable in the student's sandbox) gives the
    true error of a frame in milliseconds. The score receives z, the members' forces and energies, nothing else,
    and a submission written for positions fails with a message that says so."""
    seen = []

    def spy(*args):
        seen.append(tuple(tuple(a.shape) for a in args))
        return float(_sigma(args[1]).mean())

    assert check(FLAG, spy, verbose=False).passed
    assert set(seen) == {((9,), (3, 9, 3), (3,))}, set(seen)  # z, forces [M, N, 3], energies [M]: no [N, 3]

    def xtb_on_positions(z, pos, forces, energies):  # the cheat: the true error |F̄ - F_xTB| from the positions
        from ase import Atoms

        from course_lib.simulate.molecules import xtb_calculator

        atoms = Atoms(numbers=z.numpy(), positions=pos.numpy())
        atoms.calc = xtb_calculator()
        error = np.linalg.norm(forces.mean(0).numpy() - atoms.get_forces(), axis=-1).mean()
        return float(error + 1e-6 * _sigma(forces).mean())

    res = check(FLAG, xtb_on_positions, verbose=False)
    assert not res.passed and "without the positions" in _msgs(res), _msgs(res)


def _fingerprints(pos):
    """Sorted interatomic distances [F, N(N-1)/2] of frames pos [F, N, 3]: the same for a turned, moved or
    renumbered copy of a frame (what a look-up of a frame by its geometry would use)."""
    d = np.linalg.norm(pos[:, :, None] - pos[:, None], axis=-1)
    iu = np.triu_indices(pos.shape[1], 1)
    return np.sort(d[:, iu[0], iu[1]], axis=1)


def test_failure_flag_hidden_frames_are_in_no_public_file():
    """Cheat 1, the look-up: the public data (data/, readable by students) holds no frame of the hidden runs, nor
    anything close (the closest public frame differs by far more than round-off in its sorted distances)."""
    hidden = _hidden_module()
    public_frames = np.concatenate([checkers._source(name)[1] for name in ("500K train", "500K test", "1000K")])
    public_fp = _fingerprints(public_frames)
    for key, path in hidden.HIDDEN_FRAMES.items():
        z, pos, forces = checkers._source(str(path))
        assert (z == checkers._source("1000K")[0]).all() and len(pos) >= 2 * checkers.HIDDEN_SAMPLE[key]
        fp = _fingerprints(pos)
        sq = (fp**2).sum(1)[:, None] + (public_fp**2).sum(1)[None] - 2 * fp @ public_fp.T  # squared distances
        nearest = np.sqrt(np.clip(sq, 0.0, None)).min(1)
        assert nearest.min() > 0.01, (key, nearest.min())  # Å; a copy would be ~1e-12
        assert np.abs(forces).max() > 0.5  # real labels, not placeholders


def test_failure_flag_a_lookup_of_public_frames_finds_none_of_the_hidden_ones():
    """Cheat 1 as code: a score that recognises a frame by the committee's predictions (invariant fingerprints of
    the mean force) and returns its true error from a table built on public frames; it matches every frame of the
    public case and no frame of the hidden cases."""
    table = checkers.flag_sample()
    keys = np.sort(np.linalg.norm(table["forces"].mean(0), axis=-1), axis=1)  # [F, N]
    found = []

    def lookup(z, forces, energies):
        key = np.sort(forces.mean(0).norm(dim=-1).numpy())
        dist = np.abs(keys - key).max(1)
        found.append(bool(dist.min() < 1e-8))
        sigma = float(_sigma(forces).mean())
        return (float(table["error"][dist.argmin()]) + 1e-6 * sigma) if found[-1] else 1e-6 * sigma

    res = check(FLAG, lookup, verbose=False)  # the public sample: every frame looked up, a perfect ranking
    assert res.passed and len(found) >= len(keys) and all(found[-len(keys):]), _msgs(res)
    found.clear()
    res = check(FLAG, lookup, verbose=False, seed=1, parts=_hidden_module().hidden_parts(1))
    assert len(found) >= sum(checkers.HIDDEN_SAMPLE.values()) and not any(found), sum(found)


def test_the_checker_sandbox_binds_the_hidden_frames_and_nothing_else_of_the_hidden_folder():
    from types import SimpleNamespace

    from course_lib.teaching.grading.runner import ExerciseRunner

    hidden = Path(__file__).resolve().parents[1] / "grading" / "hidden"
    bound = ExerciseRunner.hidden_files(SimpleNamespace(hidden_file=hidden / "nb10.py"))
    assert bound == [hidden / "nb10.py", hidden / "reference" / "nb10.py", hidden / "data" / "nb10"], bound
    assert all(p.is_file() for p in _hidden_module().HIDDEN_FRAMES.values())
    bound = ExerciseRunner.hidden_files(SimpleNamespace(hidden_file=hidden / "nb09.py"))
    assert hidden / "data" / "nb10" not in bound and not any("data" in p.parts[-2:] for p in bound), bound
