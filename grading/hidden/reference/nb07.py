"""Reference solutions of notebook 07 and the outputs of the known mistakes the checkers diagnose.

Instructor material: not part of the installed package. ``compute(exercise_id, variant, *inputs)`` is
what the checkers of :mod:`course_lib.teaching.exercises.nb07` ask for (their ``expected`` argument);
``make_expected.py`` stores its answers on the public cases, the hidden tests pass it directly. The correct
outputs of 07.convolution and 07.gate are those of the library (``ConvolutionBlock``, e3nn's ``Gate`` inside
``GateNonlinearity``); the reference solutions below are checked against them.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from course_lib.graph import scatter_sum
from course_lib.models.radial import bessel_basis, cosine_cutoff, polynomial_envelope

__all__ = ["radial_basis", "convolution", "gate", "NequIPVariant", "compute", "SOLUTIONS"]


def radial_basis(r: torch.Tensor, cutoff: float, num_basis: int = 8, p: int = 6) -> torch.Tensor:
    """Reference solution of 07.radial_basis: r [E] (> 0) -> [E, num_basis], Bessel basis x envelope."""
    return bessel_basis(r, cutoff, num_basis) * polynomial_envelope(r, cutoff, p)[:, None]


def convolution(x, pos, edge_index, tp, radial, rbf, avg_num_neighbors: float) -> torch.Tensor:
    """Reference solution of 07.convolution: x [N, tp.irreps_in1.dim], pos [N, 3], edge_index [2, E]
    (row 0: neighbour j, row 1: centre i) -> m [N, tp.irreps_out.dim]."""
    from e3nn import o3

    j, i = edge_index
    r_ij = pos[j] - pos[i]                                                     # [E, 3], centre -> neighbour
    Y = o3.spherical_harmonics(tp.irreps_in2, r_ij, normalize=True, normalization="component")
    w = radial(rbf(r_ij.norm(dim=-1)))                                         # [E, tp.weight_numel]
    messages = tp(x[j], Y, w)                                                  # [E, tp.irreps_out.dim]
    return scatter_sum(messages, i, x.shape[0]) / math.sqrt(avg_num_neighbors)


def gate(scalars, gates, gated, irreps_scalars, irreps_gated) -> torch.Tensor:
    """Reference solution of 07.gate: scalars [N, irreps_scalars.dim], gates [N, irreps_gated.num_irreps],
    gated [N, irreps_gated.dim] -> [N, irreps_scalars.dim + irreps_gated.dim]."""
    from e3nn import o3

    silu, tanh, sigmoid = _normalised("silu"), _normalised("tanh"), _normalised("sigmoid")
    irreps_scalars, irreps_gated = o3.Irreps(irreps_scalars), o3.Irreps(irreps_gated)
    out = []
    for (_, ir), sl in zip(irreps_scalars, irreps_scalars.slices()):
        out.append(silu(scalars[:, sl]) if ir.p == 1 else tanh(scalars[:, sl]))  # odd scalars need an odd act
    g = sigmoid(gates)
    k = 0
    for (mul, ir), sl in zip(irreps_gated, irreps_gated.slices()):
        block = gated[:, sl].reshape(-1, mul, ir.dim)                           # [N, mul, 2l + 1]
        out.append((g[:, k:k + mul, None] * block).reshape(-1, mul * ir.dim))  # one gate per channel
        k += mul
    return torch.cat(out, dim=-1)


#: the object a correct submission defines, per exercise (the tests and make_expected.py use it)
class NequIPVariant(torch.nn.Module):
    """Reference solution of the design exercise 07.nequip_variant: NequIP's blocks with a small radial MLP (one
    hidden layer of 16), SiLU gates, 8 channels per irrep, l_max = 1, two blocks, cutoff 4 A (about 3,100
    parameters). Checked by its properties only."""

    def __init__(self, hidden: int = 8, num_layers: int = 2, cutoff: float = 4.0, num_basis: int = 8):
        from e3nn import o3

        from course_lib.models.nequip import InteractionBlock, SphericalHarmonicEdgeAttrs, default_hidden_irreps
        from course_lib.models.radial import BesselRBF

        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("species", torch.tensor([1, 6, 8]))
        self.embedding = o3.Linear("3x0e", f"{hidden}x0e")
        self.radial = BesselRBF(num_basis, cutoff)  # Bessel basis x polynomial envelope: zero at the cutoff
        self.sh = SphericalHarmonicEdgeAttrs(1)
        irreps, blocks = o3.Irreps(f"{hidden}x0e"), []
        for _ in range(num_layers):
            blocks.append(InteractionBlock(irreps, default_hidden_irreps(hidden, 1), self.sh.irreps_out, "3x0e",
                                           num_basis, radial_hidden=(16,), gate="silu"))
            irreps = blocks[-1].irreps_out
        self.blocks = torch.nn.ModuleList(blocks)
        self.readout = o3.Linear(irreps, "1x0e")

    def forward(self, batch):
        from course_lib.neighbors import radius_graph

        a = (batch.z[:, None] == self.species).to(batch.pos.dtype)  # [N, 3] one-hot species
        h = self.embedding(a)
        edge_index, vec = radius_graph(batch.pos, self.cutoff, batch=batch.batch)
        sh, rbf = self.sh(vec), self.radial(vec.norm(dim=-1))
        for block in self.blocks:
            h = block(h, a, sh, rbf, edge_index)
        e = self.readout(h).squeeze(-1)
        return torch.zeros(int(batch.batch.max()) + 1, dtype=e.dtype).index_add(0, batch.batch, e)


SOLUTIONS = {
    "07.radial_basis": radial_basis,
    "07.convolution": convolution,
    "07.gate": gate,
    "07.nequip_variant": NequIPVariant,
}


@functools.cache
def _normalised(name: str):
    """e3nn's ``normalize2mom`` of an activation (its constant is estimated once from 10^6 samples)."""
    from e3nn.math import normalize2mom

    return normalize2mom({"silu": F.silu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[name])


# ------------------------------------------------------------------------- 07.radial_basis


def _envelope_without_cutoff(r, cutoff, p):
    x = r / cutoff
    return 1.0 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)


def _radial(variant, r, cutoff, num_basis, p):
    n1 = torch.arange(1, num_basis + 1, dtype=r.dtype)
    n0 = torch.arange(0, num_basis, dtype=r.dtype)
    env = polynomial_envelope(r, cutoff, p)[:, None]
    bessel = bessel_basis(r, cutoff, num_basis)
    x = r[:, None]
    return {
        "values": lambda: radial_basis(r, cutoff, num_basis, p),
        "no envelope": lambda: bessel,
        "envelope beyond cutoff": lambda: bessel * _envelope_without_cutoff(r, cutoff, p)[:, None],
        "cosine cutoff": lambda: bessel * cosine_cutoff(r, cutoff)[:, None],
        "p = 6": lambda: bessel * polynomial_envelope(r, cutoff, 6)[:, None],
        "n from 0": lambda: (2.0 / cutoff) * torch.sin(n0 * math.pi * x / cutoff) / x * env,
        "no 2/r_c": lambda: torch.sin(n1 * math.pi * x / cutoff) / x * env,
        "no 1/r": lambda: (2.0 / cutoff) * torch.sin(n1 * math.pi * x / cutoff) * env,
        "no /r_c in sine": lambda: (2.0 / cutoff) * torch.sin(n1 * math.pi * x) / x * env,
        "no pi": lambda: (2.0 / cutoff) * torch.sin(n1 * x / cutoff) / x * env,
    }[variant]()


# ------------------------------------------------------------------------- 07.convolution

#: mistake -> the change to the convolution that makes it
_CONV_VARIANTS = {
    "roles": {"roles": "ij"}, "src_i": {"src": "i"}, "vec": {"vec": -1.0}, "mean": {"norm": "mean"},
    "avg": {"norm": "avg"}, "none": {"norm": "none"}, "sqrt_deg": {"norm": "sqrt_deg"},
    "unnormalised_sh": {"sh_norm": False}, "integral": {"sh_normalization": "integral"},
    "norm_sh": {"sh_normalization": "norm"},
}


def _conv_variant(conv, rbf, x, pos, edge_index, avg, src="j", vec=1.0, norm="sqrt", sh_norm=True,
                  sh_normalization="component", roles="ji"):
    """The convolution with one deliberate change (a known mistake)."""
    from e3nn import o3

    j, i = edge_index if roles == "ji" else edge_index.flip(0)
    r = vec * (pos[j] - pos[i])
    Y = o3.spherical_harmonics(conv.tp.irreps_in2, r, normalize=sh_norm, normalization=sh_normalization)
    w = conv.radial(rbf(r.norm(dim=-1)))
    m = scatter_sum(conv.tp((x[j] if src == "j" else x[i]), Y, w), i, x.shape[0])
    deg = torch.bincount(i, minlength=x.shape[0]).clamp_min(1).to(m.dtype)[:, None]
    return {"sqrt": m / math.sqrt(avg), "avg": m / avg, "none": m, "mean": m / deg, "sqrt_deg": m / deg.sqrt()}[norm]


def _convolution(variant, conv, rbf, x, pos, edge_index, avg):
    from e3nn import o3

    with torch.no_grad():
        if variant == "values":  # the library's block (its fused tensor product)
            j, i = edge_index
            Y = o3.spherical_harmonics(conv.tp.irreps_in2, pos[j] - pos[i], normalize=True, normalization="component")
            return conv(x, Y, rbf((pos[j] - pos[i]).norm(dim=-1)), edge_index)
        return _conv_variant(conv, rbf, x, pos, edge_index, avg, **_CONV_VARIANTS[variant])


# ------------------------------------------------------------------------- 07.gate


def _gate_variant(scalars, gates, gated, irreps_scalars, irreps_gated, scalar_act="ok", gate_act="sigmoid",
                  normalise=True, expand="interleave", gated_act=None):
    acts = {k: (_normalised(k) if normalise else f) for k, f in
            (("silu", F.silu), ("tanh", torch.tanh), ("sigmoid", torch.sigmoid))}
    acts["none"] = lambda s: s
    out = []
    for (_, ir), sl in zip(irreps_scalars, irreps_scalars.slices()):
        a = {"ok": "silu" if ir.p == 1 else "tanh", "silu": "silu", "none": "none"}[scalar_act]
        out.append(acts[a](scalars[:, sl]))
    g = acts[gate_act](gates)
    if gated_act is not None:  # an activation on the components of the l > 0 features (not equivariant)
        out.append(acts[gated_act](gated))
        return torch.cat(out, dim=-1)
    if expand == "interleave":
        reps = torch.cat([torch.full((mul,), ir.dim) for mul, ir in irreps_gated])
        out.append(torch.repeat_interleave(g, reps, dim=1) * gated)
    else:  # the gates of a block tiled instead of repeated per channel
        k, blocks = 0, []
        for (mul, ir), sl in zip(irreps_gated, irreps_gated.slices()):
            blocks.append(g[:, k:k + mul].repeat(1, ir.dim) * gated[:, sl])
            k += mul
        out.append(torch.cat(blocks, dim=-1))
    return torch.cat(out, dim=-1)


_GATE_VARIANTS = {
    "not normalised": {"normalise": False}, "silu on odd scalars": {"scalar_act": "silu"},
    "scalars unchanged": {"scalar_act": "none"}, "silu gates": {"gate_act": "silu"},
    "no gate activation": {"gate_act": "none"}, "tiled gates": {"expand": "tile"},
    **{f"{a} on gated{'' if nrm else ', not normalised'}": {"gated_act": a, "normalise": nrm}
       for a in ("silu", "sigmoid", "tanh") for nrm in (True, False)},
}


def _gate(variant, ref_gate, scalars, gates, gated):
    with torch.no_grad():
        if variant == "values":  # e3nn's Gate, as used by GateNonlinearity
            return torch.cat([ref_gate.act_scalars(scalars), ref_gate.mul(gated, ref_gate.act_gates(gates))], dim=-1)
        return _gate_variant(scalars, gates, gated, ref_gate.irreps_scalars, ref_gate.irreps_gated,
                             **_GATE_VARIANTS[variant])


def compute(exercise_id: str, variant: str, *inputs):
    """The expected output of ``variant`` ("values": the correct one; else a named mistake) on ``inputs``."""
    if exercise_id == "07.radial_basis":
        return _radial(variant, *inputs)
    if exercise_id == "07.convolution":
        return _convolution(variant, *inputs)
    if exercise_id == "07.gate":
        return _gate(variant, *inputs)
    raise KeyError(exercise_id)
