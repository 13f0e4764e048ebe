"""The notebook-09 checkers accept the reference solutions and reject typical mistakes with specific messages."""

import importlib.util
from pathlib import Path

import torch

from course_lib.teaching.checks import Feedback
from course_lib.teaching.exercises import check
from tests.reference_solutions import reference

nb09 = reference("nb09")


def test_bond_vector_sum_accepts_the_reference():
    for kw in ({}, {"seed": 1, "n": 5}, {"seed": 2, "n": 20}):
        live = {"expected": nb09.compute} if kw else {}
        res = check("09.bond_vector_sum", nb09.bond_vector_sum, verbose=False, **kw, **live)
        assert res.passed, res


def _sum(sign=1.0, normalise=True, mean=False):
    def fn(pos, edge_index):
        j, i = edge_index
        d = sign * (pos[j] - pos[i])
        if normalise:
            d = d / d.norm(dim=-1, keepdim=True)
        out = torch.zeros_like(pos).index_add(0, i, d)
        if mean:
            out = out / torch.bincount(i, minlength=len(pos)).clamp_min(1)[:, None]
        return out
    return fn


def test_bond_vector_sum_diagnoses_mistakes():
    for fn, text in ((_sum(sign=-1.0), "sign is flipped"), (_sum(normalise=False), "unit"),
                     (_sum(mean=True), "do not average")):
        res = check("09.bond_vector_sum", fn, verbose=False)
        assert not res.passed and any(text in m for m in res.messages), res.messages
    res = check("09.bond_vector_sum", lambda p, e: p[:, :2], verbose=False)
    assert not res.passed and any("shape" in m for m in res.messages)
    stub = lambda p, e: (_ for _ in ()).throw(NotImplementedError("not implemented"))  # noqa: E731
    assert "not implemented" in check("09.bond_vector_sum", stub, verbose=False).error


def test_angle_feature_accepts_the_reference_and_other_designs():
    assert check("09.angle_feature", nb09.angle_feature, verbose=False).passed

    def sum_of_cosines(pos, edge_index):  # another valid design: sum over pairs of bonds of cos^2
        j, i = edge_index
        u = pos[j] - pos[i]
        u = u / u.norm(dim=-1, keepdim=True)
        same = (i[:, None] == i[None, :]) & ~torch.eye(len(i), dtype=torch.bool)
        c2 = (u @ u.T).pow(2) * same
        return torch.zeros(len(pos), dtype=pos.dtype).index_add(0, i, c2.sum(1))

    assert check("09.angle_feature", sum_of_cosines, verbose=False).passed


def test_angle_feature_rejects_distance_only_and_non_invariant_features():
    def distances_only(pos, edge_index):
        j, i = edge_index
        return torch.zeros(len(pos), dtype=pos.dtype).index_add(0, i, (pos[j] - pos[i]).norm(dim=-1))

    res = check("09.angle_feature", distances_only, verbose=False)
    assert not res.passed and any("bond lengths within the cutoff" in m for m in res.messages), res.messages
    assert all("invariant" not in m for m in res.messages)

    def x_coordinate(pos, edge_index):
        return pos[:, 0].clone()

    res = check("09.angle_feature", x_coordinate, verbose=False)
    assert any("not invariant under rotation" in m for m in res.messages)

    def all_atoms(pos, edge_index):  # angles, but to every atom: not local
        d = pos[None, :, :] - pos[:, None, :]
        n = d.norm(dim=-1, keepdim=True)
        u = torch.where(n > 0, d / n.clamp_min(1e-12), torch.zeros_like(d))
        return u.sum(1).pow(2).sum(-1)

    res = check("09.angle_feature", all_atoms, verbose=False)
    assert any("use only the pairs of edge_index" in m for m in res.messages)


def test_hidden_tests_run():
    path = Path(__file__).resolve().parents[1] / "grading" / "hidden" / "nb09.py"
    spec = importlib.util.spec_from_file_location("_hidden_nb09", path)
    hidden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hidden)
    for exercise_id, fn in (("09.bond_vector_sum", nb09.bond_vector_sum), ("09.angle_feature", nb09.angle_feature)):
        fb = Feedback()
        hidden.HIDDEN[exercise_id](fn, fb)
        assert not fb.failed, fb.failed
    fb = Feedback()
    hidden.HIDDEN["09.bond_vector_sum"](_sum(sign=-1.0), fb)
    assert fb.failed


def test_angle_feature_scores_a_broken_property_zero_and_a_missed_goal_a_fraction():
    """The design exercise's policy: the required properties are prerequisites (a case that breaks one scores
    0, with the broken properties named), separating the pairs is the goal (a symmetric feature that misses it
    keeps the non-value share)."""
    from course_lib.teaching.exercises.nb09 import check_angle_feature
    from course_lib.teaching.grading import run_cases

    def score(fn):
        fb = Feedback()
        run_cases(fb, fn, [("public", check_angle_feature, {})])
        return fb.cases[0][1], fb.failed

    def with_height(pos, edge_index):
        return nb09.angle_feature(pos, edge_index) + 0.1 * pos[:, 2]

    def lengths(pos, edge_index):
        j, i = edge_index
        return torch.zeros(len(pos), dtype=pos.dtype).index_add(0, i, (pos[j] - pos[i]).norm(dim=-1))

    assert score(nb09.angle_feature)[0] == 1.0
    broken, messages = score(with_height)
    assert broken == 0.0 and any("rotation invariance (error" in m and "scores 0" in m for m in messages), messages
    missed, messages = score(lengths)
    assert 0.0 < missed < 0.5 and not any("scores 0" in m for m in messages), (missed, messages)
