"""Reference solutions of notebook 00 and the outputs of the known mistakes the checkers diagnose.

Instructor material: not part of the installed package. ``compute(exercise_id, variant, *inputs)`` is
what the checkers of :mod:`course_lib.teaching.exercises.nb00` ask for (their ``expected`` argument);
``make_expected.py`` stores its answers on the public cases, the hidden tests pass it directly.
"""

from __future__ import annotations

import torch

__all__ = ["pairwise_distances", "symmetrize", "radial_field", "gated_nonlinearity", "compute", "SOLUTIONS"]


def pairwise_distances(pos: torch.Tensor) -> torch.Tensor:
    """``D[i, j] = |pos_i - pos_j|`` for ``pos [N, d]``; returns ``[N, N]`` with a zero diagonal."""
    diff = pos[:, None, :] - pos[None, :, :]  # [N, N, d], diff[i, j] = pos_i - pos_j
    return (diff**2).sum(dim=-1).sqrt()


def symmetrize(f, x: torch.Tensor, group) -> torch.Tensor:
    """The group average ``(1/|G|) sum_g f(x g^T)`` of a function ``f`` of points ``x [M, d]``."""
    outs = [f(x @ g.to(x).T) for g in group]
    return torch.stack(outs).mean(dim=0)


def radial_field(pos: torch.Tensor, phi) -> torch.Tensor:
    """``v_i = sum_{j != i} phi(|x_ij|) x_ij`` with ``x_ij = pos_i - pos_j``; returns ``[N, d]``."""
    diff = pos[:, None, :] - pos[None, :, :]  # [N, N, d]
    r = (diff**2).sum(dim=-1, keepdim=True).sqrt()  # [N, N, 1]
    return (phi(r) * diff).sum(dim=1)


def gated_nonlinearity(scalars: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Gate each vector channel by the sigmoid of its scalar: ``sigmoid(s)[..., None] * v``."""
    return torch.sigmoid(scalars)[..., None] * vectors


#: the object a correct submission defines, per exercise (the tests and make_expected.py use it)
SOLUTIONS = {
    "00.pairwise_distances": pairwise_distances,
    "00.symmetrize": symmetrize,
    "00.radial_field": radial_field,
    "00.gated_nonlinearity": gated_nonlinearity,
}


def compute(exercise_id: str, variant: str, *inputs):
    """The expected output of ``variant`` ("values": the correct one; else a named mistake) on ``inputs``."""
    if exercise_id == "00.pairwise_distances":
        return pairwise_distances(*inputs)
    if exercise_id == "00.symmetrize":
        return symmetrize(*inputs)
    if exercise_id == "00.radial_field":
        pos, phi = inputs
        return {"values": lambda: radial_field(pos, phi),
                "phi of r squared": lambda: radial_field(pos, lambda r: phi(r**2))}[variant]()
    if exercise_id == "00.gated_nonlinearity":
        s, v = inputs
        return {"values": lambda: gated_nonlinearity(s, v),
                "norm gate": lambda: v * torch.sigmoid(v.norm(dim=-1, keepdim=True)),
                "relu gate": lambda: torch.relu(s)[..., None] * v}[variant]()
    raise KeyError(exercise_id)
