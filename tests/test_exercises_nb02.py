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


# ------------------------------------------------------------------ 02.momentum_update (a design exercise)


def _hidden_scores(fn):
    """Per-case scores and messages of the hidden test of 02.momentum_update (public case + two hidden ones)."""
    import importlib.util
    from pathlib import Path

    from course_lib.teaching.checks import Feedback

    path = Path(__file__).resolve().parents[1] / "grading" / "hidden" / "nb02.py"
    spec = importlib.util.spec_from_file_location("_hidden_nb02_design", path)
    hidden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hidden)
    fb = Feedback()
    hidden.HIDDEN["02.momentum_update"](fn, fb)
    return [score for _, score in fb.cases], " | ".join(fb.failed)


def _pair_terms(pos, vel, charge, edge_index, L):
    j, i = edge_index
    x = minimum_image(pos[i] - pos[j], torch.tensor([L, L], dtype=pos.dtype))
    invariants = torch.stack([(x * x).sum(-1), charge[i] * charge[j], ((vel[i] - vel[j]) ** 2).sum(-1)], -1)
    return i, j, x, invariants


def _random_psi():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1)).double()


def test_momentum_update_accepts_the_reference_and_another_design():
    psi = _random_psi()

    def learned_pairs(pos, vel, charge, edge_index, L):  # a random MLP of symmetric invariants, plus a drag
        i, j, x, inv = _pair_terms(pos, vel, charge, edge_index, L)  # along v_i - v_j (also cancels in pairs)
        with torch.no_grad():
            kick = x * psi(inv) - 0.1 * (vel[i] - vel[j]) * torch.exp(-inv[:, :1])
        return vel + 0.05 * scatter_sum(kick, i, len(pos))

    for fn in (nb02.momentum_update, learned_pairs):
        scores, failed = _hidden_scores(fn)
        assert scores == [1.0, 1.0, 1.0], failed


def test_momentum_update_scores_a_broken_property_zero_and_names_it():
    psi = _random_psi()

    def normalised(pos, vel, charge, edge_index, L):  # the EGNN's C_i = 1 / (1 + deg_i): breaks conservation
        i, j, x, inv = _pair_terms(pos, vel, charge, edge_index, L)
        deg = scatter_sum(torch.ones(len(i), 1, dtype=pos.dtype), i, len(pos))
        with torch.no_grad():
            return vel + scatter_sum(x * psi(inv), i, len(pos)) / (1 + deg)

    scores, failed = _hidden_scores(normalised)
    assert scores == [0.0, 0.0, 0.0], scores
    assert "the total momentum changes by" in failed and "momentum conservation (|sum v' - sum v| =" in failed
    assert "not equivariant" not in failed  # it has every symmetry: only conservation is blamed

    def components(pos, vel, charge, edge_index, L):  # an MLP of the components of x_ij: not rotation equivariant
        i, j, x, inv = _pair_terms(pos, vel, charge, edge_index, L)
        return vel + 0.05 * scatter_sum(x * torch.tanh(x[:, :1] * x[:, 1:]), i, len(pos))

    scores, failed = _hidden_scores(components)
    assert scores == [0.0, 0.0, 0.0] and "not equivariant under the 90 deg rotation of the box" in failed

    def speeds(pos, vel, charge, edge_index, L):  # |v_i|^2 + |v_j|^2: symmetric, but not Galilean
        i, j, x, inv = _pair_terms(pos, vel, charge, edge_index, L)
        s = (vel[i] ** 2).sum(-1, keepdim=True) + (vel[j] ** 2).sum(-1, keepdim=True)
        return vel + 0.05 * scatter_sum(x * torch.exp(-inv[:, :1]) * s, i, len(pos))

    scores, failed = _hidden_scores(speeds)
    assert scores == [0.0, 0.0, 0.0] and "Galilean boost" in failed and "momentum" not in failed


def test_momentum_update_blind_to_positions_and_too_slow(monkeypatch):
    from course_lib.teaching.exercises import nb02 as checkers

    scores, failed = _hidden_scores(lambda pos, vel, charge, edge_index, L: vel.clone())
    assert all(0.0 < s < 0.5 for s in scores) and "ignores the positions" in failed, (scores, failed)
    monkeypatch.setattr(checkers, "UPDATE_SECONDS", 0.0)
    res = check("02.momentum_update", nb02.momentum_update, verbose=False)
    assert not res.passed and "too slow" in _msgs(res)
