"""Models of the course. Energy models map a PyG batch to ``[num_graphs]`` energies."""

from __future__ import annotations

import torch

__all__ = ["energy_and_forces", "NequIP", "PaiNN"]


def __getattr__(name: str):
    """``course_lib.models.NequIP`` without importing e3nn (slow) for the models that do not need it."""
    if name == "NequIP":
        from course_lib.models.nequip import NequIP

        return NequIP
    if name == "PaiNN":
        from course_lib.models.painn import PaiNN

        return PaiNN
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def energy_and_forces(model: torch.nn.Module, batch, create_graph: bool | None = None):
    """Return ``(energy [num_graphs], forces [num_nodes, d])`` with ``forces = -dE/dpos`` by autograd.

    ``create_graph`` defaults to ``model.training`` so a force loss can be back-propagated while
    training, and no second-order graph is kept at evaluation. The batch is not modified: a fresh
    leaf copy of ``pos`` is differentiated.
    """
    if create_graph is None:
        create_graph = model.training
    batch = batch.clone()
    pos = batch.pos.detach().requires_grad_(True)
    batch.pos = pos
    with torch.enable_grad():
        energy = model(batch)
        if energy.dim() != 1:
            raise ValueError(f"an energy model must return [num_graphs] energies, got shape {tuple(energy.shape)}")
        (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=create_graph)
    return energy, -grad
