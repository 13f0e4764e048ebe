r"""The models of the EGNN paper's N-body benchmark (Satorras, Hoogeboom & Welling 2021, Table 2).

Task (:mod:`course_lib.simulate.nbody`): five charged particles in open 3D space; from the state at
frame 30, ``data = (pos [N, 3], vel [N, 3], charge [N])``, predict the positions at frame 40 (time
1.0 later). Every model here is ``forward(data) -> pos_pred [N, 3]``, works on a single graph or a
PyG batch of graphs (``data.batch``), uses fully connected graphs (every pair ``i != j`` of a
system) and is constructible with no arguments (the paper's settings: 4 layers, 64 hidden, SiLU).

Notation (the columns of the paper's Table 1): ``x_ij = x_i - x_j``, ``a_ij = q_i q_j`` (charge
product), ``M`` particles per system, ``l`` the layer.

=================  ================================================================  ==================
model              update                                                            symmetry
=================  ================================================================  ==================
LinearDynamics     ``x_i + t v_i`` (one learned time ``t``; the paper's linear           E(3) x S_M
                   baseline); ``mode="general"``: ``W [x_i, v_i] + b`` (a linear layer    S_M only
                   on the concatenated 6 numbers)
GNNDynamics        ``m_ij = phi_e(h_i, h_j, a_ij)``, ``h_i <- h_i + phi_h(h_i, sum_j m_ij)``  S_M only
                   with ``h^0 = Linear([x_i, v_i])``; output ``x_i' = phi_out(h_i)``
RadialField        ``x_i <- x_i + 1/(M-1) sum_j phi_rf(|x_ij|, a_ij) x_ij                 E(3) x S_M
                   + phi_v(|v_i|) v_i``
EGNNDynamics       EGNN with velocity (paper eq. 7), see the class docstring              E(3) x S_M
=================  ================================================================  ==================

``S_M``: permutations of the particles (the output rows are permuted the same way). ``E(3)``:
rotations, reflections and translations (the output positions transform like the input positions).
The GNN reads raw coordinates and velocity components through MLPs, so it has to *learn* the
rotation and translation symmetry from data; the others have it built in
(``tests/test_models_nbody.py`` checks all of this with :mod:`course_lib.symmetry`).
"""

from __future__ import annotations

import torch
from torch import nn

from course_lib.data import check_model_inputs
from course_lib.graph import fully_connected_edges, scatter_sum
from course_lib.models.egnn import EGNNLayer

__all__ = ["LinearDynamics", "GNNDynamics", "RadialField", "EGNNDynamics", "NBODY_MODELS"]

#: old checkpoint configuration key -> constructor argument, for every model of this module
LEGACY_CONFIG_KEYS = {"layers": "num_layers"}


def _inputs(data, need_charge: bool = True):
    """Validate (:func:`course_lib.data.check_model_inputs`) and return
    ``(pos [N,3], vel [N,3], charge [N] | None, batch [N], edge_index [2, E])`` with fully connected edges."""
    pos, vel, _, batch, _ = check_model_inputs(data, need=("vel", "charge") if need_charge else ("vel",),
                                               finite=False)
    charge = data.charge.to(pos.dtype) if need_charge else None
    return pos, vel, charge, batch, fully_connected_edges(batch)


def _pair_attributes(pos: torch.Tensor, q: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """Invariant edge attributes ``a_ij = [q_i q_j, |x_i^0 - x_j^0|^2]`` [E, 2] (the authors' code)."""
    j, i = edge_index
    d0 = pos[i] - pos[j]
    return torch.stack([q[i] * q[j], (d0 * d0).sum(-1)], dim=-1)


def _mean_over_neighbours(src: torch.Tensor, i: torch.Tensor, n: int) -> torch.Tensor:
    """(1 / deg_i) sum_{j -> i} src_ij: the paper's C = 1/(M-1) on fully connected graphs. [E, k] -> [n, k]."""
    deg = scatter_sum(torch.ones_like(src[:, :1]), i, n).clamp_min(1.0)
    return scatter_sum(src, i, n) / deg


# --------------------------------------------------------------------------------------------
# Linear
# --------------------------------------------------------------------------------------------


class LinearDynamics(nn.Module):
    """The linear baseline.

    ``mode="motion"`` (default, the paper's "Linear": the equation of motion ``p(t) = p(0) + v(0) t``)::

        x_i' = x_i + t v_i                  one parameter t (initialised at 0.7 as in the authors' code)

    ``mode="general"`` (the authors' ``Linear(6, 3)``): a linear layer on the 6 numbers of each particle::

        x_i' = W [x_i, v_i] + b             W [3, 6], b [3]

    ``x + t v`` is E(3) equivariant (``R x + g + t R v``); the general layer is not (it can mix the
    axes and has an absolute offset ``b``). Neither sees the other particles. Both are linear least
    squares problems, solved exactly by :meth:`fit_closed_form`.
    """

    def __init__(self, mode: str = "motion", t0: float = 0.7, dim: int = 3):
        super().__init__()
        if mode not in ("motion", "general"):
            raise ValueError(f"mode must be 'motion' or 'general', got {mode!r}")
        self.config = {"mode": mode, "t0": t0, "dim": dim}
        self.mode = mode
        if mode == "motion":
            self.time = nn.Parameter(torch.tensor([float(t0)]))
        else:
            self.linear = nn.Linear(2 * dim, dim)

    def forward(self, data) -> torch.Tensor:
        pos, vel, _, _, _ = _inputs(data, need_charge=False)
        if self.mode == "motion":
            return pos + self.time.to(pos.dtype) * vel
        return self.linear(torch.cat([pos, vel], dim=-1))

    @torch.no_grad()
    def fit_closed_form(self, pos: torch.Tensor, vel: torch.Tensor, target: torch.Tensor) -> dict:
        """Set the parameters to the exact minimiser of the training MSE (least squares, float64).

        ``pos, vel, target``: ``[..., 3]`` (any leading shape). Returns the fitted values.
        """
        x, v, y = (t.reshape(-1, t.shape[-1]).double() for t in (pos, vel, target))
        if self.mode == "motion":
            t = float((v * (y - x)).sum() / (v * v).sum())  # d/dt sum |x + t v - y|^2 = 0
            self.time.fill_(t)
            return {"t": t}
        A = torch.cat([x, v, torch.ones_like(x[:, :1])], dim=-1)  # [n, 7]
        sol = torch.linalg.lstsq(A, y).solution  # [7, 3]
        self.linear.weight.copy_(sol[:-1].T.to(self.linear.weight.dtype))
        self.linear.bias.copy_(sol[-1].to(self.linear.bias.dtype))
        return {"weight": self.linear.weight.tolist(), "bias": self.linear.bias.tolist()}


# --------------------------------------------------------------------------------------------
# GNN
# --------------------------------------------------------------------------------------------


class GNNLayer(nn.Module):
    """One message-passing layer of the paper's GNN (Table 1, first column)::

        m_ij = phi_e(h_i, h_j, a_ij)          [E, H]   phi_e: Linear-act-Linear-act
        m_i  = sum_{j != i} m_ij               [N, H]
        h_i <- h_i + phi_h(h_i, m_i)           [N, H]   phi_h: Linear-act-Linear (residual)
    """

    def __init__(self, hidden: int = 64, edge_dim: int = 1, act: type[nn.Module] = nn.SiLU):
        super().__init__()
        self.phi_e = nn.Sequential(nn.Linear(2 * hidden + edge_dim, hidden), act(), nn.Linear(hidden, hidden), act())
        self.phi_h = nn.Sequential(nn.Linear(2 * hidden, hidden), act(), nn.Linear(hidden, hidden))

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        j, i = edge_index
        m_ij = self.phi_e(torch.cat([h[i], h[j], edge_attr], dim=-1))
        m_i = scatter_sum(m_ij, i, h.shape[0])
        return h + self.phi_h(torch.cat([h, m_i], dim=-1))


class GNNDynamics(nn.Module):
    """The paper's non-equivariant GNN: message passing on the raw coordinates and velocities::

        h_i^0 = Linear([x_i, v_i])                      [N, H]   (6 numbers per particle)
        h^{l+1} = GNNLayer(h^l, a_ij = q_i q_j)         4 layers
        x_i'  = phi_out(h_i^L)                          [N, 3]   phi_out: Linear-act-Linear

    As in the authors' code the decoder outputs the position itself (``residual=False``);
    ``residual=True`` predicts ``x_i + phi_out(h_i)`` instead (an ablation, not the paper's model).
    Sum aggregation makes it permutation equivariant; reading ``x_i`` and ``v_i`` component by
    component makes it neither translation nor rotation/reflection equivariant.
    """

    LEGACY_CONFIG_KEYS = LEGACY_CONFIG_KEYS

    def __init__(self, hidden: int = 64, num_layers: int = 4, act: type[nn.Module] = nn.SiLU,
                 residual: bool = False, dim: int = 3):
        super().__init__()
        self.config = {"hidden": hidden, "num_layers": num_layers, "residual": residual, "dim": dim}
        self.residual = residual
        self.embed = nn.Linear(2 * dim, hidden)
        self.layers = nn.ModuleList(GNNLayer(hidden, 1, act) for _ in range(num_layers))
        self.decoder = nn.Sequential(nn.Linear(hidden, hidden), act(), nn.Linear(hidden, dim))

    def forward(self, data) -> torch.Tensor:
        pos, vel, q, batch, edge_index = _inputs(data)
        j, i = edge_index
        a = (q[i] * q[j])[:, None]  # [E, 1]
        h = self.embed(torch.cat([pos, vel], dim=-1))
        for layer in self.layers:
            h = layer(h, edge_index, a)
        out = self.decoder(h)
        return pos + out if self.residual else out


# --------------------------------------------------------------------------------------------
# Radial field
# --------------------------------------------------------------------------------------------


class RadialFieldLayer(nn.Module):
    """One radial-field layer (Köhler et al. 2019, with the velocity term of the EGNN authors)::

        m_ij = phi_rf(|x_ij|, a_ij) x_ij                               [E, 3]
        x_i <- x_i + 1/(M-1) sum_{j != i} m_ij + phi_v(|v_i|) v_i       [N, 3]

    ``phi_rf``: Linear-act-Linear-tanh with the last layer initialised near 0 (the authors added the
    tanh for stability); ``phi_v``: Linear-act-Linear on the input speed. ``v_i`` is the *input*
    velocity in every layer.
    """

    def __init__(self, hidden: int = 64, edge_dim: int = 2, act: type[nn.Module] = nn.SiLU):
        super().__init__()
        last = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=1e-3)
        self.phi_rf = nn.Sequential(nn.Linear(1 + edge_dim, hidden), act(), last, nn.Tanh())
        self.phi_v = nn.Sequential(nn.Linear(1, hidden), act(), nn.Linear(hidden, 1))

    def forward(self, x, v, speed, edge_index, edge_attr):
        j, i = edge_index
        x_ij = x[i] - x[j]
        r = (x_ij * x_ij).sum(-1, keepdim=True).clamp_min(1e-24).sqrt()  # |x_ij|, [E, 1]
        m_ij = self.phi_rf(torch.cat([r, edge_attr], dim=-1)) * x_ij
        return x + _mean_over_neighbours(m_ij, i, x.shape[0]) + self.phi_v(speed) * v


class RadialField(nn.Module):
    """The paper's Radial Field baseline with velocity: 4 :class:`RadialFieldLayer` on the positions.

    ``x^0 = pos``; edge attributes ``a_ij = [q_i q_j, |x_ij^0|^2]`` (as for the EGNN, in the authors'
    code); output ``x^L``. No hidden node features: the only per-node state is the position itself.
    E(3) and permutation equivariant: the only vectors are ``x_ij`` and ``v_i``, multiplied by invariants.
    """

    LEGACY_CONFIG_KEYS = LEGACY_CONFIG_KEYS

    def __init__(self, hidden: int = 64, num_layers: int = 4, act: type[nn.Module] = nn.SiLU):
        super().__init__()
        self.config = {"hidden": hidden, "num_layers": num_layers}
        self.layers = nn.ModuleList(RadialFieldLayer(hidden, 2, act) for _ in range(num_layers))

    def forward(self, data) -> torch.Tensor:
        pos, vel, q, batch, edge_index = _inputs(data)
        a = _pair_attributes(pos, q, edge_index)  # [E, 2]
        speed = vel.norm(dim=-1, keepdim=True)
        x = pos
        for layer in self.layers:
            x = layer(x, vel, speed, edge_index, a)
        return x


# --------------------------------------------------------------------------------------------
# EGNN
# --------------------------------------------------------------------------------------------


class EGNNDynamics(nn.Module):
    r"""The EGNN with velocity of the paper (eq. 7), built from :class:`course_lib.models.egnn.EGNNLayer`::

        h_i^0 = Linear(|v_i|)                                   [N, H]   invariant node input
        a_ij  = [q_i q_j, |x_i^0 - x_j^0|^2]                    [E, 2]   invariant edge attributes
        m_ij  = phi_e(h_i, h_j, |x_ij^l|^2, a_ij)               [E, H]
        v_i^{l+1} = phi_v(h_i^l) v_i^0 + C sum_j x_ij^l phi_x(m_ij)          [N, 3]
        x_i^{l+1} = x_i^l + v_i^{l+1}                           [N, 3]
        h_i^{l+1} = h_i^l + phi_h(h_i^l, sum_j m_ij)            [N, H]
        pos_pred = x^L

    * **Input velocity in every layer** (paper eq. 7 and the authors' code): every layer gets the
      *input* velocity ``v^0`` (``carry_velocity=False``, the default). ``carry_velocity=True`` feeds
      each layer the ``v`` returned by the previous one instead (the course's
      :class:`~course_lib.models.egnn.EGNN`: a learned semi-implicit Euler step). Both are
      E(3)-equivariant.
    * **Units.** ``v^0 = (dt / L) vel`` with ``L`` layers and ``dt = 1`` (frame 30 -> 40 is time 1.0):
      ``EGNNLayer`` starts with ``phi_v = 1`` and ``phi_x ~ 0``, so the untrained network is free
      flight ``pos + dt vel``, and training learns the interaction as a correction. In the paper
      ``phi_v`` is an unbounded MLP; here it is ``1 + tanh(MLP)`` in (0, 2): per layer anything from
      standing still to twice free flight (the best constant is ``0.68 vel``, see
      ``data/README_nbody.md``).
    * ``C = 1/(1 + sum_j w_ij) = 1/M`` (the paper: ``1/(M-1)``), ``w_ij = 1`` (fully connected), and
      ``phi_x = coord_range * tanh(MLP)``: see :mod:`course_lib.models.egnn`. ``coord_range`` bounds
      the step of each pair (it breaks no symmetry). The paper's ``phi_x`` is unbounded; the
      :class:`~course_lib.models.egnn.EGNN` default ``coord_range=1`` (a pair moves ``x_i`` by at most
      ``|x_ij|/M`` per layer) is too tight here: close encounters of opposite charges need large
      corrections, and a saturated tanh learns slowly. Chosen on the *validation* MSE of the full
      benchmark: ``coord_range`` 1 plateaus at 0.0114 (best epoch 122), 3 reaches 0.0071 and 10
      reaches 0.0069 after 150 epochs; the default is 10 (``benchmarks/README.md``).
    * **The paper's updates** (for the ablation of ``benchmarks/README.md``): ``coord_range=None`` (unbounded
      ``phi_x``), ``bounded_velocity=False`` (``phi_v = 1 + MLP``, unbounded) and ``mean_aggregation=True``
      (``C = 1/(M-1)``).
    """

    LEGACY_CONFIG_KEYS = LEGACY_CONFIG_KEYS

    def __init__(self, hidden: int = 64, num_layers: int = 4, dt: float = 1.0, coord_range: float | None = 10.0,
                 carry_velocity: bool = False, act: type[nn.Module] = nn.SiLU, bounded_velocity: bool = True,
                 mean_aggregation: bool = False):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.config = {"hidden": hidden, "num_layers": num_layers, "dt": dt, "coord_range": coord_range,
                       "carry_velocity": carry_velocity, "bounded_velocity": bounded_velocity,
                       "mean_aggregation": mean_aggregation}
        self.dt, self.carry_velocity = float(dt), carry_velocity
        self.embed = nn.Linear(1, hidden)
        self.layers = nn.ModuleList(
            EGNNLayer(hidden, edge_dim=2, cutoff=None, coord_range=coord_range, velocity=True, act=act,
                      bounded_velocity=bounded_velocity, mean_aggregation=mean_aggregation)
            for _ in range(num_layers)
        )

    def forward(self, data) -> torch.Tensor:
        pos, vel, q, batch, edge_index = _inputs(data)
        a = _pair_attributes(pos, q, edge_index)  # [E, 2]
        h = self.embed(vel.norm(dim=-1, keepdim=True))
        v0 = (self.dt / len(self.layers)) * vel
        x, v = pos, v0
        for layer in self.layers:
            h, x, v_new = layer(h, x, v, edge_index, a, None, batch)
            v = v_new if self.carry_velocity else v0
        return x


#: name -> (class, learning rate of the paper, label in tables)
NBODY_MODELS = {
    "linear": (LinearDynamics, None, "Linear (x + t v)"),
    "gnn": (GNNDynamics, 1e-3, "GNN"),
    "rf": (RadialField, 2e-4, "Radial Field"),
    "egnn": (EGNNDynamics, 5e-4, "EGNN"),
}
