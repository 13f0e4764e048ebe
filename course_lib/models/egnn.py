r"""The E(n)-equivariant graph neural network (EGNN) of Satorras, Hoogeboom & Welling (2021) for dynamics.

Task (notebooks on trajectories): map the state of charged particles in a periodic box,
``(pos, vel, charge, box[, fixed])``, to the state one time step ``dt`` later. The prediction must
commute with every symmetry of the physics: permutations of the particles, (periodic) translations,
and the rotations/reflections that map the box onto itself (in open space: all of E(d)).

An invariant MPNN (notebook 01) only sees distances, so it can predict energies but not a *direction*
of motion. The EGNN also carries the positions ``x_i`` (and velocities ``v_i``) through the layers and
moves them only along relative vectors ``x_i - x_j``, multiplied by *invariant* scalars.

One layer (:class:`EGNNLayer`), with ``x_ij = x_i - x_j`` (minimum image in a box)::

    m_ij  = w_ij * phi_e(h_i, h_j, |x_ij|^2, a_ij)                   message (invariant)   [E, H]
    C_i   = 1 / (1 + sum_j w_ij)                                     normalisation          [N, 1]
    v_i  <- phi_v(h_i) v_i + C_i sum_j w_ij x_ij phi_x(m_ij)         velocity (vector)      [N, d]
    x_i  <- x_i + v_i   (then wrapped into the box)                  position               [N, d]
    m_i   = sum_j m_ij                                               aggregation            [N, H]
    h_i  <- h_i + phi_h(h_i, m_i)                                    node update (residual) [N, H]

and without velocities (``velocity=False``): ``x_i <- x_i + C_i sum_j w_ij x_ij phi_x(m_ij)``.

Why it is equivariant: ``|x_ij|^2``, ``a_ij`` and ``h`` are invariant, so ``m_ij``, ``phi_x(m_ij)``,
``phi_v(h_i)`` and ``C_i`` are invariant scalars; a sum of the vectors ``x_ij`` (and ``v_i``) times
invariant scalars rotates with ``R`` and ignores translations (``x_ij`` is a difference); sums over
neighbours do not depend on the order of the particles. Feeding the vector ``x_ij`` itself into an
MLP (a "normal" MPNN with edge vectors as edge features) breaks this: an MLP mixes the components
of ``x_ij`` in a fixed frame (see ``tests/test_models_egnn.py`` for the numbers).

Conventions and choices
-----------------------
* **Sign.** ``x_ij = x_i - x_j`` as in the paper, pointing from ``j`` to ``i``. The course's edge
  convention (every model's ``edges()``, :func:`course_lib.neighbors.radius_graph`, PyG:
  ``edge_index[0] = j`` source, ``edge_index[1] = i`` target) is ``edge_vec = x_j - x_i``; the layer
  computes ``edge_vec`` like every other model and uses ``x_ij = -edge_vec`` in the equations (the
  same numbers, bit for bit). With this sign ``phi_x > 0`` pushes ``i`` away from ``j`` (repulsion),
  ``phi_x < 0`` pulls it closer (attraction).
* **Graph.** ``cutoff=r_c``: the minimum-image radius graph of the *input* positions
  (:func:`~course_lib.neighbors.radius_graph`, requires ``r_c < L/2``), built once per time step.
  ``cutoff=None``: fully connected, all pairs ``i != j`` of each graph (the N-body benchmark of the
  paper; in a box with minimum-image vectors). Every layer recomputes ``x_ij`` from its current
  positions with :func:`~course_lib.neighbors.minimum_image`.
* **Smooth cutoff.** ``w_ij = f_c(|x_ij|)`` is the cosine cutoff of
  :func:`course_lib.models.radial.cosine_cutoff` (1 at 0, 0 at ``r_c`` and beyond), so a neighbour
  that enters or leaves the cutoff changes the prediction continuously. Fully connected: ``w_ij = 1``.
* **C.** ``C_i = 1 / (1 + sum_j w_ij)``: a smooth version of 1/(number of neighbours). It keeps the
  size of the coordinate update independent of the density, stays finite for an isolated particle
  and, unlike ``1/deg_i``, does not jump when a neighbour crosses the cutoff. Fully connected with
  ``M`` particles it is ``1/M`` (the paper: ``1/(M-1)``).
* **Bounded coordinate MLP.** ``phi_x(m) = coord_range * tanh(MLP(m))``: every pair moves ``x_i`` by at
  most ``coord_range * |x_ij|``, so a badly trained network cannot throw particles across the box in
  one layer. The last linear layer starts tiny (Xavier gain 1e-3, no bias, as in the authors' code):
  an untrained EGNN barely moves particles relative to each other.
* **Velocity MLP.** ``phi_v(h) = 1 + tanh(MLP(h))`` in ``(0, 2)``, last layer also initialised near 0,
  so it starts at 1 (keep the velocity). The paper (eq. 7) multiplies ``phi_v`` with the *input*
  velocity in every layer; we carry ``v`` from layer to layer, which makes each layer a learned
  semi-implicit Euler sub-step (``v`` first, then ``x``) and the last ``v`` a velocity we can output.
* **Mapping to the next state** (:class:`EGNN`). The layers are ``K`` sub-steps of length ``dt / K``:
  ``v`` is a displacement per sub-step (units of length), ``v^0 = (dt/K) vel``. Then::

      pos_next = wrap(x^K),   vel_next = (K/dt) v^K.

  The untrained network (``phi_v ~ 1``, ``phi_x ~ 0``) is thus the ballistic integrator
  ``pos + dt vel`` (:class:`course_lib.models.baselines.Ballistic`): training learns the
  interactions as a correction. Both outputs are built from ``x`` and ``v`` only, so ``pos_next``
  transforms as a position and ``vel_next`` as a vector.
* **Crystal atoms** (``data.fixed`` True, ``use_fixed=True``): after every layer and in the output
  their positions are reset to the input and their velocities to zero ("never moved"); their node
  features ``h`` are still updated, so they shape the messages the mobile particles receive.
  ``use_fixed=False`` (ablation) drops this constraint; the node-type flag stays an input either way.

Node inputs ``h^0 = Linear([q_i, |v_i|, fixed_i])`` (``node_features`` picks among charge and speed;
the flag is 0 when the data has no ``fixed``). Edge attribute ``a_ij = q_i q_j`` (``edge_features``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import nn
from torch_geometric.data import Data

from course_lib.data import check_model_inputs, fixed_flag, fixed_mask
from course_lib.graph import batch_of, fully_connected_edges, num_graphs, scatter_sum
from course_lib.models.blocks import mlp
from course_lib.models.radial import cosine_cutoff
from course_lib.neighbors import check_box, minimum_image, radius_graph, wrap_into_box

__all__ = [
    "EGNNLayer",
    "EGNN",
    "RolloutError",
    "step_as_data",
    "rollout",
    "next_step_loss",
    "rollout_loss",
]

NODE_FEATURES = ("charge", "speed")
EDGE_FEATURES = ("charge_product",)


class RolloutError(ValueError):
    """A rollout produced NaN or inf; the message names the step (1 = first prediction)."""


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _small_init_(layer: nn.Linear) -> nn.Linear:
    """Start a last layer near zero (Xavier with gain 1e-3, zero bias), as in the EGNN authors' code."""
    nn.init.xavier_uniform_(layer.weight, gain=1e-3)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


# --------------------------------------------------------------------------------------------
# The layer
# --------------------------------------------------------------------------------------------


class EGNNLayer(nn.Module):
    """One E(n)-equivariant layer (equations in the module docstring).

    Args:
        hidden: width H of the node features h and of the MLPs.
        edge_dim: number A of invariant edge attributes a_ij (0: none).
        cutoff: radius of the smooth cutoff weight w_ij; None: w_ij = 1 (fully connected graphs).
        coord_range: bound of phi_x = coord_range * tanh(MLP(m_ij)); None: phi_x = MLP(m_ij), unbounded
            (the paper's).
        velocity: use the velocity variant (v_i updated, then x_i <- x_i + v_i).
        bounded_velocity: phi_v = 1 + tanh(MLP(h_i)) in (0, 2) (default); False: phi_v = 1 + MLP(h_i),
            unbounded (the paper's function class; the 1 only sets the initial value to free flight).
        mean_aggregation: C = 1 / sum_j w_ij (the paper's 1/(M-1) on a fully connected graph of M nodes)
            instead of the default C = 1 / (1 + sum_j w_ij) (1/M).

    ``forward(h [N,H], x [N,d], v [N,d] | None, edge_index [2,E], edge_attr [E,A] | None,
    box [G,d] | None, batch [N] | None) -> (h [N,H], x [N,d], v [N,d] | None)``.
    """

    def __init__(self, hidden: int = 64, edge_dim: int = 0, cutoff: float | None = None,
                 coord_range: float | None = 1.0, velocity: bool = True, act: type[nn.Module] = nn.SiLU,
                 bounded_velocity: bool = True, mean_aggregation: bool = False):
        super().__init__()
        self.hidden, self.edge_dim, self.cutoff = hidden, edge_dim, cutoff
        self.coord_range = None if coord_range is None else float(coord_range)
        self.velocity, self.bounded_velocity, self.mean_aggregation = velocity, bounded_velocity, mean_aggregation
        # phi_e: two layers, both followed by the activation (as in the paper).
        self.phi_e = nn.Sequential(nn.Linear(2 * hidden + 1 + edge_dim, hidden), act(),
                                   nn.Linear(hidden, hidden), act())
        self.phi_h = mlp(2 * hidden, hidden, hidden, act)
        self.phi_x = nn.Sequential(nn.Linear(hidden, hidden), act(), _small_init_(nn.Linear(hidden, 1, bias=False)))
        if velocity:
            self.phi_v = nn.Sequential(nn.Linear(hidden, hidden), act(), _small_init_(nn.Linear(hidden, 1)))

    def coord_weight(self, m_ij: torch.Tensor) -> torch.Tensor:
        """phi_x(m_ij) = coord_range * tanh(MLP(m_ij)) (or MLP(m_ij) if coord_range is None): one invariant
        scalar per edge, [E, 1]."""
        if self.coord_range is None:
            return self.phi_x(m_ij)
        return self.coord_range * torch.tanh(self.phi_x(m_ij))

    def velocity_scale(self, h: torch.Tensor) -> torch.Tensor:
        """phi_v(h_i) = 1 + tanh(MLP(h_i)) in (0, 2) (or 1 + MLP(h_i), unbounded): one invariant scalar per
        node, [N, 1]."""
        if not self.bounded_velocity:
            return 1.0 + self.phi_v(h)
        return 1.0 + torch.tanh(self.phi_v(h))

    def forward(self, h, x, v, edge_index, edge_attr=None, box=None, batch=None):
        n = x.shape[0]
        j, i = edge_index  # PyG: messages flow from source j to target i
        if batch is None:
            batch = torch.zeros(n, dtype=torch.long, device=x.device)
        edge_vec = x[j] - x[i]  # the course's edge convention (minimum image in a box)
        if box is not None:
            box = box.to(x.dtype)
            edge_vec = minimum_image(edge_vec, box[batch[i]])
        x_ij = -edge_vec  # as in the paper: x_i - x_j
        d2 = (x_ij * x_ij).sum(-1, keepdim=True)  # |x_ij|^2, [E, 1]
        # smooth cutoff weight w_ij [E, 1]; None for w_ij = 1 (fully connected: the products with 1 are skipped,
        # the numbers are the same)
        w = None if self.cutoff is None else cosine_cutoff(d2.clamp_min(1e-24).sqrt(), self.cutoff)

        inputs = [h[i], h[j], d2]
        if self.edge_dim:
            if edge_attr is None or edge_attr.shape != (len(i), self.edge_dim):
                shape = None if edge_attr is None else tuple(edge_attr.shape)
                raise ValueError(f"EGNNLayer(edge_dim={self.edge_dim}) needs edge_attr [E, {self.edge_dim}], "
                                 f"got {shape}")
            inputs.append(edge_attr.to(x.dtype))
        m_ij = self.phi_e(torch.cat(inputs, dim=-1))  # [E, H]
        if w is not None:
            m_ij = w * m_ij

        weight_sum = scatter_sum(torch.ones_like(d2) if w is None else w, i, n)  # [N, 1]
        # smooth 1/(neighbours), [N, 1]; the paper's mean: 1/(M-1) (a node without neighbours gets no update)
        C = 1.0 / weight_sum.clamp_min(1e-12) if self.mean_aggregation else 1.0 / (1.0 + weight_sum)
        pair = x_ij * self.coord_weight(m_ij) if w is None else w * x_ij * self.coord_weight(m_ij)  # [E, d]
        dx = C * scatter_sum(pair, i, n)  # [N, d]
        if self.velocity:
            if v is None:
                raise ValueError("EGNNLayer(velocity=True) needs v [N, d]")
            v = self.velocity_scale(h) * v + dx
            x = x + v
        else:
            x = x + dx
        if box is not None:
            x = wrap_into_box(x, box[batch])

        m_i = scatter_sum(m_ij, i, n)  # [N, H]
        h = h + self.phi_h(torch.cat([h, m_i], dim=-1))
        return h, x, v


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class EGNN(nn.Module):
    """Next-state model ``model(data) -> (pos_next [N,d], vel_next [N,d])``, E(n)-equivariant.

    Args:
        hidden: width H of node features and MLPs.
        num_layers: number K of EGNN layers = sub-steps of length dt/K.
        cutoff: neighbour cutoff r_c (< L/2 in a box); None = fully connected graphs.
        dt: the time step between input and output state (sets the velocity units, see module docstring).
        node_features: invariant node inputs among ``("charge", "speed")``; a fixed-atom flag is always added.
        edge_features: invariant edge attributes among ``("charge_product",)`` (a_ij = q_i q_j); ``()``: none.
        use_fixed: hold atoms with ``data.fixed`` True in place (crystal). False: treat them as mobile.
        coord_range: bound of the coordinate MLP phi_x.

    Old checkpoints load through :data:`LEGACY_CONFIG_KEYS` (:func:`course_lib.train.upgrade_config`).
    """

    #: old checkpoint configuration key -> constructor argument
    LEGACY_CONFIG_KEYS = {"layers": "num_layers"}

    def __init__(self, hidden: int = 64, num_layers: int = 4, cutoff: float | None = 3.0, dt: float = 1.0,
                 node_features: Sequence[str] = NODE_FEATURES, edge_features: Sequence[str] = EDGE_FEATURES,
                 use_fixed: bool = True, coord_range: float = 1.0):
        super().__init__()
        node_features, edge_features = tuple(node_features), tuple(edge_features)
        for name in node_features:
            if name not in NODE_FEATURES:
                raise ValueError(f"unknown node feature {name!r}; choose among {NODE_FEATURES}")
        for name in edge_features:
            if name not in EDGE_FEATURES:
                raise ValueError(f"unknown edge feature {name!r}; choose among {EDGE_FEATURES}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not dt > 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        if cutoff is not None and not cutoff > 0:
            raise ValueError(f"cutoff must be > 0 or None (fully connected), got {cutoff}")
        self.config = {"hidden": hidden, "num_layers": num_layers, "cutoff": cutoff, "dt": dt,
                       "node_features": node_features, "edge_features": edge_features,
                       "use_fixed": use_fixed, "coord_range": coord_range}
        self.cutoff, self.dt, self.use_fixed = cutoff, float(dt), use_fixed
        self.node_features, self.edge_features = node_features, edge_features
        self.embed = nn.Linear(len(node_features) + 1, hidden)
        self.layers = nn.ModuleList(
            EGNNLayer(hidden, len(edge_features), cutoff, coord_range, velocity=True) for _ in range(num_layers)
        )

    # -- inputs -----------------------------------------------------------------------------------
    def node_inputs(self, data) -> torch.Tensor:
        """Invariant node inputs [N, F]: charge, speed |v| (0 for held crystal atoms), fixed flag."""
        pos = data.pos
        fixed = fixed_mask(data)
        feats = []
        for name in self.node_features:
            if name == "charge":
                feats.append(data.charge.to(pos.dtype)[:, None])
            else:  # speed
                speed = data.vel.norm(dim=-1, keepdim=True)
                if self.use_fixed and fixed is not None:
                    speed = torch.where(fixed, torch.zeros_like(speed), speed)
                feats.append(speed)
        return torch.cat([*feats, fixed_flag(data)], dim=-1)

    def edge_inputs(self, data, edge_index: torch.Tensor) -> torch.Tensor | None:
        """Invariant edge attributes a_ij [E, A] (q_i q_j), or None without edge features."""
        if not self.edge_features:
            return None
        j, i = edge_index
        q = data.charge.to(data.pos.dtype)
        return (q[i] * q[j])[:, None]

    def edges(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        """(edge_index [2, E], edge_vec [E, d] = pos[j] - pos[i]): the minimum-image radius graph of the
        input positions, or all pairs (minimum-image vectors in a box) without a cutoff."""
        batch = batch_of(data)
        box = getattr(data, "box", None)
        if self.cutoff is not None:
            return radius_graph(data.pos, self.cutoff, box=box, batch=batch)
        edge_index = fully_connected_edges(batch)
        j, i = edge_index
        edge_vec = data.pos[j] - data.pos[i]
        if box is not None:
            L = check_box(box, num_graphs(data), edge_vec.shape[1]).to(edge_vec)
            edge_vec = minimum_image(edge_vec, L[batch[i]])
        return edge_index, edge_vec

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        """data (pos, vel, charge, box[, fixed]) -> (pos_next [N, d] wrapped, vel_next [N, d])."""
        need_charge = "charge" in self.node_features or bool(self.edge_features)
        pos, vel, box, batch, _ = check_model_inputs(data, need=("vel", "charge") if need_charge else ("vel",),
                                                     finite=False)
        edge_index, _ = self.edges(data)
        a = self.edge_inputs(data, edge_index)
        h = self.embed(self.node_inputs(data))

        K = len(self.layers)
        hold = fixed_mask(data) if self.use_fixed else None
        x = pos
        v = (self.dt / K) * vel  # displacement per sub-step
        if hold is not None:
            v = torch.where(hold, torch.zeros_like(v), v)
        for layer in self.layers:
            h, x, v = layer(h, x, v, edge_index, a, box, batch)
            if hold is not None:  # crystal atoms never move
                x = torch.where(hold, pos, x)
                v = torch.where(hold, torch.zeros_like(v), v)

        pos_next = wrap_into_box(x, box[batch]) if box is not None else x
        vel_next = v * (K / self.dt)
        if hold is not None:
            pos_next = torch.where(hold, pos, pos_next)
            vel_next = torch.where(hold, torch.zeros_like(vel_next), vel_next)
        return pos_next, vel_next


# --------------------------------------------------------------------------------------------
# Using a next-state model: one step as a graph, rollouts, losses
# --------------------------------------------------------------------------------------------


def _replace_state(data, pos: torch.Tensor, vel: torch.Tensor):
    out = data.clone()
    out.pos, out.vel = pos, vel
    return out


def step_as_data(model: nn.Module, data) -> Data:
    """One step of ``model`` as a graph: a copy of ``data`` with ``pos``/``vel`` replaced by the prediction.

    Handy for :func:`course_lib.symmetry.equivariance_error`, which compares a Data output field by field.
    """
    pos, vel = model(data)
    return _replace_state(data, pos, vel)


def rollout(model: nn.Module, data, steps: int, keep_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Predict ``steps`` steps autoregressively, feeding every prediction back as the next input.

    Args:
        model: ``model(data) -> (pos_next [N,d], vel_next [N,d])`` (EGNN or a baseline).
        data: the initial state (a graph or a batch): pos, vel, charge, box[, fixed].
        steps: number of predicted steps, >= 1.
        keep_grad: keep the autograd graph (multi-step training loss); default: run under no_grad.

    Returns:
        ``(traj_pos [N, steps+1, d], traj_vel [N, steps+1, d])``; frame 0 is the input state.

    Raises:
        ValueError: ``steps < 1`` or an invalid state (e.g. ``box`` rows != number of graphs).
        RolloutError: a prediction contains NaN or inf (the message names the step, 1 = first).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"rollout: steps must be an integer >= 1, got {steps!r}")
    pos, vel, _, _, _ = check_model_inputs(data, need=("vel",), finite=False, who="rollout")
    if not (torch.isfinite(pos).all() and torch.isfinite(vel).all()):
        raise RolloutError("rollout: the input state (step 0) contains NaN or inf in pos or vel")
    traj_pos, traj_vel = [pos], [vel]
    state = data
    with nullcontext() if keep_grad else torch.no_grad():
        for step in range(1, steps + 1):
            out = model(state)
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise TypeError(f"rollout: model(data) must return (pos_next, vel_next), got {type(out).__name__}")
            p, v = out
            if tuple(p.shape) != tuple(pos.shape) or tuple(v.shape) != tuple(pos.shape):
                raise ValueError(f"rollout: step {step}: expected pos/vel of shape {tuple(pos.shape)}, got "
                                 f"{tuple(p.shape)} and {tuple(v.shape)}")
            bad = [name for name, t in (("pos", p), ("vel", v)) if not bool(torch.isfinite(t).all())]
            if bad:
                raise RolloutError(
                    f"rollout: NaN or inf in the predicted {' and '.join(bad)} at step {step} of {steps}; "
                    "stopped there. The model is unstable on this input: train it longer, on multi-step "
                    "losses, or with a smaller dt"
                )
            traj_pos.append(p)
            traj_vel.append(v)
            state = _replace_state(data, p, v)
    return torch.stack(traj_pos, dim=1), torch.stack(traj_vel, dim=1)


def _node_box(data, like: torch.Tensor) -> torch.Tensor | None:
    """The box side lengths of every node, broadcastable to ``like`` [N, ..., d]; None in open space."""
    _, _, box, batch, _ = check_model_inputs(data, finite=False)
    if box is None:
        return None
    L = box.to(like.dtype)[batch]
    return L.view(L.shape[0], *([1] * (like.dim() - 2)), L.shape[-1])


def _mobile(data, mobile_only: bool, like: torch.Tensor) -> torch.Tensor | None:
    fixed = getattr(data, "fixed", None)
    if not mobile_only or fixed is None:
        return None
    keep = ~fixed.to(torch.bool)
    if not bool(keep.any()):
        raise ValueError("the loss is restricted to mobile nodes (fixed = False) but every node is fixed")
    return keep


def _mse(diff: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    return (diff if keep is None else diff[keep]).pow(2).mean()


def next_step_loss(model: nn.Module, batch, vel_weight: float = 1.0, mobile_only: bool = True) -> torch.Tensor:
    """MSE(pos) + vel_weight * MSE(vel) of one predicted step against ``target_pos`` / ``target_vel``.

    The position error is the minimum-image difference in a box (a prediction off by exactly L costs
    nothing). With ``mobile_only`` and a ``fixed`` field, only mobile nodes (fixed = False) count.
    Means run over nodes and components. ``loss_fn(model, batch)`` for :func:`course_lib.train.fit`.
    """
    for name in ("target_pos",) + (("target_vel",) if vel_weight else ()):
        if getattr(batch, name, None) is None:
            raise ValueError(f"next_step_loss needs '{name}' [num_nodes, d] (the state one step later)")
    pos, vel = model(batch)
    return _state_loss(batch, pos - batch.target_pos.to(pos.dtype),
                       vel - batch.target_vel.to(vel.dtype) if vel_weight else None, vel_weight, mobile_only)


def _state_loss(batch, dpos, dvel, vel_weight: float, mobile_only: bool) -> torch.Tensor:
    """MSE of position errors (minimum image in a box) + vel_weight * MSE of velocity errors, over
    mobile nodes; ``dpos``/``dvel`` are [N, d] or [N, k, d]."""
    L = _node_box(batch, dpos)
    if L is not None:
        dpos = minimum_image(dpos, L)
    keep = _mobile(batch, mobile_only, dpos)
    loss = _mse(dpos, keep)
    if vel_weight:
        loss = loss + vel_weight * _mse(dvel, keep)
    return loss


def rollout_loss(model: nn.Module, batch, k: int, vel_weight: float = 1.0, start: int = 0,
                 mobile_only: bool = True) -> torch.Tensor:
    """Multi-step loss: roll out ``k`` steps from frame ``start`` of ``traj_pos``/``traj_vel`` and
    back-propagate through all of them.

    Loss = mean over the k predicted frames of [MSE(pos, minimum image) + vel_weight * MSE(vel)], on
    mobile nodes only (with ``mobile_only`` and a ``fixed`` field). Use
    ``functools.partial(rollout_loss, k=5)`` as the ``loss_fn`` of :func:`course_lib.train.fit`.
    """
    traj_pos, traj_vel = getattr(batch, "traj_pos", None), getattr(batch, "traj_vel", None)
    if traj_pos is None or traj_vel is None or traj_pos.dim() != 3 or traj_pos.shape != traj_vel.shape:
        raise ValueError("rollout_loss needs 'traj_pos' and 'traj_vel' of shape [num_nodes, T, d]")
    T = traj_pos.shape[1]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or start < 0 or start + k > T - 1:
        raise ValueError(f"rollout_loss: need k >= 1 and 0 <= start, start + k <= T - 1 = {T - 1}; "
                         f"got k={k!r}, start={start}")
    state = _replace_state(batch, traj_pos[:, start], traj_vel[:, start])
    pred_pos, pred_vel = rollout(model, state, k, keep_grad=True)
    dpos = pred_pos[:, 1:] - traj_pos[:, start + 1 : start + k + 1].to(pred_pos.dtype)
    dvel = pred_vel[:, 1:] - traj_vel[:, start + 1 : start + k + 1].to(pred_vel.dtype)
    return _state_loss(batch, dpos, dvel, vel_weight, mobile_only)
