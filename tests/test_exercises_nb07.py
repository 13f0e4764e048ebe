"""The notebook-07 checkers accept the reference solutions and reject typical mistakes with the right message."""

import math

import pytest
import torch
import torch.nn.functional as F
from e3nn import o3
from e3nn.math import normalize2mom
from reference_solutions import reference

from course_lib.graph import scatter_sum
from course_lib.models.radial import bessel_basis, cosine_cutoff, polynomial_envelope
from course_lib.teaching.exercises import check

nb07 = reference("nb07")


def _msgs(res):
    return " ".join(res.messages) + (res.error or "")


def _fails_with(exercise_id, fn, words, **kwargs):
    if kwargs:  # a hidden case: the reference computes, nothing stored
        kwargs["expected"] = nb07.compute
    res = check(exercise_id, fn, verbose=False, **kwargs)
    assert not res.passed, f"{exercise_id}: a mistake passed"
    text = _msgs(res)
    for w in ([words] if isinstance(words, str) else words):
        assert w in text, f"{exercise_id}: expected {w!r} in the feedback, got:\n{res}"
    return res


# -- 07.radial_basis ---------------------------------------------------------------------------------------


def test_radial_basis_reference_passes():
    for kw in ({}, {"seed": 1}, {"cutoff": 5.0, "num_basis": 4, "p": 3}):
        live = {"expected": nb07.compute} if kw else {}  # hidden cases: the reference computes
        assert check("07.radial_basis", nb07.radial_basis, verbose=False, **kw, **live).passed


def _bessel(r, rc, n_basis, start=1):
    n = torch.arange(start, start + n_basis, dtype=r.dtype)
    return 2.0 / rc * torch.sin(n * math.pi * r[:, None] / rc) / r[:, None]


@pytest.mark.parametrize("fn, words", [
    (lambda r, rc, k, p: bessel_basis(r, rc, k), "envelope is missing"),
    (lambda r, rc, k, p: bessel_basis(r, rc, k) * cosine_cutoff(r, rc)[:, None], "cosine cutoff"),
    (lambda r, rc, k, p: _bessel(r, rc, k, start=0) * polynomial_envelope(r, rc, p)[:, None], "n runs from 1"),
    (lambda r, rc, k, p: _bessel(r, rc, k) * rc / 2 * polynomial_envelope(r, rc, p)[:, None], "prefactor 2 / r_c"),
    (lambda r, rc, k, p: _bessel(r, rc, k) * r[:, None] * polynomial_envelope(r, rc, p)[:, None], "divide by r"),
    (lambda r, rc, k, p: (_bessel(r, rc, k) * polynomial_envelope(r, rc, p)[:, None]).T, "transpose"),
    (lambda r, rc, k, p: _bessel(r, rc, k) * nb07._envelope_without_cutoff(r, rc, p)[:, None], "must be 0"),
    (lambda r, rc, k, p: nb07.radial_basis(r.detach(), rc, k, p), "detached"),
    (lambda r, rc, k, p: nb07.radial_basis(r.double(), rc, k, p), "float32"),
])
def test_radial_basis_mistakes(fn, words):
    _fails_with("07.radial_basis", fn, words)


def test_radial_basis_fixed_exponent_is_named():
    _fails_with("07.radial_basis", lambda r, rc, k, p: nb07.radial_basis(r, rc, k, 6), "exponent p", p=3)


# -- 07.convolution ----------------------------------------------------------------------------------------


def _conv(x, pos, edge_index, tp, radial, rbf, avg, *, src="j", sign=1.0, norm="sqrt", swap=False, sh_norm=True):
    j, i = edge_index.flip(0) if swap else edge_index
    r = sign * (pos[j] - pos[i])
    Y = o3.spherical_harmonics(tp.irreps_in2, r, normalize=sh_norm, normalization="component")
    m = scatter_sum(tp(x[j] if src == "j" else x[i], Y, radial(rbf(r.norm(dim=-1)))), i, x.shape[0])
    deg = torch.bincount(i, minlength=x.shape[0]).clamp_min(1).to(m.dtype)[:, None]
    return {"sqrt": m / math.sqrt(avg), "avg": m / avg, "none": m, "mean": m / deg}[norm]


def test_convolution_reference_passes():
    for kw in ({}, {"seed": 1}, {"seed": 2, "l_max": 2, "mul": 2}):
        live = {"expected": nb07.compute} if kw else {}  # hidden cases: the reference computes
        assert check("07.convolution", nb07.convolution, verbose=False, **kw, **live).passed


@pytest.mark.parametrize("kw, words", [
    ({"src": "i"}, "NEIGHBOUR's features"),
    ({"sign": -1.0}, "pos[j] - pos[i]"),
    ({"swap": True}, "swapped the two rows"),
    ({"norm": "mean"}, "averaged"),
    ({"norm": "avg"}, "SQUARE ROOT"),
    ({"norm": "none"}, "normalisation is missing"),
    ({"sh_norm": False}, "normalize=True"),
])
def test_convolution_mistakes(kw, words):
    _fails_with("07.convolution", lambda *a: _conv(*a, **kw), words)


def test_convolution_other_mistakes():
    def per_edge(x, pos, edge_index, tp, radial, rbf, avg):  # forgot to sum into the atoms
        j, i = edge_index
        r = pos[j] - pos[i]
        return tp(x[j], o3.spherical_harmonics(tp.irreps_in2, r, True), radial(rbf(r.norm(dim=-1))))

    _fails_with("07.convolution", per_edge, "one row per edge")

    def absolute(x, pos, edge_index, tp, radial, rbf, avg):  # the direction of the neighbour's position itself
        j, i = edge_index
        r = pos[j] - pos[i]
        Y = o3.spherical_harmonics(tp.irreps_in2, pos[j], True, normalization="component")
        m = scatter_sum(tp(x[j], Y, radial(rbf(r.norm(dim=-1)))), i, x.shape[0])
        return m / math.sqrt(avg)

    _fails_with("07.convolution", absolute, ["translating", "differs"])

    def detached(*a):
        return _conv(*a).detach()

    _fails_with("07.convolution", detached, "detached from pos")

    def as_double(x, *a):
        return _conv(x.double(), *a)

    res = check("07.convolution", as_double, verbose=False)
    assert not res.passed and ("float32" in _msgs(res) or "raised" in _msgs(res))


# -- 07.gate -----------------------------------------------------------------------------------------------

SILU, TANH, SIGMOID = (normalize2mom(f) for f in (F.silu, torch.tanh, torch.sigmoid))


def _gate(scalars, gates, gated, irreps_scalars, irreps_gated, *, odd=TANH, even=SILU, gate_act=SIGMOID,
          tile=False, elementwise=False, keep_gates=False):
    out = [(even if ir.p == 1 else odd)(scalars[:, sl]) for (_, ir), sl in zip(irreps_scalars, irreps_scalars.slices())]
    g = gate_act(gates)
    k = 0
    for (mul, ir), sl in zip(irreps_gated, irreps_gated.slices()):
        block = gated[:, sl]
        if elementwise:
            out.append(SILU(block))
        elif tile:
            out.append(g[:, k:k + mul].repeat(1, ir.dim) * block)
        else:
            out.append((g[:, k:k + mul, None] * block.reshape(-1, mul, ir.dim)).reshape(block.shape))
        k += mul
    if keep_gates:
        out.append(g)
    return torch.cat(out, dim=-1)


def test_gate_reference_passes():
    for kw in ({}, {"seed": 1}, {"seed": 2, "muls": (1, 3, 1, 2, 2), "n": 3}):
        live = {"expected": nb07.compute} if kw else {}  # hidden cases: the reference computes
        assert check("07.gate", nb07.gate, verbose=False, **kw, **live).passed
    # the reference equals the course's GateNonlinearity on its own layout
    from course_lib.models.nequip import GateNonlinearity

    irreps = o3.Irreps("4x0e+2x1o+3x2e")
    gnl = GateNonlinearity(irreps, irreps, o3.Irreps.spherical_harmonics(2)).double()
    y = torch.randn(5, gnl.irreps_in.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    scalars, gates, gated = gnl.gate.sc(y)
    got = nb07.gate(scalars, gates, gated, gnl.gate.irreps_scalars, gnl.gate.irreps_gated)
    assert torch.allclose(got, gnl(y), atol=1e-12)


@pytest.mark.parametrize("kw, words", [
    ({"odd": SILU}, "ODD activation"),
    ({"gate_act": normalize2mom(F.silu)}, "SIGMOID"),
    ({"gate_act": lambda g: g}, "after a sigmoid"),
    ({"tile": True}, "repeat each gate"),
    ({"elementwise": True}, ["breaks rotations", "not equivariant"]),
    ({"keep_gates": True}, "not part of the output"),
    ({"odd": torch.tanh, "even": F.silu, "gate_act": torch.sigmoid}, "normalize2mom"),
])
def test_gate_mistakes(kw, words):
    _fails_with("07.gate", lambda *a: _gate(*a, **kw), words)


def test_gate_in_place_is_named():
    def in_place(scalars, gates, gated, irreps_scalars, irreps_gated):
        out = _gate(scalars, gates, gated, irreps_scalars, irreps_gated)
        gated.mul_(2.0)
        return out

    _fails_with("07.gate", in_place, "in place")


# -- hidden tests ------------------------------------------------------------------------------------------


def _hidden():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "grading" / "hidden" / "nb07.py"
    spec = importlib.util.spec_from_file_location("_hidden_nb07", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_hidden_tests_accept_the_references_and_reject_mistakes():
    from course_lib.teaching.checks import Feedback

    hidden = _hidden()
    refs = {"07.radial_basis": nb07.radial_basis, "07.convolution": nb07.convolution, "07.gate": nb07.gate}
    assert set(hidden.HIDDEN) == set(refs) | {"07.nequip_variant"}  # the design exercise: tests below
    for ex, fn in refs.items():
        fb = Feedback()
        hidden.HIDDEN[ex](fn, fb)
        assert not fb.failed and not getattr(fb, "test_errors", []), (ex, fb.failed, fb.test_errors)
        assert all(score == 1.0 for _, score in fb.cases), (ex, fb.cases)

    mistakes = {
        "07.radial_basis": lambda r, rc, k, p: nb07.radial_basis(r, rc, k, 6),  # ignores p: fails the p = 3 case
        "07.convolution": lambda *a: _conv(*a, norm="mean"),
        "07.gate": lambda *a: _gate(*a, odd=SILU),
    }
    for ex, fn in mistakes.items():
        fb = Feedback()
        hidden.HIDDEN[ex](fn, fb)
        assert fb.failed and min(score for _, score in fb.cases) < 1.0, ex


# --------------------------------------------------------------------------------------------
# 07.nequip_variant (design)
# --------------------------------------------------------------------------------------------


def _variant_score(cls):
    from course_lib.teaching.checks import Feedback
    from course_lib.teaching.exercises.nb07 import check_nequip_variant
    from course_lib.teaching.grading import run_cases

    fb = Feedback()
    run_cases(fb, cls, [("public", check_nequip_variant, {})])
    return fb.cases[0][1], fb.failed


def _variant(radial=None, l_max=1, hidden=8, radial_hidden=(16,), num_layers=2, extra=None, detach=False):
    """Variants of the reference: another radial basis, another l_max or width, or a deliberate mistake."""
    from course_lib.models.nequip import InteractionBlock, SphericalHarmonicEdgeAttrs, default_hidden_irreps

    base = nb07.NequIPVariant

    class Variant(base):
        def __init__(self):
            super().__init__(hidden=hidden, num_layers=num_layers)
            if radial is not None:
                self.radial = radial(self.cutoff)
            self.sh = SphericalHarmonicEdgeAttrs(l_max)
            irreps, blocks = o3.Irreps(f"{hidden}x0e"), []
            for _ in range(num_layers):
                blocks.append(InteractionBlock(irreps, default_hidden_irreps(hidden, l_max), self.sh.irreps_out,
                                               "3x0e", 8, radial_hidden=radial_hidden, gate="sigmoid"))
                irreps = blocks[-1].irreps_out
            self.blocks = torch.nn.ModuleList(blocks)
            self.readout = o3.Linear(irreps, "1x0e")

        def forward(self, batch):
            if detach:
                batch = batch.clone()
                batch.pos = batch.pos.detach()
            e = super().forward(batch)
            if extra is not None:
                e = e + extra(batch)
            return e

    return Variant


class _GaussianCosine(torch.nn.Module):
    """Another radial design: Gaussians times SchNet's cosine cutoff (C1 at r_c)."""

    def __init__(self, cutoff, envelope=True):
        from course_lib.models.radial import GaussianRBF

        super().__init__()
        self.cutoff, self.envelope = cutoff, envelope
        self.rbf = GaussianRBF(8, cutoff, smooth=False)

    def forward(self, r):
        b = self.rbf(r)
        return b * cosine_cutoff(r, self.cutoff)[:, None] if self.envelope else b


def test_nequip_variant_accepts_the_reference_and_another_design():
    res = check("07.nequip_variant", nb07.NequIPVariant, verbose=False)
    assert res.passed, res
    score, messages = _variant_score(_variant(radial=_GaussianCosine, hidden=6, num_layers=3))
    assert score == 1.0, messages


def test_nequip_variant_scores_a_broken_property_zero_naming_it():
    from course_lib.models.nequip import NequIP

    class BesselOnly(torch.nn.Module):  # no envelope: the energy is continuous, the forces jump at r_c
        def __init__(self, cutoff):
            super().__init__()
            self.cutoff = cutoff

        def forward(self, r):
            return bessel_basis(r, self.cutoff, 8)

    cases = {
        "smooth cutoff: force jump": _variant(radial=BesselOnly),
        "smooth cutoff: energy jump": _variant(radial=lambda c: _GaussianCosine(c, envelope=False)),
        "rotation invariance (error": _variant(extra=lambda b: 0.01 * torch.zeros(int(b.batch.max()) + 1,
                                                                                   dtype=b.pos.dtype).index_add(
            0, b.batch, b.pos[:, 0])),
        "forces = -dE/dr": _variant(detach=True),
    }
    for name, cls in cases.items():
        score, messages = _variant_score(cls)
        assert score == 0.0 and any(name in m and "scores 0" in m for m in messages), (name, messages)
    score, messages = _variant_score(lambda: NequIP(l_max=1, hidden=4, num_layers=1))
    assert score == 0.0 and any("library's NequIP" in m for m in messages), messages


def test_nequip_variant_weak_designs_miss_a_bar_with_a_fraction():
    score, messages = _variant_score(_variant(l_max=0))  # distances only: blind to the bond angle
    assert 0.0 < score < 1.0 and any("sees distances only" in m for m in messages), messages
    assert not any("scores 0" in m for m in messages)
    score, messages = _variant_score(_variant(hidden=16, radial_hidden=(64, 64), num_layers=3))
    assert 0.0 < score < 1.0 and any("over the budget" in m for m in messages), messages


def test_nequip_variant_hidden_tests_accept_the_reference():
    import importlib.util
    from pathlib import Path

    from course_lib.teaching.checks import Feedback

    path = Path(__file__).resolve().parents[1] / "grading" / "hidden" / "nb07.py"
    spec = importlib.util.spec_from_file_location("_hidden_nb07_variant", path)
    hidden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hidden)
    fb = Feedback()
    hidden.HIDDEN["07.nequip_variant"](nb07.NequIPVariant, fb)
    assert not fb.failed and [s for _, s in fb.cases] == [1.0, 1.0], fb.failed
