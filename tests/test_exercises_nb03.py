"""The notebook-03 checker accepts the reference and other valid designs, and names the broken (or the missing)
symmetry of typical wrong answers."""

import importlib.util
import math
from pathlib import Path

import torch

from course_lib.teaching.checks import Feedback
from course_lib.teaching.exercises import check
from tests.reference_solutions import reference

nb03 = reference("nb03")
CASES = ({}, {"seed": 5, "n": 20, "a": 1.7}, {"seed": 6, "n": 7, "a": 3.0})


def _messages(fn, **kw):
    res = check("03.crystal_feature", fn, verbose=False, **kw)
    return res, " | ".join(res.messages)


def test_the_reference_passes_every_case():
    for kw in CASES:
        res, text = _messages(nb03.crystal_feature, **kw)
        assert res.passed, text


def _nearest_sites(pos, a, k=4):
    """Distances to the k nearest sites (minimum image in the periodic crystal), sorted: another valid design."""
    cells = torch.arange(-2, 3, dtype=pos.dtype)
    offsets = torch.stack(torch.meshgrid(cells, cells, indexing="ij"), -1).reshape(-1, 2)
    local = pos / a - 0.5 - torch.floor(pos / a - 0.5)  # position in the unit cell of the nearest lower-left site
    d = (local[:, None, :] - offsets[None]).norm(dim=-1) * a
    return d.sort(dim=-1).values[:, :k]


def test_other_valid_designs_pass():
    for kw in CASES:
        assert _messages(_nearest_sites, **kw)[0].passed
        assert _messages(lambda p, a: torch.cos(2 * math.pi * p / a).prod(-1), **kw)[0].passed  # one column [N]


def test_a_feature_that_is_not_periodic_fails_the_lattice_translation():
    res, text = _messages(lambda p, a: (p - 2 * a).norm(dim=-1))  # distance to the box centre
    assert not res.passed and "not invariant under symmetries of the crystal: the lattice translation" in text
    assert "period a" in text


def test_a_feature_that_treats_x_and_y_differently_fails_the_point_group():
    res, text = _messages(lambda p, a: torch.cos(2 * math.pi * p[:, 0] / a))
    assert not res.passed and "the 90 deg rotation about a site (the feature changes by" in text
    assert "lattice translation" not in text  # cos(2 pi x / a) is periodic: only the point group is blamed
    assert "shift by a/2" not in text and "30 deg" not in text  # meaningless without the crystal's symmetries
    res, text = _messages(lambda p, a: torch.sin(2 * math.pi * p / a).sum(-1))  # odd about the sites
    assert not res.passed and "the mirror x -> -x about a site (the feature changes by" in text


def test_the_wrong_period_is_caught_by_the_half_shift():
    res, text = _messages(lambda p, a: torch.cos(4 * math.pi * p / a).sum(-1))
    assert not res.passed and "shift by a/2" in text and "period a/2" in text
    assert "not invariant" not in text  # it has every symmetry of the crystal: only the extra one is named


def test_an_isotropic_feature_is_caught_by_the_30_degree_rotation():
    res, text = _messages(lambda p, a: _nearest_sites(p, a, k=1))  # the distance to the nearest site only
    assert not res.passed and "rotated by 30 deg" in text and "isotropic" in text
    assert "shift by a/2" not in text


def test_constant_and_non_equivariant_answers_fail():
    res, text = _messages(lambda p, a: torch.ones(len(p), dtype=p.dtype))
    assert not res.passed and "a constant has every symmetry" in text
    res, text = _messages(lambda p, a: nb03.crystal_feature(p, a).sort(dim=0).values)  # rows no longer follow
    assert not res.passed and "not permutation equivariant" in text
    res, text = _messages(lambda p, a: nb03.crystal_feature(p, a)[:3])
    assert not res.passed and "one number per particle" in text
    stub = lambda p, a: (_ for _ in ()).throw(NotImplementedError("not implemented"))  # noqa: E731
    assert "not implemented" in check("03.crystal_feature", stub, verbose=False).error


def _hidden_fraction(hidden, fn):
    fb = Feedback()
    hidden.HIDDEN["03.crystal_feature"](fn, fb)
    return sum(score for _, score in fb.cases) / len(fb.cases)


def test_the_score_ranks_the_mistakes():
    """A feature without the crystal's symmetries earns less than half; one with an extra symmetry (it cannot tell
    places apart that the crystal distinguishes) earns more, but not full marks."""
    path = Path(__file__).resolve().parents[1] / "grading" / "hidden" / "nb03.py"
    spec = importlib.util.spec_from_file_location("_hidden_nb03_scores", path)
    hidden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hidden)
    broken = _hidden_fraction(hidden, lambda p, a: torch.cos(2 * math.pi * p[:, 0] / a))
    extra = _hidden_fraction(hidden, lambda p, a: torch.cos(4 * math.pi * p / a).sum(-1))
    right = _hidden_fraction(hidden, nb03.crystal_feature)
    assert broken < 0.5 < extra < right == 1.0, (broken, extra, right)


def test_hidden_tests_run():
    path = Path(__file__).resolve().parents[1] / "grading" / "hidden" / "nb03.py"
    spec = importlib.util.spec_from_file_location("_hidden_nb03", path)
    hidden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hidden)
    fb = Feedback()
    hidden.HIDDEN["03.crystal_feature"](nb03.crystal_feature, fb)
    assert not fb.failed, fb.failed
    fb = Feedback()
    hidden.HIDDEN["03.crystal_feature"](lambda p, a: torch.cos(2 * math.pi * p[:, 0] / a), fb)
    assert fb.failed and all(0 <= score < 1 for _, score in fb.cases)
