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


# ------------------------------------------------------------------ 04.nbody_design (a design exercise)
# The verdicts of the real run (NBODY_STEPS steps) are calibrated by grading/hidden/reference/calibrate_nb04.py
# (INSTRUCTORS.md section 9); here the hidden test runs with a few steps, so that these tests take seconds.

FEW_STEPS = 40


def _hidden_design(cls, steps=FEW_STEPS):
    """Per-case scores and messages of the hidden test of 04.nbody_design (public case + two hidden ones)."""
    path = Path(__file__).resolve().parents[1] / "grading" / "hidden" / "nb04.py"
    spec = importlib.util.spec_from_file_location("_hidden_nb04_design", path)
    hidden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hidden)
    fb = Feedback()
    hidden.HIDDEN["04.nbody_design"](cls, fb, steps=steps)
    return [score for _, score in fb.cases], " | ".join(fb.failed), " | ".join(fb.passed)


def _pairs(data):
    b = data.batch
    return torch.nonzero((b[:, None] == b[None, :]) & ~torch.eye(len(b), dtype=torch.bool), as_tuple=True)


class DistanceOnly(torch.nn.Module):
    """Equivariant but blind to the charges: x + t v + (1/M) sum_j phi(|x_ij|) x_ij."""

    def __init__(self):
        super().__init__()
        self.t = torch.nn.Parameter(torch.tensor(0.7))
        self.phi = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1))

    def forward(self, data):
        i, j = _pairs(data)
        d = data.pos[i] - data.pos[j]
        push = torch.zeros_like(data.pos).index_add(0, i, self.phi(d.norm(dim=-1, keepdim=True)) * d) / 5
        return data.pos + self.t * data.vel + push


class Integrator(DistanceOnly):
    """Newton's equations integrated in the forward pass (leapfrog, 100 steps, clipped forces): no learning."""

    def forward(self, data):
        i, j = _pairs(data)
        q = data.charge.to(data.pos.dtype)
        x, v, dt = data.pos, data.vel, 0.01

        def force(x):
            d = x[i] - x[j]
            f = torch.zeros_like(x).index_add(0, i, (q[i] * q[j])[:, None] * d / d.norm(dim=-1, keepdim=True) ** 3)
            return f * (100.0 / f.norm(dim=-1, keepdim=True).clamp_min(100.0))

        f = force(x)
        for _ in range(100):
            v = v + 0.5 * dt * f
            x = x + dt * v
            f = force(x)
            v = v + 0.5 * dt * f
        return x + 0.0 * self.t


def test_nbody_design_accepts_the_reference(monkeypatch):
    from course_lib.teaching.exercises import nb04 as checkers

    # a few steps do not reach the real bar: a bar between the reference after FEW_STEPS steps and the linear model
    monkeypatch.setattr(checkers, "NBODY_MSE_BAR", 0.065)
    scores, failed, passed = _hidden_design(nb04.NBodyModel)
    assert scores == [1.0, 1.0, 1.0], failed
    for name in ("rotation", "reflection", "translation", "permutation"):
        assert f"equivariant under {name}" in passed
    assert "25702 parameters (budget 50000)" in passed and "(the linear x + t v: 0.0" in passed


def test_nbody_design_scores_a_broken_symmetry_zero_and_names_it():
    class Absolute(nb04.NBodyModel):  # reads the coordinates: no rotation, reflection or translation symmetry
        def forward(self, data):
            return super().forward(data) + 0.01 * torch.tanh(data.pos)

    scores, failed, _ = _hidden_design(Absolute, steps=1)
    assert scores == [0.0, 0.0, 0.0], scores
    for name in ("rotation", "reflection", "translation"):
        assert f"not equivariant under {name}: the prediction is off by" in failed
    assert "not equivariant under permutation" not in failed and "scores 0" in failed

    class FirstParticle(nb04.NBodyModel):  # the first particle of each system is special
        def forward(self, data):
            first = (torch.arange(len(data.pos)) % 5 == 0).to(data.pos.dtype)[:, None]
            return super().forward(data) + 0.01 * first * data.vel

    scores, failed, _ = _hidden_design(FirstParticle, steps=1)
    assert scores == [0.0, 0.0, 0.0] and "not equivariant under permutation" in failed
    assert "not equivariant under rotation" not in failed


def test_nbody_design_a_weak_design_misses_the_bar_with_numbers():
    scores, failed, _ = _hidden_design(DistanceOnly)
    assert all(0.0 < s < 0.5 for s in scores), scores
    assert "missed the accuracy bar" in failed and "your model's test MSE is" in failed and "the bar is 0.03" in failed
    assert "scores 0" not in failed and "not equivariant" not in failed


def test_nbody_design_budgets_and_learning():
    scores, failed, _ = _hidden_design(lambda: nb04.NBodyModel(hidden=64, num_layers=4), steps=1)
    assert scores == [0.0, 0.0, 0.0] and "over the budget: 134024 parameters > 50000" in failed
    scores, failed, _ = _hidden_design(Integrator, steps=1)
    assert scores == [0.0, 0.0, 0.0] and "the untrained model already reaches the bar" in failed
    res = check("04.nbody_design", lambda: torch.nn.Linear(3, 3), verbose=False)
    assert not res.passed and "the model on 3 random systems raised" in " ".join(res.messages)  # it reads no batch
    res = check("04.nbody_design", lambda: None, verbose=False)
    assert not res.passed and "must be a torch.nn.Module" in " ".join(res.messages)


def test_nbody_design_a_diverging_training_misses_the_bar_and_keeps_the_symmetries_share():
    class Exploding(DistanceOnly):  # equivariant, but the first Adam step (1e-3) makes exp(1e9 dt^2) overflow
        def forward(self, data):
            scale = torch.exp(1e9 * (self.t - 0.7 + 1e-6) ** 2)
            return data.pos + scale * data.vel + 0.0 * super().forward(data)

    scores, failed, _ = _hidden_design(Exploding, steps=5)
    assert all(0.0 < s < 0.5 for s in scores), (scores, failed)
    assert "the training diverged" in failed
