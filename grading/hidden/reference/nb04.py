"""Reference solution of notebook 04 and the outputs of the known mistakes the checker diagnoses.

Instructor material: not part of the installed package (see ``nb01.py`` here for the contract of ``compute``).
"""

from __future__ import annotations

import torch

__all__ = ["coulomb_step", "compute", "SOLUTIONS"]


def _pairs(batch, across=False):
    """Ordered pairs (i, j), i != j, of the same system (of any two particles with ``across``)."""
    same = torch.ones(len(batch), len(batch), dtype=torch.bool) if across else batch[:, None] == batch[None, :]
    i, j = torch.nonzero(same & ~torch.eye(len(batch), dtype=torch.bool), as_tuple=True)
    return i, j


def _step(pos, vel, charge, batch, t, c, power=3, sign=1.0, mean=False, across=False):
    i, j = _pairs(batch, across)
    d = pos[i] - pos[j]
    term = sign * (charge[i] * charge[j])[:, None] * d / d.norm(dim=-1, keepdim=True) ** power
    kick = torch.zeros_like(pos).index_add(0, i, term)
    if mean:
        kick = kick / torch.bincount(i, minlength=len(pos)).clamp_min(1)[:, None].to(pos.dtype)
    return pos + t * vel + c * kick


def coulomb_step(pos, vel, charge, batch, t, c):
    """Reference solution of 04.coulomb_step: x_i + t v_i + c sum_{j != i, same system} q_i q_j x_ij / |x_ij|^3."""
    same = batch[:, None] == batch[None, :]
    d = pos[:, None, :] - pos[None, :, :]  # [N, N, 3]: x_i - x_j
    r = d.norm(dim=-1)
    w = torch.where(same & (r > 0), charge[:, None] * charge[None, :] / r.clamp_min(1e-12) ** 3, torch.zeros_like(r))
    return pos + t * vel + c * (w[..., None] * d).sum(1)


SOLUTIONS = {"04.coulomb_step": coulomb_step}


def compute(exercise_id: str, variant: str, *inputs):
    """The expected output of ``variant`` ("values": the correct one; else a named mistake) on ``inputs``."""
    if exercise_id == "04.coulomb_step":
        options = {"values": {}, "attractive": {"sign": -1.0}, "inverse square": {"power": 2},
                   "mean": {"mean": True}, "across systems": {"across": True}}
        return _step(*inputs, **options[variant])
    raise KeyError(exercise_id)
