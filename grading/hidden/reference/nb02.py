"""Reference solutions of notebook 02 and the outputs of the known mistakes the checkers diagnose.

Instructor material: not part of the installed package (see ``nb01.py`` here for the contract of ``compute``).
"""

from __future__ import annotations

import torch

from course_lib.graph import scatter_sum
from course_lib.neighbors import minimum_image

__all__ = ["periodic_mse", "equivariant_update", "momentum_update", "compute", "SOLUTIONS"]


def periodic_mse(pred: torch.Tensor, target: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Reference solution of 02.periodic_mse: mean over nodes and components of min_image(pred - target)^2."""
    return minimum_image(pred - target, L).pow(2).mean()


def equivariant_update(x: torch.Tensor, edge_index: torch.Tensor, phi: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Reference solution of 02.equivariant_update (x [N, d] in [0, L), edge_index [2, E], phi [E, 1], L [d])."""
    j, i = edge_index
    x_ij = minimum_image(x[i] - x[j], L)  # from j to i
    deg = scatter_sum(torch.ones_like(phi), i, x.shape[0])  # [N, 1]
    C = 1.0 / (1.0 + deg)
    new = x + C * scatter_sum(x_ij * phi, i, x.shape[0])
    return new - L * torch.floor(new / L)


def momentum_update(pos, vel, charge, edge_index, L):
    """Reference solution of 02.momentum_update (one design among many): a kick by pair forces,
    v_i' = v_i + dt sum_j x_ij psi_ij with x_ij = x_i - x_j (minimum image) and the invariant scalar
    psi_ij = q_i q_j A e^{-r/lam} (1/r + 1/lam) / r^2 + n B sigma^n / r^(n+2) (the screened Coulomb force of the
    course's potential divided by r), symmetric in i and j: the terms of (i, j) and (j, i) cancel."""
    j, i = edge_index
    x_ij = pos[i] - pos[j]
    x_ij = x_ij - L * torch.round(x_ij / L)
    r = x_ij.norm(dim=-1, keepdim=True)
    qq = (charge[i] * charge[j])[:, None]
    psi = qq * 2.0 * torch.exp(-r) * (1 / r + 1) / r**2 + 12 * 0.6**12 / r**14
    return vel + 0.01 * scatter_sum(x_ij * psi, i, pos.shape[0])


SOLUTIONS = {"02.periodic_mse": periodic_mse, "02.equivariant_update": equivariant_update,
             "02.momentum_update": momentum_update}


def _update_variant(variant, x, edge_index, phi, L):
    j, i = edge_index
    n = x.shape[0]
    deg = scatter_sum(torch.ones_like(phi), i, n)
    if variant == "values":
        return equivariant_update(x, edge_index, phi, L)
    if variant == "negated":
        return equivariant_update(x, edge_index, -phi, L)
    if variant == "flipped":
        return equivariant_update(x, edge_index.flip(0), phi, L)
    if variant == "no minimum image":
        return x + scatter_sum((x[i] - x[j]) * phi, i, n) / (1.0 + deg)
    if variant == "mean":
        return x + scatter_sum(minimum_image(x[i] - x[j], L) * phi, i, n) / deg.clamp_min(1)
    if variant == "no normalisation":
        return x + scatter_sum(minimum_image(x[i] - x[j], L) * phi, i, n)
    raise KeyError(variant)


def compute(exercise_id: str, variant: str, *inputs):
    """The expected output of ``variant`` ("values": the correct one; else a named mistake) on ``inputs``."""
    if exercise_id == "02.periodic_mse":
        return periodic_mse(*inputs)
    if exercise_id == "02.equivariant_update":
        return _update_variant(variant, *inputs)
    raise KeyError(exercise_id)
