"""Non-invariant baselines for notebook 01: what a model looks like when it ignores the symmetry.

- :class:`CoordinateMLP`: an MLP on the raw coordinates and charges, zero-padded to ``max_nodes``
  particles and flattened. It sees particle order (not permutation invariant), absolute positions
  (not translation invariant) and the axes (not rotation/reflection invariant).
- :class:`AbsolutePositionGNN`: the invariant MPNN with the absolute (box-scaled) position added to
  each particle's input features. Sum aggregation keeps it permutation invariant, but translations,
  rotations and reflections now change its output.
- :class:`EdgeVectorGNN`: the invariant MPNN whose messages also see the minimum-image edge *vector*
  r_j - r_i (in the fixed axes of the box) beside the radial basis of its length. Edge vectors do not
  change under (periodic) translations, so the model is translation invariant by construction, but a
  rotation or reflection changes them: rotation invariance has to be learned. This is the baseline a
  careful student would build (it has every invariant feature of the MPNN and more).

All three return ``[num_graphs]`` energies from ``model(batch)``, like every energy model of the course.

Dynamics baselines (next-state models, ``model(data) -> (pos_next [N, d], vel_next [N, d])``, usable
with :func:`course_lib.models.egnn.rollout`), to compare with :class:`course_lib.models.egnn.EGNN`:

- :class:`Ballistic`: no interactions, ``pos_next = wrap(pos + dt vel)``, ``vel_next = vel``. Exactly
  equivariant (a sanity floor: a learned model must beat it).
- :class:`AbsoluteCoordinateGNN`: a message-passing network that reads absolute coordinates ``x/L``
  and the velocity components as node features and predicts the step with an MLP head. Permutation
  equivariant (sum aggregation), but neither translation nor rotation/reflection equivariant.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.utils import to_dense_batch

from course_lib.data import check_model_inputs, fixed_flag, fixed_mask
from course_lib.graph import batch_of
from course_lib.models.blocks import mlp
from course_lib.models.mpnn import InvariantMPNN, MessagePassingLayer
from course_lib.models.radial import GaussianRBF
from course_lib.neighbors import radius_graph, wrap_into_box

__all__ = ["CoordinateMLP", "AbsolutePositionGNN", "EdgeVectorGNN", "Ballistic", "AbsoluteCoordinateGNN"]


def _scaled_positions(batch) -> torch.Tensor:
    """Positions divided by the box side (in [0, 1) for wrapped positions), or raw without a box."""
    box = getattr(batch, "box", None)
    if box is None:
        return batch.pos
    return batch.pos / box[batch_of(batch)]


class CoordinateMLP(nn.Module):
    """E = MLP([x_1/L, y_1/L, q_1, 1, x_2/L, ..., 0, 0, 0, 0]): coordinates in input order, padded.

    Args:
        max_nodes: the largest number of particles a graph may have (the input width is fixed).
        hidden: width of the two hidden layers.
    """

    system = "particles2d"  #: read by :class:`course_lib.ase_calculator.CourseCalculator`

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
        check_model_inputs(batch, need=("charge",), who="CoordinateMLP")
        b = batch_of(batch)
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


class EdgeVectorGNN(InvariantMPNN):
    """The MPNN of notebook 01 with the edge vector as extra edge features::

        e_ij = [RBF(r_ij), (r_j - r_i) / r_c]     [E, K + d]   (minimum image, fixed axes)

    Translation invariant (edge vectors are differences), permutation invariant (sum aggregation),
    not rotation or reflection invariant. Same arguments as :class:`InvariantMPNN` (plus ``dim``).
    """

    def __init__(self, *args, dim: int = 2, **kwargs):
        self.dim = dim  # read by num_edge_features during InvariantMPNN.__init__
        super().__init__(*args, **kwargs)
        self.config["dim"] = dim

    def num_edge_features(self) -> int:
        return super().num_edge_features() + self.dim

    def edge_features(self, edge_vec: torch.Tensor) -> torch.Tensor:
        if edge_vec.shape[-1] != self.dim:
            raise ValueError(f"this EdgeVectorGNN was built for dim={self.dim}, got edge vectors of shape "
                             f"{tuple(edge_vec.shape)}: build it with dim={edge_vec.shape[-1]}")
        return torch.cat([super().edge_features(edge_vec), edge_vec / self.cutoff], dim=-1)


# --------------------------------------------------------------------------------------------
# Dynamics baselines: model(data) -> (pos_next [N, d], vel_next [N, d])
# --------------------------------------------------------------------------------------------


def _hold_fixed(data, pos_next, vel_next, use_fixed: bool):
    """Put crystal atoms (data.fixed True) back where they were, with zero velocity."""
    hold = fixed_mask(data) if use_fixed else None
    if hold is None:
        return pos_next, vel_next
    return torch.where(hold, data.pos, pos_next), torch.where(hold, torch.zeros_like(vel_next), vel_next)


class Ballistic(nn.Module):
    """Free flight: pos_next = wrap(pos + dt * vel), vel_next = vel (crystal atoms held when use_fixed).

    No learnable parameters; a zero-size dummy parameter makes ``next(model.parameters())`` (device and
    dtype lookups in :mod:`course_lib.train`) and ``.double()`` work like for every other model.
    """

    def __init__(self, dt: float = 1.0, use_fixed: bool = True):
        super().__init__()
        self.config = {"dt": dt, "use_fixed": use_fixed}
        self.dt, self.use_fixed = float(dt), use_fixed
        self.dummy = nn.Parameter(torch.zeros(0))

    def forward(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        pos, vel, box, batch, _ = check_model_inputs(data, need=("vel",), finite=False)
        pos_next = pos + self.dt * vel
        if box is not None:
            pos_next = wrap_into_box(pos_next, box[batch])
        return _hold_fixed(data, pos_next, vel.clone(), self.use_fixed)


class AbsoluteCoordinateGNN(nn.Module):
    """A non-equivariant next-step model: the invariant MPNN of notebook 01 with absolute inputs.

    Node inputs ``[q_i, fixed_i, x_i / L, v_i]`` (raw ``x_i`` in open space), then invariant message
    passing on the minimum-image radius graph (Gaussian RBF of the distances), then an MLP head per node
    that outputs ``2d`` numbers read in the fixed axes of the box::

        (delta_x, delta_v) = head(h_i),   pos_next = wrap(pos + dt vel + delta_x),   vel_next = vel + delta_v

    Like :class:`~course_lib.models.egnn.EGNN` it predicts a correction to free flight (a fair
    comparison). It is permutation equivariant, but shifting or rotating the box changes its inputs
    ``x/L`` and ``v`` without rotating its outputs: it has to *learn* the symmetries from data.

    Args: hidden, num_layers, cutoff, num_basis as for InvariantMPNN; dt: time step; dim: d;
    use_fixed: hold crystal atoms (``data.fixed``) in place. Old checkpoints load through
    :data:`LEGACY_CONFIG_KEYS` (:func:`course_lib.train.upgrade_config`).
    """

    #: old checkpoint configuration key -> constructor argument
    LEGACY_CONFIG_KEYS = {"layers": "num_layers"}

    def __init__(self, hidden: int = 64, num_layers: int = 3, cutoff: float = 3.0, num_basis: int = 16,
                 dt: float = 1.0, dim: int = 2, use_fixed: bool = True):
        super().__init__()
        self.config = {"hidden": hidden, "num_layers": num_layers, "cutoff": cutoff, "num_basis": num_basis,
                       "dt": dt, "dim": dim, "use_fixed": use_fixed}
        self.cutoff, self.dt, self.dim, self.use_fixed = cutoff, float(dt), dim, use_fixed
        self.rbf = GaussianRBF(num_basis, cutoff)
        self.embed = nn.Linear(2 + 2 * dim, hidden)
        self.layers = nn.ModuleList(MessagePassingLayer(hidden, num_basis) for _ in range(num_layers))
        self.head = mlp(hidden, hidden, 2 * dim)

    def node_inputs(self, data) -> torch.Tensor:
        """Non-invariant node inputs [N, 2 + 2d]: charge, fixed flag, absolute x/L, velocity."""
        q = data.charge.to(data.pos.dtype)[:, None]
        return torch.cat([q, fixed_flag(data), _scaled_positions(data), data.vel], dim=-1)

    def forward(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        pos, vel, box, batch, _ = check_model_inputs(data, need=("vel", "charge"), finite=False)
        if pos.shape[1] != self.dim:
            raise ValueError(f"this AbsoluteCoordinateGNN was built for dim={self.dim}, got pos of shape "
                             f"{tuple(pos.shape)}")
        edge_index, edge_vec = radius_graph(pos, self.cutoff, box=box, batch=batch)
        e = self.rbf(edge_vec.norm(dim=-1))
        h = self.embed(self.node_inputs(data))
        for layer in self.layers:
            h = layer(h, e, edge_index)
        out = self.head(h)
        pos_next = pos + self.dt * vel + out[:, : self.dim]
        if box is not None:
            pos_next = wrap_into_box(pos_next, box[batch])
        return _hold_fixed(data, pos_next, vel + out[:, self.dim :], self.use_fixed)
