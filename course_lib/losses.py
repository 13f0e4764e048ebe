"""Losses and error metrics for energy models of molecules (notebooks 05, 07, 08).

The energy+force loss of SchNet (Schütt et al. 2018, Eq. 8) for one molecule with N atoms::

    l(E, F) = rho * (E - Ê)^2  +  (1/N) sum_i || F_i - (-dÊ/dR_i) ||^2

``Ê`` is the model's energy and its forces are ``-dÊ/dR`` by autograd
(:func:`course_lib.models.energy_and_forces`), so the learned force field is conservative by
construction. ``rho`` trades energies against forces: the SchNet paper uses ``rho = 0.01`` (eV^2 vs
(eV/Å)^2); ``forces=False`` trains on energies only. Training with forces needs a second derivative
(``create_graph=True``), which :func:`energy_and_forces` keeps whenever the model is in training mode.

Shapes: ``batch.energy [G]`` (eV), ``batch.forces [N, 3]`` (eV/Å), ``batch.batch [N]``.
"""

from __future__ import annotations

import torch

from course_lib.graph import batch_of, num_graphs, scatter_sum
from course_lib.models import energy_and_forces

__all__ = ["energy_force_loss", "per_atom_energy_force_loss", "molecule_errors"]


def _per_graph_force_sq(force_err: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_i ||dF_i||^2 per graph [G], atoms per graph [G])."""
    b = batch_of(batch)
    G = num_graphs(batch)
    sq = scatter_sum((force_err ** 2).sum(-1), b, G)
    n = scatter_sum(torch.ones_like(b, dtype=force_err.dtype), b, G)
    return sq, n


def energy_force_loss(model: torch.nn.Module, batch, rho: float = 0.01, forces: bool = True) -> torch.Tensor:
    """Mean over the molecules of the batch of ``rho (E - Ê)^2 + (1/N) sum_i ||F_i + dÊ/dR_i||^2``.

    ``forces=False``: ``rho (E - Ê)^2`` only (energy-only training; no second derivative needed).
    """
    if rho < 0:
        raise ValueError(f"rho must be >= 0, got {rho}")
    if not forces:
        return rho * ((model(batch) - batch.energy) ** 2).mean()
    if getattr(batch, "forces", None) is None:
        raise ValueError("energy_force_loss(forces=True) needs reference 'forces' [num_nodes, 3] in the batch")
    energy, pred_forces = energy_and_forces(model, batch)
    sq, n = _per_graph_force_sq(pred_forces - batch.forces, batch)
    return (rho * (energy - batch.energy) ** 2 + sq / n).mean()


def per_atom_energy_force_loss(model: torch.nn.Module, batch, energy_weight: float = 1.0,
                               force_weight: float = 1.0) -> torch.Tensor:
    """The loss of the official NequIP configs: ``w_E * MSE(E/N) + w_F * MSE(force components)``.

    Used by ``benchmarks/nequip_compare.py`` so that the course's NequIP and the official package
    train on the same objective.
    """
    energy, pred_forces = energy_and_forces(model, batch)
    _, n = _per_graph_force_sq(pred_forces, batch)
    e_term = (((energy - batch.energy) / n) ** 2).mean()
    f_term = ((pred_forces - batch.forces) ** 2).mean()
    return energy_weight * e_term + force_weight * f_term


def molecule_errors(model: torch.nn.Module, loader, device=None) -> dict[str, float]:
    """Test errors of an energy model over a loader of molecules, in meV and meV/Å.

    Returns ``energy_mae_meV`` (per molecule), ``energy_mae_per_atom_meV``, ``force_mae_meV_A`` (per
    force component, the convention of the MD17/rMD17 tables), ``force_rmse_meV_A`` and ``n``.
    The model is put in eval mode and its mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    e_abs, e_abs_atom, f_abs, f_sq, n_comp, n_mol = 0.0, 0.0, 0.0, 0.0, 0, 0
    try:
        for batch in loader:
            if device is not None:
                batch = batch.to(device)
            energy, forces = energy_and_forces(model, batch, create_graph=False)
            _, n = _per_graph_force_sq(forces, batch)
            de = (energy.detach() - batch.energy).abs().double()
            e_abs += float(de.sum())
            e_abs_atom += float((de / n.double()).sum())
            df = (forces.detach() - batch.forces).double()
            f_abs += float(df.abs().sum())
            f_sq += float((df ** 2).sum())
            n_comp += df.numel()
            n_mol += int(de.numel())
    finally:
        model.train(was_training)
    if n_mol == 0:
        raise ValueError("molecule_errors got an empty loader")
    return {"energy_mae_meV": 1000 * e_abs / n_mol, "energy_mae_per_atom_meV": 1000 * e_abs_atom / n_mol,
            "force_mae_meV_A": 1000 * f_abs / n_comp, "force_rmse_meV_A": 1000 * (f_sq / n_comp) ** 0.5,
            "n": n_mol}
