"""The notebook-04 checker accepts the reference, diagnoses the typical mistakes by name, and names the broken
symmetry of a non-equivariant answer with its error."""

import importlib.util
from pathlib import Path

import torch

from course_lib.teaching.checks import Feedback
from course_lib.teaching.exercises import check
from tests.reference_solutions import reference

nb04 = reference("nb04")
HIDDEN_CASES = ({"seed": 7, "systems": 4, "per_system": 3}, {"seed": 8, "systems": 1, "per_system": 9, "t": 0.5,
                                                             "c": 0.2})


def _messages(fn, **kw):
    res = check("04.coulomb_step", fn, verbose=False, **kw)
    return res, " | ".join(res.messages)


def _loop(pos, vel, charge, batch, t, c, sign=1.0, power=3, mean=False, across=False, absolute=False):
    """A plain double loop over the particles, with switches for the typical mistakes."""
    out = pos + t * vel
    for i in range(len(pos)):
        partners = [j for j in range(len(pos)) if j != i and (across or batch[j] == batch[i])]
        kick = torch.zeros(3, dtype=pos.dtype)
        for j in partners:
            d = pos[i] - pos[j]
            r = (pos[i].norm() - pos[j].norm()).abs() + 1.0 if absolute else d.norm()
            kick = kick + sign * charge[i] * charge[j] * d / r**power
        out[i] = out[i] + c * (kick / len(partners) if mean else kick)
    return out


def test_the_reference_and_another_correct_answer_pass():
    assert _messages(nb04.coulomb_step)[0].passed
    assert _messages(_loop)[0].passed
    for kw in HIDDEN_CASES:
        res, text = _messages(_loop, expected=nb04.compute, **kw)
        assert res.passed, text


def test_typical_mistakes_are_named():
    for kw, words in (({"sign": -1.0}, "like charges attract"), ({"power": 2}, "wrong power of the distance"),
                      ({"mean": True}, "Coulomb forces add up"), ({"across": True}, "different systems interact")):
        res, text = _messages(lambda *a, kw=kw: _loop(*a, **kw))
        assert not res.passed and words in text, (kw, text)
        assert "not equivariant" not in text  # these mistakes keep every symmetry: only the mistake is named
    res, text = _messages(lambda p, v, q, b, t, c: p + t * v)
    assert not res.passed and "free flight" in text


def test_a_non_equivariant_answer_fails_and_the_broken_symmetries_are_named():
    res, text = _messages(lambda *a: _loop(*a, absolute=True))  # a distance made of |x_i| and |x_j|: not translation
    assert not res.passed and "not equivariant under translation (error" in text
    assert "rotation (error" not in text  # |x| is rotation invariant: the rotation is not blamed

    def componentwise(pos, vel, charge, batch, t, c):  # a cube instead of a sphere: |d|_inf
        out = pos + t * vel
        d = pos[:, None] - pos[None]
        r = d.abs().amax(-1)
        w = torch.where((batch[:, None] == batch[None]) & (r > 0), charge[:, None] * charge[None] / r.clamp_min(1e-9)
                        ** 3, torch.zeros_like(r))
        return out + c * (w[..., None] * d).sum(1)

    res, text = _messages(componentwise)
    assert not res.passed and "not equivariant under rotation (error" in text and "translation (error" not in text


def test_shapes_and_stubs():
    res, text = _messages(lambda p, v, q, b, t, c: p[:, :2])
    assert not res.passed and "shape" in text
    stub = lambda *a: (_ for _ in ()).throw(NotImplementedError("not implemented"))  # noqa: E731
    assert "not implemented" in check("04.coulomb_step", stub, verbose=False).error


def test_hidden_tests_run():
    path = Path(__file__).resolve().parents[1] / "grading" / "hidden" / "nb04.py"
    spec = importlib.util.spec_from_file_location("_hidden_nb04", path)
    hidden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hidden)
    fb = Feedback()
    hidden.HIDDEN["04.coulomb_step"](nb04.coulomb_step, fb)
    assert not fb.failed, fb.failed
    fb = Feedback()
    hidden.HIDDEN["04.coulomb_step"](lambda *a: _loop(*a, sign=-1.0), fb)
    assert fb.failed and all(score < 1 for _, score in fb.cases)
