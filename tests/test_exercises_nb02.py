"""The notebook-02 checkers accept the reference solutions and reject typical mistakes."""

import torch
from reference_solutions import reference

from course_lib.graph import scatter_sum
from course_lib.neighbors import minimum_image
from course_lib.teaching.exercises import check

nb02 = reference("nb02")


def _msgs(res):
    return " ".join(res.messages) + (res.error or "")


def test_periodic_mse_reference_and_mistakes():
    assert check("02.periodic_mse", nb02.periodic_mse, verbose=False).passed
    res = check("02.periodic_mse", lambda p, t, L: (p - t).pow(2).mean(), verbose=False)
    assert not res.passed and "minimum image" in _msgs(res)
    res = check("02.periodic_mse", lambda p, t, L: minimum_image(p - t, L).pow(2).sum(), verbose=False)
    assert not res.passed and "sum instead of averaging" in _msgs(res)
    res = check("02.periodic_mse", lambda p, t, L: minimum_image(p - t, L).pow(2).sum(-1).mean(), verbose=False)
    assert not res.passed and "components too" in _msgs(res)
    res = check("02.periodic_mse", lambda p, t, L: minimum_image(p - t, L).pow(2).mean(0), verbose=False)
    assert not res.passed and "scalar" in _msgs(res)

    def stub(p, t, L):
        raise NotImplementedError

    res = check("02.periodic_mse", stub, verbose=False)
    assert not res.passed and "not implemented" in res.error


def _update(x, e, p, L, sign=1.0, image=True, norm="1+deg", wrap=True):
    j, i = e
    x_ij = sign * (x[i] - x[j])
    if image:
        x_ij = minimum_image(x_ij, L)
    deg = scatter_sum(torch.ones_like(p), i, x.shape[0])
    C = {"1+deg": 1 / (1 + deg), "deg": 1 / deg.clamp_min(1), "none": torch.ones_like(deg)}[norm]
    new = x + C * scatter_sum(x_ij * p, i, x.shape[0])
    return new - L * torch.floor(new / L) if wrap else new


def test_equivariant_update_reference_and_mistakes():
    assert check("02.equivariant_update", nb02.equivariant_update, verbose=False).passed
    assert check("02.equivariant_update", _update, verbose=False).passed
    cases = {
        "wrong sign": dict(sign=-1.0),
        "minimum image": dict(image=False),
        "1 / (1 + deg_i)": dict(norm="deg"),
        "normalisation C_i": dict(norm="none"),
        "outside [0, L)": dict(wrap=False),
    }
    for expected, kw in cases.items():
        res = check("02.equivariant_update", lambda x, e, p, L, kw=kw: _update(x, e, p, L, **kw), verbose=False)
        assert not res.passed and expected in _msgs(res), (expected, _msgs(res))
    res = check("02.equivariant_update", lambda x, e, p, L: _update(x, e.flip(0), p, L), verbose=False)
    assert not res.passed and "edge_index[0] is the source" in _msgs(res)

    def absolute(x, e, p, L):  # moves every particle along a fixed axis: not equivariant
        return _update(x, e, p, L) + 0.01 * torch.tensor([1.0, 0.0], dtype=x.dtype)

    res = check("02.equivariant_update", absolute, verbose=False)
    assert not res.passed

    def stub(x, e, p, L):
        raise NotImplementedError

    assert "not implemented" in check("02.equivariant_update", stub, verbose=False).error


def test_other_seeds_pass():
    for seed in (1, 2, 3):
        live = {"seed": seed, "expected": nb02.compute}  # the hidden cases: not stored, the reference computes
        assert check("02.equivariant_update", nb02.equivariant_update, verbose=False, **live).passed
        assert check("02.periodic_mse", nb02.periodic_mse, verbose=False, **live).passed
