"""Reference solution of notebook 03 (instructor material: not part of the installed package).

``03.crystal_feature`` is a design exercise: the checker tests properties (the crystal's symmetries hold, a shift by
a/2 and a rotation by 30 degrees about a site are not symmetries), so there is no expected output to store and
``compute`` knows no case.
"""

from __future__ import annotations

import math

import torch

__all__ = ["crystal_feature", "compute", "SOLUTIONS"]


def crystal_feature(pos, a):
    """Reference solution of 03.crystal_feature: [N, 2], the sum and the product of cos(2 pi x / a) and
    cos(2 pi y / a). Both are periodic with the lattice, even about every site and symmetric in x <-> y (the point
    group of the square about a site); a shift by a/2 flips the sign of one cosine; and near a site the sum is
    anisotropic at fourth order, so a 30 degree rotation about the site changes it."""
    c = torch.cos(2 * math.pi * pos / a)
    return torch.stack([c[:, 0] + c[:, 1], c[:, 0] * c[:, 1]], dim=-1)


SOLUTIONS = {"03.crystal_feature": crystal_feature}


def compute(exercise_id: str, variant: str, *inputs):
    """No stored outputs: the only exercise of notebook 03 is checked by its properties."""
    raise KeyError(f"{exercise_id} ({variant}): notebook 03's exercise has no expected output")
