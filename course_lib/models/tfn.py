r"""A small Tensor Field Network that predicts one vector per node (Thomas et al., arXiv:1802.08219, 2018).

The pieces of notebook 06 (spherical harmonics, tensor products with weights from the edge length, the gated
nonlinearity) assembled into a network. For a point cloud with scalar node inputs :math:`s_i` (e.g. charges):

.. math::

    h_i^{0} = s_i \quad (\texttt{0e}), \qquad
    m_i^{t} = \frac{1}{\sqrt{\bar n}} \sum_{j \in \mathcal N(i)}
              \mathrm{TP}\big(h_j^{t},\, Y(\hat r_{ij});\, W^{t}(|r_{ij}|)\big), \qquad
    h_i^{t+1} = \mathrm{Gate}(m_i^{t}),

and the output :math:`v_i = \mathrm{Linear}(h_i^{T})`, one ``1o`` vector per node ``[N, 3]``. The weights
:math:`W^t` of every path of the fully connected tensor product come from an MLP of a Bessel expansion of the
edge length only, so the network is E(3) equivariant (rotations, reflections, translations) and permutation
equivariant for any weights. Hidden features: ``hidden`` copies of each irrep ``0e, 1o, 2e, ...`` up to
``l_max`` (parity of the spherical harmonics).
"""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn

from course_lib.models.radial import bessel_basis, polynomial_envelope
from course_lib.neighbors import radius_graph

__all__ = ["TensorFieldNetwork"]


def _hidden_irreps(hidden: int, l_max: int) -> o3.Irreps:
    """``hidden`` copies of each irrep of the spherical harmonics up to ``l_max``: 0e + 1o + 2e + ..."""
    return o3.Irreps([(hidden, (l, (-1) ** l)) for l in range(l_max + 1)])


class TFNLayer(nn.Module):
    """``m_i = sum_j TP(h_j, Y(r_ij); W(|r_ij|)) / sqrt(avg_neighbors)``, then a gate: ``[N, irreps_in.dim]`` ->
    ``[N, gate.irreps_out.dim]``."""

    def __init__(self, irreps_in, irreps_sh, irreps_hidden, num_basis: int, cutoff: float, avg_neighbors: float):
        super().__init__()
        scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l > 0])
        self.gate = Gate(scalars, [torch.nn.functional.silu], o3.Irreps(f"{gated.num_irreps}x0e"),
                         [torch.sigmoid], gated)
        self.tp = o3.FullyConnectedTensorProduct(irreps_in, irreps_sh, self.gate.irreps_in,
                                                 shared_weights=False, internal_weights=False)
        self.radial = FullyConnectedNet([num_basis, 16, self.tp.weight_numel], torch.nn.functional.silu)
        self.num_basis, self.cutoff, self.norm = num_basis, cutoff, avg_neighbors ** -0.5
        self.irreps_out = self.gate.irreps_out

    def forward(self, h, sh, edge_index, edge_len):
        """h [N, irreps_in.dim], sh [E, irreps_sh.dim], edge_index [2, E] (j -> i), edge_len [E] -> [N, out.dim]."""
        src, dst = edge_index
        envelope = polynomial_envelope(edge_len, self.cutoff)[:, None]
        basis = bessel_basis(edge_len, self.cutoff, self.num_basis) * envelope  # [E, num_basis], 0 at the cutoff
        messages = self.tp(h[src], sh, self.radial(basis))  # [E, gate.irreps_in.dim]
        m = torch.zeros(h.shape[0], messages.shape[1], dtype=messages.dtype, device=messages.device)
        return self.gate(m.index_add(0, dst, messages) * self.norm)


class TensorFieldNetwork(nn.Module):
    """Point cloud ``data.pos [N, 3]`` with scalar node inputs ``data.<node_input> [N]`` -> one vector per
    node ``[N, 3]`` (``1o``). ``hidden``: copies of each irrep; ``l_max``: highest degree of the features and of
    the spherical harmonics; ``cutoff``: neighbour radius; ``num_basis``: Bessel functions of the edge length."""

    def __init__(self, hidden: int = 8, num_layers: int = 2, l_max: int = 1, cutoff: float = 5.0,
                 num_basis: int = 8, node_input: str = "charge", avg_neighbors: float = 4.0):
        super().__init__()
        self.config = dict(hidden=hidden, num_layers=num_layers, l_max=l_max, cutoff=cutoff, num_basis=num_basis,
                           node_input=node_input, avg_neighbors=avg_neighbors)
        self.cutoff, self.node_input = cutoff, node_input
        self.irreps_sh = o3.Irreps.spherical_harmonics(l_max)
        irreps, layers = o3.Irreps("1x0e"), []
        for _ in range(num_layers):
            layers.append(TFNLayer(irreps, self.irreps_sh, _hidden_irreps(hidden, l_max), num_basis, cutoff,
                                   avg_neighbors))
            irreps = layers[-1].irreps_out
        self.layers = nn.ModuleList(layers)
        self.readout = o3.Linear(irreps, "1x1o")

    def forward(self, data) -> torch.Tensor:
        """``data`` (a PyG Data/Batch) -> vectors ``[N, 3]``."""
        pos = data.pos
        edge_index, edge_vec = radius_graph(pos, self.cutoff, batch=getattr(data, "batch", None))
        sh = o3.spherical_harmonics(self.irreps_sh, edge_vec, normalize=True, normalization="component")
        h = getattr(data, self.node_input).reshape(-1, 1).to(pos.dtype)
        edge_len = edge_vec.norm(dim=-1)
        for layer in self.layers:
            h = layer(h, sh, edge_index, edge_len)
        return self.readout(h)
