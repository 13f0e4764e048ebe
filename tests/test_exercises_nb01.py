"""The notebook-01 checkers accept the reference solutions and reject typical mistakes, each with its own
diagnosis (and only that one), on the stored expected outputs and on the live reference (hidden cases)."""

import pytest
import torch
from reference_solutions import reference

from course_lib.graph import scatter_sum
from course_lib.teaching.exercises import check
from course_lib.teaching.exercises import nb01 as checkers

nb01 = reference("nb01")


def _msgs(res):
    return " ".join(res.messages) + (res.error or "")


def test_minimum_image_reference_and_mistakes():
    assert check("01.minimum_image", nb01.minimum_image, verbose=False).passed
    floor = lambda dx, L: dx - L * torch.floor(dx / L)
    res = check("01.minimum_image", floor, verbose=False)
    assert not res.passed and "L/2" in _msgs(res)
    trunc = lambda dx, L: dx - L * (dx / L).trunc()
    assert not check("01.minimum_image", trunc, verbose=False).passed
    scalar_L = lambda dx, L: dx - L[0] * torch.round(dx / L[0])
    res = check("01.minimum_image", scalar_L, verbose=False)
    assert not res.passed and "own box length" in _msgs(res)

    def stub(dx, L):
        raise NotImplementedError

    res = check("01.minimum_image", stub, verbose=False)
    assert not res.passed and "not implemented" in res.error


def test_message_passing_reference_and_mistakes():
    assert check("01.message_passing_step", nb01.message_passing_step, verbose=False).passed

    def swapped(h, e, ei, pe, ph, w):
        return nb01.message_passing_step(h, e, ei.flip(0), pe, ph, w)

    res = check("01.message_passing_step", swapped, verbose=False)
    assert not res.passed and "edge_index[0] is the source" in _msgs(res)

    def no_residual(h, e, ei, pe, ph, w):
        return nb01.message_passing_step(h, e, ei, pe, ph, w) - h

    res = check("01.message_passing_step", no_residual, verbose=False)
    assert "residual" in _msgs(res)

    def mean_agg(h, e, ei, pe, ph, w):
        j, i = ei
        m = w[:, None] * pe(torch.cat([h[i], h[j], e], -1))
        deg = torch.bincount(i, minlength=h.shape[0]).clamp_min(1).to(h.dtype)[:, None]
        return h + ph(torch.cat([h, scatter_sum(m, i, h.shape[0]) / deg], -1))

    res = check("01.message_passing_step", mean_agg, verbose=False)
    assert "sum aggregation" in _msgs(res)


def test_message_passing_without_the_cutoff_weight_is_named():
    """The first version of the exercise (no cutoff weight) and weighting the edge features instead of the
    message are each told what is wrong, once."""
    def unweighted(h, e, ei, pe, ph, w):
        return nb01.message_passing_step(h, e, ei, pe, ph, torch.ones_like(w))

    res = check("01.message_passing_step", unweighted, verbose=False)
    assert not res.passed and len(res.messages) == 1 and "not weighted by the cutoff" in res.messages[0]

    def weighted_features(h, e, ei, pe, ph, w):
        return nb01.message_passing_step(h, w[:, None] * e, ei, pe, ph, torch.ones_like(w))

    res = check("01.message_passing_step", weighted_features, verbose=False)
    assert not res.passed and len(res.messages) == 1 and "weighted the edge features" in res.messages[0]


def test_invariance_error_reference_and_mistakes():
    assert check("01.invariance_error", nb01.invariance_error, verbose=False).passed
    forgot = lambda model, data, T: float((model(data) - model(data)).abs().max())
    res = check("01.invariance_error", forgot, verbose=False)
    assert not res.passed and "apply the transform" in _msgs(res)
    tensor_out = lambda model, data, T: (model(T(data)) - model(data)).abs()
    res = check("01.invariance_error", tensor_out, verbose=False)
    assert not res.passed and "single number" in _msgs(res)


def test_minimum_image_diagnoses_are_specific():
    """A sign error is told about the sign, a floor about round-not-floor, and neither about the other."""
    sign = lambda dx, L: dx + L * torch.round(dx / L)
    msgs = _msgs(check("01.minimum_image", sign, verbose=False))
    assert "sign error" in msgs and "floor" not in msgs
    floor = lambda dx, L: dx - L * torch.floor(dx / L)
    msgs = _msgs(check("01.minimum_image", floor, verbose=False))
    assert "floor" in msgs and "sign" not in msgs
    negated = lambda dx, L: L * torch.round(dx / L) - dx
    msgs = _msgs(check("01.minimum_image", negated, verbose=False))
    assert "opposite sign" in msgs and "floor" not in msgs


def _summed_at_source(h, e, ei, pe, ph, w):
    j, i = ei
    m = w[:, None] * pe(torch.cat([h[i], h[j], e], -1))
    return h + ph(torch.cat([h, scatter_sum(m, j, h.shape[0])], -1))


def test_message_passing_wrong_endpoint_is_named_once_and_scores_low():
    res = check("01.message_passing_step", _summed_at_source, verbose=False)
    assert len(res.messages) == 1, res.messages
    assert "source node j" in res.messages[0] and "concatenation" not in res.messages[0]
    assert res.fraction < 0.5  # right shape, wrong values: far from half the points


@pytest.mark.parametrize("seed", [1, 2])
def test_message_passing_hidden_seeds_use_the_live_reference(seed):
    """Other seeds are not stored: the hidden tests pass the reference's compute, with the same diagnoses."""
    ok = check("01.message_passing_step", nb01.message_passing_step, verbose=False, seed=seed, expected=nb01.compute)
    assert ok.passed and ok.fraction == 1.0
    res = check("01.message_passing_step", _summed_at_source, verbose=False, seed=seed, expected=nb01.compute)
    assert len(res.messages) == 1 and "source node j" in res.messages[0]
    missing = check("01.message_passing_step", nb01.message_passing_step, verbose=False, seed=seed)
    assert not missing.passed and "could not run" in missing.error  # no stored answer for a hidden case


def test_message_passing_notebook_hint_works_in_float64():
    """The hint of the notebook (index_add into zeros of the messages' dtype) passes with float64 inputs."""
    def hinted(h, e, edge_index, phi_e, phi_h, w):
        j, i = edge_index
        m_ij = w[:, None] * phi_e(torch.cat([h[i], h[j], e], dim=-1))
        m_i = torch.zeros(h.shape[0], m_ij.shape[1], dtype=m_ij.dtype).index_add(0, i, m_ij)
        return h + phi_h(torch.cat([h, m_i], dim=-1))

    assert check("01.message_passing_step", hinted, verbose=False).passed


def test_checker_modules_hold_no_reference():
    assert not hasattr(checkers, "message_passing_step") and not hasattr(checkers, "minimum_image")


# ------------------------------------------------------------------ 01.energy_features (a design exercise)


def _hidden_scores(fn):
    """Per-case scores and messages of the hidden test of 01.energy_features (public case + two hidden ones)."""
    import importlib.util
    from pathlib import Path

    from course_lib.teaching.checks import Feedback

    path = Path(__file__).resolve().parents[1] / "grading" / "hidden" / "nb01.py"
    spec = importlib.util.spec_from_file_location("_hidden_nb01_design", path)
    hidden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hidden)
    fb = Feedback()
    hidden.HIDDEN["01.energy_features"](fn, fb)
    return [score for _, score in fb.cases], " | ".join(fb.failed)


def _pairs(pos, charge, L):
    d = pos[:, None, :] - pos[None, :, :]
    d = d - L * torch.round(d / L)
    i, j = torch.triu_indices(len(pos), len(pos), 1)
    return d[i, j].norm(dim=-1), charge[i] * charge[j]


def physical_terms(pos, charge, L):
    """Another valid design, not the reference's radial basis: the sums over pairs within the cutoff of the terms
    the potential is made of (inverse powers, screened Coulomb with and without the charges)."""
    r, qq = _pairs(pos, charge, L)
    near = (r < 3.0).to(pos.dtype)
    terms = [near * r ** -k for k in (1, 2, 6, 12)] + [near * qq * torch.exp(-r) / r, near * qq * torch.exp(-r),
                                                        near * qq, near * qq * r, near, near * r]
    return torch.stack([t.sum() for t in terms])


def test_energy_features_accepts_the_reference_and_another_design():
    for fn in (nb01.energy_features, physical_terms):
        scores, failed = _hidden_scores(fn)
        assert scores == [1.0, 1.0, 1.0], (fn.__name__, failed)


def test_energy_features_scores_a_broken_symmetry_zero_and_names_it():
    def with_centre_of_mass(pos, charge, L):  # "the position helps": not invariant under the box's symmetries
        return torch.cat([physical_terms(pos, charge, L), pos.mean(0)])

    scores, failed = _hidden_scores(with_centre_of_mass)
    assert scores == [0.0, 0.0, 0.0], scores
    assert "not invariant under the translation: the features change by" in failed
    assert "not invariant under the 90 deg rotation of the box" in failed and "scores 0" in failed

    def open_boundaries(pos, charge, L):  # distances without the minimum image: blind to the periodic images
        return physical_terms(pos, charge, 1e9)

    scores, failed = _hidden_scores(open_boundaries)
    assert scores == [0.0, 0.0, 0.0] and "translation" in failed and "minimum-image" in failed

    def first_particle(pos, charge, L):  # depends on which particle is listed first
        return torch.cat([physical_terms(pos, charge, L), charge[:1]])

    scores, failed = _hidden_scores(first_particle)
    assert scores == [0.0, 0.0, 0.0] and "not invariant under the renumbering of the particles" in failed


def test_energy_features_a_weak_design_misses_the_bar_with_numbers():
    def counts(pos, charge, L):  # invariant, but blind to distances: N, the net charge, pairs within the cutoff
        r, qq = _pairs(pos, charge, L)
        near = (r < 3.0).to(pos.dtype)
        return torch.stack([torch.tensor(float(len(pos)), dtype=pos.dtype), charge.sum(), near.sum(),
                            (near * qq).sum()])

    scores, failed = _hidden_scores(counts)
    assert all(0.0 < s < 0.5 for s in scores), scores
    assert "missed the accuracy bar" in failed and "test MAE of" in failed and "the bar is 0.3" in failed
    assert "scores 0" not in failed and "not invariant" not in failed

    def blind(pos, charge, L):  # no positions at all: also invariant under the 30 degree rotation
        return torch.stack([torch.tensor(float(len(pos)), dtype=pos.dtype), charge.sum(), charge.sum() ** 2])

    scores, failed = _hidden_scores(blind)
    assert all(0.0 < s < 0.5 for s in scores) and "rotation by 30 deg" in failed, (scores, failed)


def test_energy_features_budgets(monkeypatch):
    res = check("01.energy_features", lambda p, q, L: physical_terms(p, q, L).repeat(7), verbose=False)  # 70 > 64
    assert not res.passed and "the budget is 64 features" in _msgs(res)
    monkeypatch.setattr(checkers, "FEATURE_SECONDS", 0.0)  # every design is "too slow" against a zero budget
    res = check("01.energy_features", physical_terms, verbose=False)
    assert not res.passed and "too slow" in _msgs(res) and "the budget is 0 s" in _msgs(res)
    res = check("01.energy_features", lambda p, q, L: physical_terms(p, q, L)[: 1 + len(p) % 2], verbose=False)
    assert not res.passed and "as on the first configuration" in _msgs(res)
