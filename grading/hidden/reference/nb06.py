"""Reference solutions of notebook 06 and the outputs of the known mistakes the checkers diagnose.

Instructor material: not part of the installed package. ``compute(exercise_id, variant, *inputs)`` is
what the checkers of :mod:`course_lib.teaching.exercises.nb06` ask for (their ``expected`` argument);
``make_expected.py`` stores its answers on the public cases, the hidden tests pass it directly. The
correct outputs of 06.wigner_d_from_harmonics and 06.cross_product_from_cg come from the library
(``course_lib.irreps.wigner_D``, ``torch.linalg.cross``), so nothing of them is stored.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import nn

from course_lib.models.radial import GaussianRBF

__all__ = ["wigner_d_from_harmonics", "cross_product_from_cg", "norm_activation", "uvu_instructions",
           "RadialTensorProduct", "quadrupole_layer", "SOLUTIONS", "compute"]


def wigner_d_from_harmonics(l: int, R: torch.Tensor) -> torch.Tensor:
    """The ``[2l+1, 2l+1]`` matrix ``D`` with ``Y^l(R x) = D Y^l(x)`` for all ``x``, for ``R [3, 3]`` in O(3).

    Fitted by least squares from the real spherical harmonics at ``4l + 4`` random points (at least
    ``2l + 1`` are needed): with ``Y [P, 2l+1]`` the harmonics at the points and ``Y_R [P, 2l+1]`` at
    the rotated points, ``Y_R = Y D^T``. For ``det R = -1`` the fit includes the parity ``(-1)^l``.
    """
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4 * l + 4, 3, generator=g, dtype=torch.float64).to(R.dtype)
    Y = o3.spherical_harmonics(l, x, normalize=True)  # [P, 2l+1]
    Y_R = o3.spherical_harmonics(l, x @ R.T, normalize=True)  # [P, 2l+1], row p = Y(R x_p)
    return torch.linalg.lstsq(Y, Y_R).solution.T


def cross_product_from_cg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a x b`` for ``a, b [..., 3]`` from the l = 1 part of ``1 (x) 1``: ``sqrt(6) C[i, j, k] a_i b_j``.

    ``C = o3.wigner_3j(1, 1, 1)`` is the Levi-Civita symbol divided by its Frobenius norm ``sqrt(6)``.
    """
    C = o3.wigner_3j(1, 1, 1, dtype=a.dtype, device=a.device)  # [3, 3, 3]
    return math.sqrt(6.0) * torch.einsum("ijk,...i,...j->...k", C, a, b)


def norm_activation(x: torch.Tensor, irreps) -> torch.Tensor:
    """Scale every copy ``x_u`` of every irrep by ``sigmoid(|x_u|)``: ``[N, irreps.dim] -> [N, irreps.dim]``.

    e3nn stores a block ``mul x ir`` as ``mul`` consecutive copies of ``2l+1`` components, so the
    block reshapes to ``[N, mul, 2l+1]``. Equal to ``e3nn.nn.NormActivation(irreps, silu)``, which
    computes ``f(|x_u|) x_u / |x_u|`` (``silu(n) / n = sigmoid(n)``).
    """
    irreps = o3.Irreps(irreps)
    out = []
    for (mul, ir), sl in zip(irreps, irreps.slices()):
        block = x[..., sl].reshape(*x.shape[:-1], mul, ir.dim)  # [N, mul, 2l+1]
        gate = torch.sigmoid(block.norm(dim=-1, keepdim=True))  # [N, mul, 1], invariant
        out.append((gate * block).reshape(*x.shape[:-1], mul * ir.dim))
    return torch.cat(out, dim=-1)


def uvu_instructions(irreps_in1, irreps_in2, irreps_out) -> list[tuple[int, int, int, str, bool]]:
    """Every "uvu" path ``(i1, i2, i_out, "uvu", True)`` the selection rules allow.

    A path needs ``ir_out`` in ``ir1 x ir2`` (``|l1 - l2| <= l_out <= l1 + l2`` and ``p_out = p1 p2``)
    and, for "uvu" (output channel u = input channel u), the same multiplicity in and out.
    """
    irreps_in1, irreps_in2, irreps_out = o3.Irreps(irreps_in1), o3.Irreps(irreps_in2), o3.Irreps(irreps_out)
    instructions = []
    for i1, (mul1, ir1) in enumerate(irreps_in1):
        for i2, (_, ir2) in enumerate(irreps_in2):
            for i_out, (mul_out, ir_out) in enumerate(irreps_out):
                if ir_out in ir1 * ir2 and mul_out == mul1:
                    instructions.append((i1, i2, i_out, "uvu", True))
    return instructions


class RadialTensorProduct(nn.Module):
    """Edge messages ``m_e = TP(h_e, Y(r_e / |r_e|); w(|r_e|))``: a "uvu" tensor product with per-edge weights.

    ``h [E, irreps_in.dim]`` (the features of each edge's source node), ``edge_vec [E, 3]``. The
    weights ``[E, tp.weight_numel]`` come from a radial MLP of Gaussian features of the edge length:
    they are invariant, so every edge applies an equivariant bilinear map. Returns ``[E, irreps_out.dim]``.
    """

    def __init__(self, irreps_in, irreps_sh, irreps_out, num_basis: int = 8, cutoff: float = 3.0, hidden: int = 16):
        super().__init__()
        self.irreps_in, self.irreps_sh = o3.Irreps(irreps_in), o3.Irreps(irreps_sh)
        self.irreps_out = o3.Irreps(irreps_out)
        self.rbf = GaussianRBF(num_basis, cutoff)  # |r| [E] -> [E, num_basis]
        instructions = uvu_instructions(self.irreps_in, self.irreps_sh, self.irreps_out)
        self.tp = o3.TensorProduct(self.irreps_in, self.irreps_sh, self.irreps_out, instructions,
                                   shared_weights=False, internal_weights=False)
        self.radial = FullyConnectedNet([num_basis, hidden, self.tp.weight_numel], torch.nn.functional.silu)

    def forward(self, h: torch.Tensor, edge_vec: torch.Tensor) -> torch.Tensor:
        sh = o3.spherical_harmonics(self.irreps_sh, edge_vec, normalize=True, normalization="component")
        weights = self.radial(self.rbf(edge_vec.norm(dim=-1)))  # [E, tp.weight_numel]
        return self.tp(h, sh, weights)


def _blockwise(x: torch.Tensor, irreps, fn) -> torch.Tensor:
    """Apply ``fn(block [N, mul, 2l+1], mul, ir)`` to each block (e3nn layout) and concatenate."""
    out = []
    for (mul, ir), sl in zip(irreps, irreps.slices()):
        block = x[..., sl].reshape(*x.shape[:-1], mul, ir.dim)
        out.append(fn(block, mul, ir).reshape(*x.shape[:-1], mul * ir.dim))
    return torch.cat(out, dim=-1)


def _norm_variant(variant: str, x: torch.Tensor, irreps) -> torch.Tensor:
    """The correct output of 06.norm_activation ("values") or that of a named mistake."""
    irreps = o3.Irreps(irreps)
    sig = torch.sigmoid

    def transposed(block, mul, ir):  # copies read as [2l+1, mul] instead of [mul, 2l+1]
        t = block.reshape(*block.shape[:-2], ir.dim, mul)
        return (sig(t.norm(dim=-2, keepdim=True)) * t).reshape(block.shape)

    def gate(b):
        return sig(b.norm(dim=-1, keepdim=True)) * b

    variants = {
        "values": lambda: norm_activation(x, irreps),
        "componentwise abs": lambda: x * sig(x.abs()),
        "componentwise x": lambda: x * sig(x),
        "transposed layout": lambda: _blockwise(x, irreps, transposed),
        "one norm per block": lambda: _blockwise(
            x, irreps, lambda b, m, ir: sig(b.norm(dim=(-2, -1), keepdim=True)) * b),
        "one norm per node": lambda: sig(x.norm(dim=-1, keepdim=True)) * x,
        "divided by the norm": lambda: _blockwise(
            x, irreps, lambda b, m, ir: gate(b) / b.norm(dim=-1, keepdim=True).clamp(min=1e-12)),
        "scalars unchanged": lambda: _blockwise(x, irreps, lambda b, m, ir: b if ir.l == 0 else gate(b)),
    }
    return variants[variant]()


def quadrupole_layer(pos: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """Reference solution of the design exercise 06.quadrupole_layer: ``[N, 5]``, the sum over the bonds of an atom
    of ``exp(-r) Y^2(r_hat)`` (degree-2 spherical harmonics of the bond vector ``r = r_j - r_i``). A product of two
    polar vectors, so even (``2e``); any other radial weight works as well. Checked by its properties only."""
    j, i = edge_index
    vec = pos[j] - pos[i]
    y2 = o3.spherical_harmonics(2, vec, normalize=True, normalization="component")
    weight = torch.exp(-vec.norm(dim=-1, keepdim=True))
    return torch.zeros(pos.shape[0], 5, dtype=pos.dtype).index_add(0, i, weight * y2)


#: the object a correct submission defines, per exercise (the tests and make_expected.py use it)
SOLUTIONS = {
    "06.wigner_d_from_harmonics": wigner_d_from_harmonics,
    "06.cross_product_from_cg": cross_product_from_cg,
    "06.norm_activation": norm_activation,
    "06.radial_tensor_product": RadialTensorProduct,
    "06.quadrupole_layer": quadrupole_layer,
}


def compute(exercise_id: str, variant: str, *inputs):
    """The expected output of ``variant`` ("values": the correct one; else a named mistake) on ``inputs``.

    - ``06.norm_activation``: ``(x [N, irreps.dim], irreps as a string)`` -> ``[N, irreps.dim]``;
    - ``06.radial_tensor_product``, variant ``"paths"``: ``(irreps_in, irreps_sh, irreps_out)`` as strings ->
      the allowed "uvu" paths ``[P, 3]`` (rows ``i1, i2, i_out``).
    """
    if exercise_id == "06.norm_activation":
        return _norm_variant(variant, *inputs)
    if exercise_id == "06.radial_tensor_product" and variant == "paths":
        paths = [ins[:3] for ins in uvu_instructions(*inputs)]
        return torch.tensor(paths, dtype=torch.int64).reshape(-1, 3)
    raise KeyError(f"{exercise_id} ({variant})")
