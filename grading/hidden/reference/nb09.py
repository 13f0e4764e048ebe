"""Reference solutions of notebook 09 and the outputs of the known mistakes the checkers diagnose.

Instructor material: not part of the installed package (see ``nb01.py`` here for the contract of ``compute``).
"""

from __future__ import annotations

import torch

__all__ = ["bond_vector_sum", "angle_feature", "compute", "SOLUTIONS"]


def bond_vector_sum(pos, edge_index):
    """Reference solution of 09.bond_vector_sum: v_i = sum_{(j, i)} (r_j - r_i) / |r_j - r_i|  [N, 3]."""
    j, i = edge_index
    d = pos[j] - pos[i]
    return torch.zeros_like(pos).index_add(0, i, d / d.norm(dim=-1, keepdim=True))


def angle_feature(pos, edge_index):
    """Reference solution of 09.angle_feature: |v_i|^2 with v_i = bond_vector_sum (= sum over pairs of bonds of
    their cosines, 3-body): invariant, local, and it sees bond angles."""
    return bond_vector_sum(pos, edge_index).pow(2).sum(-1)


SOLUTIONS = {"09.bond_vector_sum": bond_vector_sum, "09.angle_feature": angle_feature}


def compute(exercise_id: str, variant: str, *inputs):
    """The expected output of ``variant`` ("values": the correct one; else a named mistake) on ``inputs``."""
    if exercise_id == "09.bond_vector_sum":
        pos, edge_index = inputs
        j, i = edge_index
        d = pos[j] - pos[i]
        count = torch.zeros(len(pos), dtype=pos.dtype).index_add(0, i, torch.ones_like(d[:, 0])).clamp_min(1)
        return {"values": lambda: bond_vector_sum(pos, edge_index),
                "negated": lambda: -bond_vector_sum(pos, edge_index),
                "not normalised": lambda: torch.zeros_like(pos).index_add(0, i, d),
                "mean": lambda: bond_vector_sum(pos, edge_index) / count[:, None]}[variant]()
    raise KeyError(exercise_id)
