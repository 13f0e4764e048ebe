"""The notebook-01 checkers accept the reference solutions and reject typical mistakes."""

import torch

from course_lib.graph import scatter_sum
from course_lib.teaching.exercises import check, nb01


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

    def swapped(h, e, ei, pe, ph):
        return nb01.message_passing_step(h, e, ei.flip(0), pe, ph)

    res = check("01.message_passing_step", swapped, verbose=False)
    assert not res.passed and "edge_index[0] is the source" in _msgs(res)

    def no_residual(h, e, ei, pe, ph):
        return nb01.message_passing_step(h, e, ei, pe, ph) - h

    res = check("01.message_passing_step", no_residual, verbose=False)
    assert "residual" in _msgs(res)

    def mean_agg(h, e, ei, pe, ph):
        j, i = ei
        m = pe(torch.cat([h[i], h[j], e], -1))
        deg = torch.bincount(i, minlength=h.shape[0]).clamp_min(1).to(h.dtype)[:, None]
        return h + ph(torch.cat([h, scatter_sum(m, i, h.shape[0]) / deg], -1))

    res = check("01.message_passing_step", mean_agg, verbose=False)
    assert "sum aggregation" in _msgs(res)


def test_invariance_error_reference_and_mistakes():
    assert check("01.invariance_error", nb01.invariance_error, verbose=False).passed
    forgot = lambda model, data, T: float((model(data) - model(data)).abs().max())
    res = check("01.invariance_error", forgot, verbose=False)
    assert not res.passed and "apply the transform" in _msgs(res)
    tensor_out = lambda model, data, T: (model(T(data)) - model(data)).abs()
    res = check("01.invariance_error", tensor_out, verbose=False)
    assert not res.passed and "single number" in _msgs(res)
