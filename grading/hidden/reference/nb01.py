"""Reference solutions of notebook 01 and the outputs of the known mistakes the checkers diagnose.

Instructor material: not part of the installed package. ``compute(exercise_id, variant, *inputs)`` is
what the checkers of :mod:`course_lib.teaching.exercises.nb01` ask for (their ``expected`` argument);
``make_expected.py`` stores its answers on the public cases, the hidden tests pass it directly.
"""

from __future__ import annotations

import math

import torch

from course_lib.graph import scatter_sum

__all__ = ["minimum_image", "message_passing_step", "invariance_error", "energy_features", "compute", "SOLUTIONS"]


def minimum_image(dx: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Reference solution of 01.minimum_image: dx [..., d], L broadcastable -> [..., d]."""
    return dx - L * torch.round(dx / L)


def message_passing_step(h, e, edge_index, phi_e, phi_h, w):
    """Reference solution of 01.message_passing_step (see the notebook for the equations)."""
    j, i = edge_index
    m_ij = w[:, None] * phi_e(torch.cat([h[i], h[j], e], dim=-1))
    m_i = scatter_sum(m_ij, i, h.shape[0])
    return h + phi_h(torch.cat([h, m_i], dim=-1))


def invariance_error(model, data, transform) -> float:
    """Reference solution of 01.invariance_error: max |E(g x) - E(x)| over the graphs of ``data``."""
    with torch.no_grad():
        return float((model(transform(data)) - model(data)).abs().max())


def energy_features(pos, charge, L):
    """Reference solution of 01.energy_features (one design among many): pos [N, 2], charge [N], L -> [33].

    Over the pairs i < j (minimum image): 16 Gaussians of the distance times the cosine cutoff at r_c = 3, summed
    once as they are and once weighted by q_i q_j (the two channels of a charge-dependent pair energy), and N."""
    d = pos[:, None, :] - pos[None, :, :]
    d = d - L * torch.round(d / L)
    i, j = torch.triu_indices(len(pos), len(pos), 1)
    r = d[i, j].norm(dim=-1)
    qq = charge[i] * charge[j]
    centres = torch.linspace(0.6, 3.0, 16, dtype=pos.dtype)
    fc = torch.where(r < 3.0, 0.5 * (torch.cos(math.pi * r / 3.0) + 1), torch.zeros_like(r))
    g = torch.exp(-(((r[:, None] - centres) / 0.2) ** 2)) * fc[:, None]
    n = torch.tensor([float(len(pos))], dtype=pos.dtype)
    return torch.cat([g.sum(0), (qq[:, None] * g).sum(0), n])


#: the object a correct submission defines, per exercise (the tests and make_expected.py use it)
SOLUTIONS = {
    "01.minimum_image": minimum_image,
    "01.message_passing_step": message_passing_step,
    "01.invariance_error": invariance_error,
    "01.energy_features": energy_features,
}


def _message_variants(variant, h, e, edge_index, phi_e, phi_h, w):
    j, i = edge_index
    n = h.shape[0]
    if variant == "values":
        return message_passing_step(h, e, edge_index, phi_e, phi_h, w)
    if variant == "target-source swapped":  # edge_index read the other way round
        return message_passing_step(h, e, edge_index.flip(0), phi_e, phi_h, w)
    if variant == "weight ignored":  # the first version of the exercise: no cutoff weight
        return message_passing_step(h, e, edge_index, phi_e, phi_h, torch.ones_like(w))
    if variant == "weight on the edge features":  # phi_e([h_i, h_j, w e]): not zero at the cutoff
        return message_passing_step(h, w[:, None] * e, edge_index, phi_e, phi_h, torch.ones_like(w))
    m_ij = w[:, None] * phi_e(torch.cat([h[i], h[j], e], dim=-1))
    if variant == "summed at the source":  # m_ij right, aggregated at j instead of i
        return h + phi_h(torch.cat([h, scatter_sum(m_ij, j, n)], dim=-1))
    if variant == "no residual":
        return message_passing_step(h, e, edge_index, phi_e, phi_h, w) - h
    if variant == "mean":
        deg = torch.bincount(i, minlength=n).clamp_min(1).to(h.dtype)[:, None]
        return h + phi_h(torch.cat([h, scatter_sum(m_ij, i, n) / deg], dim=-1))
    if variant == "h_j first":  # [h_j, h_i, e] instead of [h_i, h_j, e]
        m_ji = w[:, None] * phi_e(torch.cat([h[j], h[i], e], dim=-1))
        return h + phi_h(torch.cat([h, scatter_sum(m_ji, i, n)], dim=-1))
    if variant == "m_i first":  # phi_h([m_i, h_i])
        return h + phi_h(torch.cat([scatter_sum(m_ij, i, n), h], dim=-1))
    raise KeyError(variant)


def compute(exercise_id: str, variant: str, *inputs):
    """The expected output of ``variant`` ("values": the correct one; else a named mistake) on ``inputs``."""
    if exercise_id == "01.minimum_image":
        dx, L = inputs
        return {"values": lambda: minimum_image(dx, L),
                "floor": lambda: dx - L * torch.floor(dx / L),
                "trunc": lambda: dx - L * torch.trunc(dx / L),
                "shift added": lambda: dx + L * torch.round(dx / L),
                "negated": lambda: L * torch.round(dx / L) - dx}[variant]()
    if exercise_id == "01.message_passing_step":
        return _message_variants(variant, *inputs)
    if exercise_id == "01.invariance_error":
        return invariance_error(*inputs)
    raise KeyError(exercise_id)
