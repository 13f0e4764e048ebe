"""Building blocks shared by the models (one home each).

- :func:`mlp`: the two-layer perceptron ``Linear -> act -> Linear`` of every message, update and readout.
- :class:`EnergyScale`: what every ``fit_energy_scale`` returns (the fitted offsets and scale).
- :func:`per_species_shift` / :func:`residual_scale`: the least-squares energy per atom of each species
  and the spread of what is left, used by SchNet and NequIP to fit their ``shift`` and ``scale``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["mlp", "EnergyScale", "per_species_shift", "residual_scale"]


def mlp(n_in: int, n_hidden: int, n_out: int, act: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """A two-layer perceptron: Linear -> act -> Linear."""
    return nn.Sequential(nn.Linear(n_in, n_hidden), act(), nn.Linear(n_hidden, n_out))


@dataclass(frozen=True)
class EnergyScale:
    """The result of ``model.fit_energy_scale(graphs)``, the same for every energy model.

    ``E_i = scale * network_i + shift[species_i]`` (or ``+ shift`` for one global value):

    - ``shift``: energy per node, a 0-d tensor (one value, :class:`~course_lib.models.mpnn.InvariantMPNN`)
      or one value per species (SchNet: ``[max_z]`` indexed by ``z - 1``; NequIP: ``[S]`` indexed by the
      position in ``species``);
    - ``scale``: the scale of the network output (one float);
    - ``avg_num_neighbors``: the neighbour-sum normalisation (NequIP), ``None`` for the other models.
    """

    shift: torch.Tensor
    scale: float
    avg_num_neighbors: float | None = None


def per_species_shift(counts: torch.Tensor, energies: torch.Tensor) -> torch.Tensor:
    """Energy per atom of each species by linear least squares, ``E_g ~ sum_s n_gs shift_s``.

    ``counts [G, S]`` (float64): atoms of species ``s`` in graph ``g``; ``energies [G]`` (float64).
    Minimum-norm solution (``gelsd``) when the counts are degenerate (e.g. one molecule); species absent
    from every graph get the mean energy per atom. Returns ``shift [S]`` (float64).
    """
    shift = torch.full((counts.shape[1],), (energies.sum() / counts.sum(1).sum()).item(), dtype=torch.float64)
    present = counts.sum(0) > 0
    shift[present] = torch.linalg.lstsq(counts[:, present], energies[:, None], driver="gelsd").solution[:, 0]
    return shift


def residual_scale(counts: torch.Tensor, energies: torch.Tensor, shift: torch.Tensor) -> float:
    """Standard deviation of the residuals ``(E_g - n_g . shift) / sqrt(N_g)`` (per sqrt(atom)); 1.0 when it
    cannot be estimated (a single graph) or is below 1e-6."""
    resid = (energies - counts @ shift) / counts.sum(1).clamp_min(1).sqrt()
    scale = resid.std().item() if len(energies) > 1 else float("nan")
    return scale if math.isfinite(scale) and scale >= 1e-6 else 1.0
