"""The notebook-05 checkers accept the reference solutions and reject typical mistakes."""

import torch
from reference_solutions import reference

from course_lib.graph import scatter_sum
from course_lib.losses import energy_force_loss
from course_lib.models import energy_and_forces
from course_lib.teaching.exercises import check

nb05 = reference("nb05")


def _msgs(res):
    return " ".join(res.messages) + (res.error or "")


def test_gaussian_expansion_reference_and_mistakes():
    for seed in (0, 1):
        live = {"expected": nb05.compute} if seed else {}  # hidden cases: the reference computes, nothing stored
        assert check("05.gaussian_expansion", nb05.gaussian_expansion, verbose=False, seed=seed, **live).passed
    res = check("05.gaussian_expansion", lambda r, mu, g: torch.exp(-g * (r[:, None] - mu).abs()), verbose=False)
    assert not res.passed and "squared" in _msgs(res)
    res = check("05.gaussian_expansion", lambda r, mu, g: torch.exp(-g * (r[None] - mu[:, None]) ** 2), verbose=False)
    assert not res.passed and "transpose" in _msgs(res)
    res = check("05.gaussian_expansion", lambda r, mu, g: torch.exp(-(r[:, None] - mu) ** 2 / g), verbose=False)
    assert not res.passed and "divided" in _msgs(res)
    res = check("05.gaussian_expansion",
                lambda r, mu, g: torch.exp(-g * (r[:, None] - mu) ** 2).double(), verbose=False)
    assert not res.passed and "float32" in _msgs(res)

    def stub(r, mu, g):
        raise NotImplementedError

    assert "not implemented" in check("05.gaussian_expansion", stub, verbose=False).error


def test_cfconv_reference_and_mistakes():
    for seed in (0, 1, 2):
        live = {"expected": nb05.compute} if seed else {}
        assert check("05.cfconv", nb05.cfconv, verbose=False, seed=seed, **live).passed
    res = check("05.cfconv", lambda y, W, ei: nb05.cfconv(y, W, ei.flip(0)), verbose=False)
    assert not res.passed and "source j" in _msgs(res)
    res = check("05.cfconv", lambda y, W, ei: scatter_sum(y[ei[1]] * W, ei[1], y.shape[0]), verbose=False)
    assert not res.passed and "target's own" in _msgs(res)

    def mean(y, W, ei):
        deg = torch.bincount(ei[1], minlength=y.shape[0]).clamp_min(1)[:, None]
        return nb05.cfconv(y, W, ei) / deg

    res = check("05.cfconv", mean, verbose=False)
    assert not res.passed and "averaged" in _msgs(res)
    res = check("05.cfconv", lambda y, W, ei: scatter_sum(y[ei[0]] * W, ei[1], int(ei[1].max()) + 1), verbose=False)
    assert not res.passed and "shape" in _msgs(res)


def test_force_loss_reference_and_mistakes():
    for seed in (0, 1):
        live = {"expected": nb05.compute} if seed else {}
        assert check("05.force_loss", nb05.force_loss, verbose=False, seed=seed, **live).passed

    def wrong_sign(model, batch, rho):
        E, F = energy_and_forces(model, batch)
        n = torch.bincount(batch.batch).to(E.dtype)
        sq = scatter_sum(((F + batch.forces) ** 2).sum(-1), batch.batch, batch.num_graphs)
        return (rho * (E - batch.energy) ** 2 + sq / n).mean()

    res = check("05.force_loss", wrong_sign, verbose=False)
    assert not res.passed and "MINUS" in _msgs(res)

    def no_norm(model, batch, rho):
        E, F = energy_and_forces(model, batch)
        sq = scatter_sum(((F - batch.forces) ** 2).sum(-1), batch.batch, batch.num_graphs)
        return (rho * (E - batch.energy) ** 2 + sq).mean()

    res = check("05.force_loss", no_norm, verbose=False)
    assert not res.passed and "number of atoms" in _msgs(res)

    def detached_forces(model, batch, rho):
        E, F = energy_and_forces(model, batch, create_graph=False)
        n = torch.bincount(batch.batch).to(E.dtype)
        sq = scatter_sum(((F - batch.forces) ** 2).sum(-1), batch.batch, batch.num_graphs)
        return (rho * (E - batch.energy) ** 2 + sq / n).mean()

    res = check("05.force_loss", detached_forces, verbose=False)
    assert not res.passed and "create_graph" in _msgs(res)

    res = check("05.force_loss", lambda m, b, rho: energy_force_loss(m, b, rho, forces=False), verbose=False)
    assert not res.passed and "force term is missing" in _msgs(res)

    def modifies_batch(model, batch, rho):
        batch.pos.requires_grad_(True)
        E = model(batch)
        (g,) = torch.autograd.grad(E.sum(), batch.pos, create_graph=True)
        n = torch.bincount(batch.batch).to(E.dtype)
        sq = scatter_sum(((-g - batch.forces) ** 2).sum(-1), batch.batch, batch.num_graphs)
        return (rho * (E - batch.energy) ** 2 + sq / n).mean()

    res = check("05.force_loss", modifies_batch, verbose=False)
    assert not res.passed and "untouched" in _msgs(res)


def _hidden():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "grading" / "hidden" / "nb05.py"
    spec = importlib.util.spec_from_file_location("_hidden_nb05", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_hidden_tests_accept_the_references_and_reject_a_mistake():
    from course_lib.teaching.checks import Feedback

    hidden = _hidden()
    refs = {"05.gaussian_expansion": nb05.gaussian_expansion, "05.cfconv": nb05.cfconv,
            "05.force_loss": nb05.force_loss, "05.smooth_basis": nb05.smooth_basis}
    assert set(hidden.HIDDEN) == set(refs)
    for ex, fn in refs.items():
        fb = Feedback()
        hidden.HIDDEN[ex](fn, fb)
        assert not fb.failed and not getattr(fb, "test_errors", []), (ex, fb.failed, fb.test_errors)
        assert all(score == 1.0 for _, score in fb.cases), (ex, fb.cases)

    def global_norm(model, batch, rho):  # passes some public cases, fails the mixed-size hidden one
        E, F = energy_and_forces(model, batch)
        return (rho * (E - batch.energy) ** 2).mean() + ((F - batch.forces) ** 2).sum() / batch.num_nodes

    fb = Feedback()
    hidden.HIDDEN["05.force_loss"](global_norm, fb)
    assert fb.failed and min(score for _, score in fb.cases) < 1.0


# ------------------------------------------------------------------ 05.smooth_basis (a design exercise)


def _hidden_scores(fn):
    """Per-case scores and messages of the hidden test of 05.smooth_basis (public case + two hidden ones)."""
    import importlib.util
    from pathlib import Path

    from course_lib.teaching.checks import Feedback

    path = Path(__file__).resolve().parents[1] / "grading" / "hidden" / "nb05.py"
    spec = importlib.util.spec_from_file_location("_hidden_nb05_design", path)
    hidden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hidden)
    fb = Feedback()
    hidden.HIDDEN["05.smooth_basis"](fn, fb)
    return [score for _, score in fb.cases], " | ".join(fb.failed)


def gaussians(r, cutoff, k=12, envelope="cos", mask=True):
    """Another design than the reference's Bessel functions: k Gaussians on [0, r_c] times an envelope."""
    mu = torch.linspace(0, cutoff, k, dtype=r.dtype)
    env = {"cos": 0.5 * (torch.cos(torch.pi * r / cutoff) + 1), "linear": 1 - r / cutoff,
           "none": torch.ones_like(r)}[envelope]
    b = torch.exp(-(((r[:, None] - mu) / (cutoff / k)) ** 2)) * env[:, None]
    return torch.where((r < cutoff)[:, None], b, torch.zeros_like(b)) if mask else b


def test_smooth_basis_accepts_the_reference_and_another_design():
    for fn in (nb05.smooth_basis, gaussians):
        scores, failed = _hidden_scores(fn)
        assert scores == [1.0, 1.0, 1.0], failed


def test_smooth_basis_scores_a_broken_property_zero_and_names_it():
    scores, failed = _hidden_scores(lambda r, rc: gaussians(r, rc, envelope="none"))  # a hard cutoff
    assert scores == [0.0, 0.0, 0.0] and "the energy jumps when a pair crosses the cutoff" in failed, failed
    scores, failed = _hidden_scores(lambda r, rc: gaussians(r, rc, envelope="linear"))  # value 0, slope not
    assert scores == [0.0, 0.0, 0.0] and "the forces jump when a pair crosses the cutoff" in failed, failed
    assert "energy jumps" not in failed
    scores, failed = _hidden_scores(lambda r, rc: gaussians(r, rc, mask=False))  # the cosine comes back up
    assert scores == [0.0, 0.0, 0.0] and "not zero beyond the cutoff" in failed
    scores, failed = _hidden_scores(lambda r, rc: gaussians(r, rc) / gaussians(r, rc).sum())  # mixes the edges
    assert scores == [0.0, 0.0, 0.0] and "each row must depend on its own distance only" in failed
    scores, failed = _hidden_scores(lambda r, rc: gaussians(r.detach(), rc))
    assert scores == [0.0, 0.0, 0.0] and "not differentiable" in failed


def test_smooth_basis_a_weak_design_misses_the_bar_with_numbers():
    scores, failed = _hidden_scores(lambda r, rc: gaussians(r, rc, k=3))
    assert 0.0 < min(scores) < 0.5 and sum(s < 1 for s in scores) >= 2, scores
    assert "missed the accuracy bar on the Morse bond" in failed and "relative mean absolute error of" in failed
    assert "scores 0" not in failed
    res = check("05.smooth_basis", lambda r, rc: gaussians(r, rc, k=20), verbose=False)
    assert not res.passed and "the budget is 16 functions" in _msgs(res)
