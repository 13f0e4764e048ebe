"""Non-invariant baselines for notebook 01: what a model looks like when it ignores the symmetry.

- :class:`CoordinateMLP`: an MLP on the raw coordinates and charges, zero-padded to ``max_nodes``
  particles and flattened. It sees particle order (not permutation invariant), absolute positions
  (not translation invariant) and the axes (not rotation/reflection invariant).
- :class:`AbsolutePositionGNN`: the invariant MPNN with the absolute (box-scaled) position added to
  each particle's input features. Sum aggregation keeps it permutation invariant, but translations,
  rotations and reflections now change its output.

Both return ``[num_graphs]`` energies from ``model(batch)``, like every energy model of the course.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.utils import to_dense_batch

from course_lib.models.mpnn import InvariantMPNN, _batch_of

__all__ = ["CoordinateMLP", "AbsolutePositionGNN"]


def _scaled_positions(batch) -> torch.Tensor:
    """Positions divided by the box side (in [0, 1) for wrapped positions), or raw without a box."""
    box = getattr(batch, "box", None)
    if box is None:
        return batch.pos
    return batch.pos / box[_batch_of(batch)]


class CoordinateMLP(nn.Module):
    """E = MLP([x_1/L, y_1/L, q_1, 1, x_2/L, ..., 0, 0, 0, 0]): coordinates in input order, padded.

    Args:
        max_nodes: the largest number of particles a graph may have (the input width is fixed).
        hidden: width of the two hidden layers.
    """

    def __init__(self, max_nodes: int = 24, hidden: int = 256, dim: int = 2):
        super().__init__()
        self.config = {"max_nodes": max_nodes, "hidden": hidden, "dim": dim}
        self.max_nodes = max_nodes
        n_in = max_nodes * (dim + 2)
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 1))
        self.register_buffer("mu", torch.zeros(()))
        self.register_buffer("sigma", torch.ones(()))

    def forward(self, batch) -> torch.Tensor:
        b = _batch_of(batch)
        counts = torch.bincount(b)
        if int(counts.max()) > self.max_nodes:
            raise ValueError(f"a graph has {int(counts.max())} particles but this CoordinateMLP was built for "
                             f"at most max_nodes={self.max_nodes}: build it with a larger max_nodes")
        feats = torch.cat([_scaled_positions(batch), batch.charge[:, None].to(batch.pos.dtype),
                           torch.ones_like(batch.charge[:, None], dtype=batch.pos.dtype)], dim=-1)
        dense, _ = to_dense_batch(feats, b, max_num_nodes=self.max_nodes)  # [G, max_nodes, d + 2]
        n = counts.to(batch.pos.dtype)
        return self.sigma * self.net(dense.flatten(1)).squeeze(-1) * n.sqrt() + self.mu * n

    fit_energy_scale = InvariantMPNN.fit_energy_scale


class AbsolutePositionGNN(InvariantMPNN):
    """The MPNN of notebook 01 with absolute positions (x/L, y/L) as extra node inputs."""

    def num_node_inputs(self) -> int:
        return super().num_node_inputs() + 2

    def node_inputs(self, batch) -> torch.Tensor:
        return torch.cat([super().node_inputs(batch), _scaled_positions(batch)], dim=-1)
