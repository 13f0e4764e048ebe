"""Radial bases and smooth cutoffs: how a distance r becomes an invariant feature vector.

All functions act elementwise on distances ``r [E]`` and return ``[E, num_basis]`` (bases) or
``[E]`` (cutoffs). Every basis is multiplied by a cutoff that goes smoothly to zero at ``r_c``, so
an edge that enters or leaves the neighbour list changes the model output continuously (and the
forces, their derivatives, stay finite).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["GaussianRBF", "BesselRBF", "bessel_basis", "cosine_cutoff", "polynomial_envelope"]


def cosine_cutoff(r: torch.Tensor, cutoff: float) -> torch.Tensor:
    """f_c(r) = 0.5 (cos(pi r / r_c) + 1) for r < r_c, else 0 (SchNet's cutoff; C1 at r_c)."""
    return torch.where(r < cutoff, 0.5 * (torch.cos(math.pi * r / cutoff) + 1.0), torch.zeros_like(r))


def polynomial_envelope(r: torch.Tensor, cutoff: float, p: int = 6) -> torch.Tensor:
    """The polynomial envelope of DimeNet/NequIP with exponent p:

    u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2),  x = r / r_c,  0 for x >= 1.

    u(0) = 1, and at the cutoff u, u' and u'' vanish for every p (the three coefficients are chosen for
    that), so the envelope is twice continuously differentiable at r_c: energies, forces and their first
    derivatives do not jump there. The third derivative does: d3u/dx3 (1) = -p(p+1)(p+2) (-336 for p = 6;
    checked in ``tests/test_models_nequip.py``). p sets how flat u stays near x = 0, not the order of smoothness.
    """
    x = r / cutoff
    u = (1.0 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2))
    return torch.where(x < 1.0, u, torch.zeros_like(r))


def bessel_basis(r: torch.Tensor, cutoff: float, num_basis: int = 8) -> torch.Tensor:
    """The Bessel basis of DimeNet/NequIP without envelope: r [E] -> [E, num_basis],

    B_n(r) = (2 / r_c) sin(n pi r / r_c) / r,  n = 1..num_basis

    (the radial part of the l = 0 solutions of a particle in a sphere of radius r_c, which vanish at r_c).
    ``r`` must be > 0 (atoms never sit on top of each other; r = 0 would divide by zero).
    """
    n = torch.arange(1, num_basis + 1, dtype=r.dtype, device=r.device)
    return (2.0 / cutoff) * torch.sin(n * math.pi * r[:, None] / cutoff) / r[:, None]


class GaussianRBF(nn.Module):
    """e_k(r) = exp(-gamma (r - mu_k)^2), mu_k evenly spaced on [0, r_c], times the cosine cutoff.

    ``gamma`` defaults to 1 / (2 * spacing^2), so neighbouring Gaussians overlap.
    """

    def __init__(self, num_basis: int = 32, cutoff: float = 3.0, gamma: float | None = None, smooth: bool = True):
        super().__init__()
        if cutoff <= 0:
            raise ValueError(f"cutoff must be > 0, got {cutoff}")
        mu = torch.linspace(0.0, cutoff, num_basis)
        spacing = cutoff / max(num_basis - 1, 1)
        self.register_buffer("mu", mu)
        self.gamma = float(gamma if gamma is not None else 0.5 / spacing**2)
        self.cutoff = float(cutoff)
        self.smooth = smooth
        self.num_basis = num_basis

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """r [E] -> [E, num_basis]"""
        e = torch.exp(-self.gamma * (r[:, None] - self.mu.to(r.dtype)) ** 2)
        if self.smooth:
            e = e * cosine_cutoff(r, self.cutoff)[:, None]
        return e


class BesselRBF(nn.Module):
    """NequIP's radial basis: B_n(r) = (2 / r_c) sin(n pi r / r_c) / r, n = 1..num_basis,
    times the polynomial envelope (p = 6). The frequencies n pi / r_c are trainable when asked.

    With ``trainable=False`` (or before training) this is ``bessel_basis(r) * polynomial_envelope(r)``.
    """

    def __init__(self, num_basis: int = 8, cutoff: float = 5.0, p: int = 6, trainable: bool = True):
        super().__init__()
        if cutoff <= 0:
            raise ValueError(f"cutoff must be > 0, got {cutoff}")
        if num_basis < 1:
            raise ValueError(f"num_basis must be >= 1, got {num_basis}")
        self.freq = nn.Parameter(torch.arange(1, num_basis + 1) * math.pi / cutoff) if trainable else None
        self.cutoff, self.p, self.num_basis = float(cutoff), p, num_basis

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """r [E] -> [E, num_basis]"""
        if self.freq is None:  # the exact formula, in the dtype of r
            b = bessel_basis(r, self.cutoff, self.num_basis)
        else:
            b = (2.0 / self.cutoff) * torch.sin(self.freq.to(r.dtype) * r[:, None]) / r[:, None]
        return b * polynomial_envelope(r, self.cutoff, self.p)[:, None]
