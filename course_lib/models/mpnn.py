"""The invariant message-passing network of notebook 01 (energy of charged particles in a box).

Design, derived from the symmetries of the task (permutations, translations including periodic
ones, rotations and reflections):

- graph: edges between particles closer than ``cutoff`` under the minimum-image convention
  (:func:`course_lib.neighbors.radius_graph`); only the *distance* r_ij enters, never a direction;
- node input: the charge q_i (and optionally the speed |v_i|), both invariant;
- message passing with sum aggregation (permutation invariant, any number of neighbours)::

      e_ij   = RBF(r_ij)                               radial basis x smooth cutoff   [E, K]
      m_ij   = f_c(r_ij) * phi_e(h_i, h_j, e_ij)       message, weighted by the cutoff [E, H]
      m_i    = sum_{j in N(i)} m_ij                    aggregation                    [N, H]
      h_i   <- h_i + phi_h(h_i, m_i)                   update (residual)              [N, H]

- readout: a per-particle energy E_i = phi_out(h_i), summed over the particles of each graph
  (extensive: twice the system, twice the energy)::

      E = sum_i (sigma * E_i + mu)

  where ``mu`` (energy per particle) and ``sigma`` (scale) are fitted to the training set with
  :meth:`InvariantMPNN.fit_energy_scale`, so the network only learns an O(1) correction.

The message is multiplied by the cosine cutoff f_c(r) = (cos(pi r / r_c) + 1) / 2
(:func:`course_lib.models.radial.cosine_cutoff`, SchNet's): f_c and its derivative vanish at r_c, so a
pair that enters or leaves the neighbour list changes the energy continuously and the forces
(-dE/dx, used for molecular dynamics in notebook 08) stay continuous. The radial basis alone is not
enough: at r_ij = r_c the basis is zero, but phi_e(h_i, h_j, 0) is not, so without the weight the
energy jumps (by ~3e-3 for a lone +- pair with the first shipped checkpoints) when a pair crosses the
cutoff, whatever the activation. SiLU (instead of the sketch's ReLU) makes the energy smooth *between*
neighbour-list changes; the cutoff weight makes it continuous *across* them.

``smooth_cutoff=False`` is the old model without the weight: checkpoints whose configuration has no
``smooth_cutoff`` key were trained that way and load so (:data:`InvariantMPNN.LEGACY_CONFIG_DEFAULTS`,
applied by :func:`course_lib.train.upgrade_config`).
"""

from __future__ import annotations

import torch
from torch import nn

from course_lib.data import check_model_inputs
from course_lib.graph import batch_of, num_graphs, scatter_sum
from course_lib.models.blocks import EnergyScale, mlp
from course_lib.models.radial import GaussianRBF, cosine_cutoff
from course_lib.neighbors import radius_graph

__all__ = ["MessagePassingLayer", "InvariantMPNN"]


class MessagePassingLayer(nn.Module):
    """One invariant message-passing step: h [N, H], e [E, K], edge_index [2, E] -> h' [N, H].

    ``edge_weight`` [E] (optional) multiplies each message (the smooth cutoff f_c(r_ij)).
    """

    def __init__(self, hidden: int, num_basis: int):
        super().__init__()
        self.phi_e = mlp(2 * hidden + num_basis, hidden, hidden)
        self.phi_h = mlp(2 * hidden, hidden, hidden)

    def forward(self, h: torch.Tensor, e: torch.Tensor, edge_index: torch.Tensor,
                edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        j, i = edge_index  # PyG convention: messages flow from source j to target i
        m_ij = self.phi_e(torch.cat([h[i], h[j], e], dim=-1))
        if edge_weight is not None:
            m_ij = m_ij * edge_weight[:, None]
        m_i = scatter_sum(m_ij, i, h.shape[0])
        return h + self.phi_h(torch.cat([h, m_i], dim=-1))


class InvariantMPNN(nn.Module):
    """Energy model E(positions, charges) invariant to permutations, (periodic) translations,
    rotations and reflections. ``model(batch) -> [num_graphs]`` energies.

    Args:
        hidden: width H of node features and MLPs (64, as in the solution sketch).
        num_layers: number of message-passing layers (3).
        cutoff: neighbour cutoff r_c; must be < L/2 for periodic boxes (checked by radius_graph).
        num_basis: number K of Gaussian radial basis functions.
        use_speed: also feed |v_i| (invariant, but the potential energy does not depend on it).
        smooth_cutoff: multiply each message by f_c(r_ij), so the energy is continuous when a pair
            crosses r_c (True; False is the first version of the course, whose energy jumps there).

    Checkpoints written before the common vocabulary load through :data:`LEGACY_CONFIG_KEYS`
    (old configuration key -> new) and :data:`LEGACY_CONFIG_DEFAULTS` (a key missing from an old
    configuration -> the value the old code behaved as), applied by :func:`course_lib.train.upgrade_config`.
    """

    #: the system the model describes (read by :class:`course_lib.ase_calculator.CourseCalculator`)
    system = "particles2d"
    #: old checkpoint configuration key -> constructor argument
    LEGACY_CONFIG_KEYS = {"layers": "num_layers"}
    #: constructor argument missing from old checkpoints -> the behaviour they were trained with
    LEGACY_CONFIG_DEFAULTS = {"smooth_cutoff": False}

    def __init__(self, hidden: int = 64, num_layers: int = 3, cutoff: float = 3.0, num_basis: int = 32,
                 use_speed: bool = False, smooth_cutoff: bool = True):
        super().__init__()
        self.config = {"hidden": hidden, "num_layers": num_layers, "cutoff": cutoff, "num_basis": num_basis,
                       "use_speed": use_speed, "smooth_cutoff": smooth_cutoff}
        self.cutoff = cutoff
        self.use_speed = use_speed
        self.smooth_cutoff = smooth_cutoff
        self.rbf = GaussianRBF(num_basis, cutoff)
        self.embed = nn.Linear(self.num_node_inputs(), hidden)
        self.layers = nn.ModuleList(MessagePassingLayer(hidden, self.num_edge_features())
                                    for _ in range(num_layers))
        self.phi_out = mlp(hidden, hidden, 1)
        self.register_buffer("mu", torch.zeros(()))
        self.register_buffer("sigma", torch.ones(()))

    # -- inputs -----------------------------------------------------------------------------------
    def num_node_inputs(self) -> int:
        return 1 + int(self.use_speed)

    def node_inputs(self, batch) -> torch.Tensor:
        """Invariant node inputs [N, F]: the charge (and the speed)."""
        feats = [batch.charge[:, None].to(batch.pos.dtype)]
        if self.use_speed:
            feats.append(batch.vel.norm(dim=-1, keepdim=True))
        return torch.cat(feats, dim=-1)

    def num_edge_features(self) -> int:
        return self.rbf.num_basis

    def edge_features(self, edge_vec: torch.Tensor) -> torch.Tensor:
        """Invariant edge features [E, K]: the radial basis of the distance r_ij = |edge_vec|."""
        return self.rbf(edge_vec.norm(dim=-1))

    def edges(self, batch):
        """(edge_index [2, E], edge_vec [E, d] = pos[j] - pos[i]) from the minimum-image radius graph."""
        return radius_graph(batch.pos, self.cutoff, box=getattr(batch, "box", None), batch=batch_of(batch))

    # -- forward ----------------------------------------------------------------------------------
    def atomic_energies(self, batch) -> torch.Tensor:
        """Per-particle energies [N] (before summing)."""
        check_model_inputs(batch, need=("charge", "vel") if self.use_speed else ("charge",),
                           who=f"{type(self).__name__}(use_speed=True)" if self.use_speed else type(self).__name__)
        edge_index, edge_vec = self.edges(batch)
        e = self.edge_features(edge_vec)
        w = cosine_cutoff(edge_vec.norm(dim=-1), self.cutoff) if self.smooth_cutoff else None
        h = self.embed(self.node_inputs(batch))
        for layer in self.layers:
            h = layer(h, e, edge_index, w)
        return self.sigma * self.phi_out(h).squeeze(-1) + self.mu

    def forward(self, batch) -> torch.Tensor:
        """batch -> energies [num_graphs] (sum pooling of per-particle energies)."""
        E_i = self.atomic_energies(batch)
        return scatter_sum(E_i, batch_of(batch), num_graphs(batch))

    @torch.no_grad()
    def fit_energy_scale(self, graphs) -> EnergyScale:
        """Set mu = mean energy per particle and sigma = std of (E - N mu) / sqrt(N) over ``graphs``.

        Returns ``EnergyScale(shift=mu (0-d tensor), scale=sigma)``.
        """
        E = torch.cat([g.energy.reshape(-1) for g in graphs]).double()
        N = torch.tensor([g.num_nodes for g in graphs], dtype=torch.float64)
        mu = (E.sum() / N.sum()).item()
        sigma = ((E - N * mu) / N.sqrt()).std().clamp_min(1e-6).item()
        self.mu.fill_(mu)
        self.sigma.fill_(sigma)
        return EnergyScale(shift=self.mu.clone(), scale=sigma)
