"""Reference solutions of notebook 05 and the outputs of the known mistakes the checkers diagnose.

Instructor material: not part of the installed package. ``compute(exercise_id, variant, *inputs)`` is
what the checkers of :mod:`course_lib.teaching.exercises.nb05` ask for (their ``expected`` argument);
``make_expected.py`` stores its answers on the public cases, the hidden tests pass it directly.
"""

from __future__ import annotations

import torch

from course_lib.graph import scatter_sum
from course_lib.losses import energy_force_loss
from course_lib.models import energy_and_forces

__all__ = ["gaussian_expansion", "cfconv", "force_loss", "compute", "SOLUTIONS"]


def gaussian_expansion(r: torch.Tensor, mu: torch.Tensor, gamma: float) -> torch.Tensor:
    """Reference solution of 05.gaussian_expansion: r [E], mu [K] -> [E, K]."""
    return torch.exp(-gamma * (r[:, None] - mu[None, :]) ** 2)


def cfconv(y: torch.Tensor, W: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """Reference solution of 05.cfconv: y [N, F], W [E, F], edge_index [2, E] -> [N, F]."""
    j, i = edge_index
    return scatter_sum(y[j] * W, i, y.shape[0])


def force_loss(model, batch, rho: float) -> torch.Tensor:
    """Reference solution of 05.force_loss (a scalar tensor that can be back-propagated)."""
    return energy_force_loss(model, batch, rho=rho)


#: the object a correct submission defines, per exercise (the tests and make_expected.py use it)
def smooth_basis(r, cutoff):
    """Reference solution of 05.smooth_basis (one design among many): r [E], cutoff -> [E, 16].

    The radial Bessel functions sqrt(2 / r_c) sin(n pi r / r_c) / r of DimeNet (Gasteiger, Gross & Günnemann, ICLR
    2020), n = 1..16, times their polynomial envelope with p = 6, which is 1 at r = 0 and goes to zero at r_c with
    zero first and second derivatives; zero beyond r_c."""
    x = r / cutoff
    n = torch.arange(1, 17, dtype=r.dtype)
    bessel = (2 / cutoff) ** 0.5 * torch.sin(n * torch.pi * x[:, None]) / r[:, None]
    p = 6
    envelope = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    return torch.where((x < 1)[:, None], bessel * envelope[:, None], torch.zeros_like(bessel))


SOLUTIONS = {
    "05.gaussian_expansion": gaussian_expansion,
    "05.cfconv": cfconv,
    "05.force_loss": force_loss,
    "05.smooth_basis": smooth_basis,
}


def _gaussian(variant, r, mu, gamma):
    d = r[:, None] - mu[None, :]
    return {"values": lambda: gaussian_expansion(r, mu, gamma),
            "not squared": lambda: torch.exp(-gamma * d.abs()),
            "positive exponent": lambda: torch.exp(gamma * d ** 2),
            "divided by gamma": lambda: torch.exp(-d ** 2 / gamma)}[variant]()


def _cfconv(variant, y, W, edge_index):
    src, dst = edge_index
    n, f = y.shape
    if variant == "values":
        return cfconv(y, W, edge_index)
    if variant == "flipped":
        return cfconv(y, W, edge_index.flip(0))
    if variant == "target features":
        return scatter_sum(y[dst] * W, dst, n)
    if variant == "dot product":
        return scatter_sum((y[src] * W).sum(-1, keepdim=True).expand(-1, f), dst, n)
    if variant == "mean":
        deg = torch.bincount(dst, minlength=n).clamp_min(1).to(y.dtype)[:, None]
        return cfconv(y, W, edge_index) / deg
    raise KeyError(variant)


def _force_loss(variant, model, batch, rho):
    if variant == "values":
        return force_loss(model, batch, rho).detach()
    E, Fp = (t.detach() for t in energy_and_forces(model, batch, create_graph=False))
    n = torch.bincount(batch.batch).to(E.dtype)
    sq = torch.zeros(batch.num_graphs, dtype=E.dtype).index_add_(0, batch.batch, ((Fp - batch.forces) ** 2).sum(-1))
    sign = torch.zeros_like(sq).index_add_(0, batch.batch, ((Fp + batch.forces) ** 2).sum(-1))
    e_term = rho * (E - batch.energy) ** 2
    return {"force sign": lambda: (e_term + sign / n).mean(),
            "no 1/N": lambda: (e_term + sq).mean(),
            "mean over components": lambda: (e_term + sq / n / 3).mean(),
            "rho on forces": lambda: ((E - batch.energy) ** 2 + rho * sq / n).mean(),
            "global N": lambda: (e_term + sq.sum() / n.sum()).mean(),
            "no force term": lambda: e_term.mean(),
            "no energy term": lambda: (sq / n).mean()}[variant]()


def compute(exercise_id: str, variant: str, *inputs):
    """The expected output of ``variant`` ("values": the correct one; else a named mistake) on ``inputs``."""
    if exercise_id == "05.gaussian_expansion":
        return _gaussian(variant, *inputs)
    if exercise_id == "05.cfconv":
        return _cfconv(variant, *inputs)
    if exercise_id == "05.force_loss":
        return _force_loss(variant, *inputs)
    raise KeyError(exercise_id)
