r"""An energy model as a dynamics model: velocity Verlet with learned forces (notebook 02's physics baseline).

EGNN (notebook 02) learns the map from one frame to the next directly. The other way to predict a trajectory
is the physicist's: learn the potential energy :math:`E_\theta(\mathbf x)` (notebook 01's invariant MPNN),
take its forces by automatic differentiation and integrate Newton's equations,

.. math::

    \mathbf F_i = -\frac{\partial E_\theta}{\partial \mathbf x_i}, \qquad
    \mathbf v \leftarrow \mathbf v + \tfrac{\Delta t}{2m}\mathbf F(\mathbf x),\quad
    \mathbf x \leftarrow \mathrm{wrap}(\mathbf x + \Delta t\,\mathbf v),\quad
    \mathbf v \leftarrow \mathbf v + \tfrac{\Delta t}{2m}\mathbf F(\mathbf x),

``substeps`` times per frame (the data's frames are ``DT * STEPS_PER_FRAME = 0.2`` apart). What the
construction guarantees, for any weights (each checked in ``tests/test_verlet.py``):

- the step is E(2)-equivariant (rotations and reflections of the box's group, translations modulo L,
  permutations) whenever :math:`E_\theta` is invariant: forces of an invariant energy are equivariant;
- the total momentum :math:`\sum_i m \mathbf v_i` is conserved exactly (to round-off): a translation-invariant
  energy has :math:`\sum_i \mathbf F_i = -\frac{d}{d\mathbf a} E_\theta(\mathbf x + \mathbf a) = 0`;
- the *learned* total energy :math:`E_\theta + K` is conserved up to the integrator's
  :math:`O(\Delta t^2)` error if :math:`E_\theta` is smooth (velocity Verlet is symplectic; the tests check the
  :math:`\Delta t^2` scaling over a short run, not the long-time absence of drift);
- with the true energy and the data's own timestep it reproduces the data (the simulator's integrator).

A next-state model such as EGNN has none of the last three by construction; it has to learn them.

Shapes: ``data.pos, data.vel [N, d]``, ``data.box [num_graphs, d]``, optional ``data.fixed [N]`` (atoms that
never move); the energy model maps a batch to ``[num_graphs]`` energies. Unit masses, as in the data.
"""

from __future__ import annotations

import torch
from torch import nn

from course_lib.data import check_model_inputs, fixed_mask
from course_lib.models import energy_and_forces
from course_lib.neighbors import wrap_into_box
from course_lib.simulate import particles2d as p2d

__all__ = ["EnergyVerlet", "PairPotentialEnergy"]


class PairPotentialEnergy(nn.Module):
    """The simulator's true potential energy (:func:`course_lib.simulate.particles2d.energy`) as an energy model:
    ``batch (pos [N, 2], charge [N], box [num_graphs, 2]) -> [num_graphs]``, differentiable. With it,
    :class:`EnergyVerlet` at the data's ``DT`` and ``STEPS_PER_FRAME`` is the simulator itself (the reference)."""

    def forward(self, data) -> torch.Tensor:
        pos, _, box, batch, G = check_model_inputs(data, need=("charge",), dims=(2,), finite=False,
                                                   who="PairPotentialEnergy")
        if box is None:
            raise ValueError("PairPotentialEnergy needs 'box' [num_graphs, 2] (the simulator is periodic)")
        charge = data.charge.to(pos.dtype)
        return torch.stack([p2d.energy(pos[batch == g], charge[batch == g], box[g, 0]) for g in range(G)])


class EnergyVerlet(nn.Module):
    """``model(data) -> (pos_next [N, d], vel_next [N, d])``: ``substeps`` velocity-Verlet steps of ``dt`` with
    the forces of ``energy_model``; the same interface as :class:`course_lib.models.egnn.EGNN`, so
    :func:`course_lib.models.egnn.rollout` and the benchmarks' metrics apply unchanged.

    Args:
        energy_model: ``batch -> [num_graphs]`` energies (e.g. ``InvariantMPNN``); its mode is left as it is.
        dt: the integrator's timestep (> 0).
        substeps: integrator steps per predicted frame (>= 1).
        mass: the particles' mass (> 0; the course's data use 1).
        dtype: integrate in this floating dtype (e.g. ``torch.float64`` with a float64 energy model, so that
            round-off does not add to the error over hundreds of sub-steps) and return the input's dtype;
            ``None``: the input's dtype.
    """

    def __init__(self, energy_model: nn.Module, dt: float, substeps: int, mass: float = 1.0,
                 dtype: torch.dtype | None = None):
        super().__init__()
        if not dt > 0 or not mass > 0:
            raise ValueError(f"EnergyVerlet: dt and mass must be > 0, got dt={dt}, mass={mass}")
        if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
            raise ValueError(f"EnergyVerlet: substeps must be an integer >= 1, got {substeps!r}")
        self.energy_model = energy_model
        self.dt, self.substeps, self.mass, self.dtype = float(dt), substeps, float(mass), dtype

    def forces(self, data, pos: torch.Tensor) -> torch.Tensor:
        """``F = -dE/dx`` at ``pos`` [N, d] (the other fields of ``data`` unchanged), detached: [N, d]."""
        state = data.clone()
        state.pos = pos
        _, f = energy_and_forces(self.energy_model, state, create_graph=False)
        return f.detach()

    def forward(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        check_model_inputs(data, need=("vel",), finite=False, who="EnergyVerlet")
        out_dtype = data.pos.dtype
        if self.dtype is not None and self.dtype != out_dtype:
            data = data.clone()
            for key in ("pos", "vel", "charge", "box"):
                if getattr(data, key, None) is not None:
                    setattr(data, key, getattr(data, key).to(self.dtype))
        pos, vel, box, batch, _ = check_model_inputs(data, need=("vel",), finite=False, who="EnergyVerlet")
        hold = fixed_mask(data)
        move = torch.ones_like(pos[:, :1]) if hold is None else (~hold).to(pos.dtype)  # [N, 1]
        L = None if box is None else box.to(pos.dtype)[batch]  # [N, d]
        half = 0.5 * self.dt / self.mass
        x, v = pos.detach(), vel.detach() * move
        f = self.forces(data, x) * move
        for _ in range(self.substeps):
            v = v + half * f
            x = x + self.dt * v
            if L is not None:
                x = wrap_into_box(x, L)
            f = self.forces(data, x) * move
            v = v + half * f
        return x.to(out_dtype), v.to(out_dtype)
