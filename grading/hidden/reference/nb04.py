"""Reference solution of notebook 04 and the outputs of the known mistakes the checker diagnoses.

Instructor material: not part of the installed package (see ``nb01.py`` here for the contract of ``compute``).
"""

from __future__ import annotations

import torch

__all__ = ["coulomb_step", "NBodyModel", "compute", "SOLUTIONS"]


def _pairs(batch, across=False):
    """Ordered pairs (i, j), i != j, of the same system (of any two particles with ``across``)."""
    same = torch.ones(len(batch), len(batch), dtype=torch.bool) if across else batch[:, None] == batch[None, :]
    i, j = torch.nonzero(same & ~torch.eye(len(batch), dtype=torch.bool), as_tuple=True)
    return i, j


def _step(pos, vel, charge, batch, t, c, power=3, sign=1.0, mean=False, across=False):
    i, j = _pairs(batch, across)
    d = pos[i] - pos[j]
    term = sign * (charge[i] * charge[j])[:, None] * d / d.norm(dim=-1, keepdim=True) ** power
    kick = torch.zeros_like(pos).index_add(0, i, term)
    if mean:
        kick = kick / torch.bincount(i, minlength=len(pos)).clamp_min(1)[:, None].to(pos.dtype)
    return pos + t * vel + c * kick


def coulomb_step(pos, vel, charge, batch, t, c):
    """Reference solution of 04.coulomb_step: x_i + t v_i + c sum_{j != i, same system} q_i q_j x_ij / |x_ij|^3."""
    same = batch[:, None] == batch[None, :]
    d = pos[:, None, :] - pos[None, :, :]  # [N, N, 3]: x_i - x_j
    r = d.norm(dim=-1)
    w = torch.where(same & (r > 0), charge[:, None] * charge[None, :] / r.clamp_min(1e-12) ** 3, torch.zeros_like(r))
    return pos + t * vel + c * (w[..., None] * d).sum(1)


class NBodyModel(torch.nn.Module):
    """Reference solution of the design exercise 04.nbody_design (one design among many), as in the notebook: a
    small EGNN. data (pos, vel [N, 3], charge [N], batch [N]) -> positions one time unit later [N, 3]."""

    def __init__(self, hidden=32, num_layers=3):
        super().__init__()
        def mlp(n_in, n_out, small=False):
            layers = [torch.nn.Linear(n_in, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, n_out)]
            if small:  # the last layer starts near zero: the untrained model is free flight
                torch.nn.init.xavier_uniform_(layers[-1].weight, gain=1e-3)
                torch.nn.init.zeros_(layers[-1].bias)
            return torch.nn.Sequential(*layers)

        self.embed = torch.nn.Linear(1, hidden)
        self.phi_e = torch.nn.ModuleList(mlp(2 * hidden + 3, hidden) for _ in range(num_layers))
        self.phi_x = torch.nn.ModuleList(mlp(hidden, 1, small=True) for _ in range(num_layers))
        self.phi_v = torch.nn.ModuleList(mlp(hidden, 1, small=True) for _ in range(num_layers))
        self.phi_h = torch.nn.ModuleList(mlp(2 * hidden, hidden) for _ in range(num_layers))

    def forward(self, data):
        pos, vel, q, batch = data.pos, data.vel, data.charge.to(data.pos.dtype), data.batch
        pair = (batch[:, None] == batch[None, :]) & ~torch.eye(len(pos), dtype=torch.bool, device=pos.device)
        i, j = torch.nonzero(pair, as_tuple=True)  # ordered pairs of the same system
        d0 = pos[i] - pos[j]
        a = torch.stack([q[i] * q[j], (d0 * d0).sum(-1)], dim=-1)  # invariant edge attributes
        count = torch.bincount(batch).to(pos.dtype)[batch][:, None]  # particles per system
        h = self.embed(vel.norm(dim=-1, keepdim=True))
        x = pos
        for phi_e, phi_x, phi_v, phi_h in zip(self.phi_e, self.phi_x, self.phi_v, self.phi_h):
            d = x[i] - x[j]
            m = torch.nn.functional.silu(phi_e(torch.cat([h[i], h[j], (d * d).sum(-1, keepdim=True), a], dim=-1)))
            push = torch.zeros_like(x).index_add(0, i, d * 3.0 * torch.tanh(phi_x(m))) / count
            x = x + push + (1.0 + torch.tanh(phi_v(h))) * vel / len(self.phi_e)
            h = h + phi_h(torch.cat([h, torch.zeros_like(h).index_add(0, i, m)], dim=-1))
        return x


SOLUTIONS = {"04.coulomb_step": coulomb_step, "04.nbody_design": NBodyModel}


def compute(exercise_id: str, variant: str, *inputs):
    """The expected output of ``variant`` ("values": the correct one; else a named mistake) on ``inputs``."""
    if exercise_id == "04.coulomb_step":
        options = {"values": {}, "attractive": {"sign": -1.0}, "inverse square": {"power": 2},
                   "mean": {"mean": True}, "across systems": {"across": True}}
        return _step(*inputs, **options[variant])
    raise KeyError(exercise_id)
