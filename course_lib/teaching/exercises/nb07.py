"""Checkers of notebook 07: NequIP from its parts.

Exercises:

- ``07.radial_basis``: the Bessel basis B_n(r) = (2 / r_c) sin(n pi r / r_c) / r times the polynomial
  envelope u(r / r_c) with p = 6 (compared with :mod:`course_lib.models.radial`).
- ``07.convolution``: the tensor-product convolution
  m_i = 1/sqrt(avg_num_neighbors) sum_j TP(x_j, Y(r_ij); R(B(|r_ij|))) with r_ij = r_j - r_i, written with
  an e3nn ``o3.TensorProduct(..., shared_weights=False)`` and a radial MLP (compared with
  :class:`course_lib.models.nequip.ConvolutionBlock`, and checked for O(3) equivariance with Wigner-D
  matrices of the irreps).
- ``07.gate``: the gated nonlinearity: SiLU on even scalars, tanh on odd scalars, sigmoid gates on the
  l > 0 channels, each activation rescaled to unit second moment (compared with the e3nn ``Gate`` inside
  :class:`course_lib.models.nequip.GateNonlinearity`).
- ``07.nequip_variant``: a design exercise: a class whose instances (built with no arguments) are energy models
  ``model(batch) -> [num_graphs]`` for molecules of H, C and O, with a ``cutoff`` attribute, assembled by the
  student (not the library's ``NequIP``). Required: invariance of the energy under rotations, reflections,
  translations and permutations, forces = -dE/dr that agree with finite differences, and a smooth cutoff (the
  energy and the force go continuously to their values without the neighbour). Bars: at most
  :data:`VARIANT_MAX_PARAMETERS` parameters, and the energy must tell apart two bent triatomics with the same
  bond lengths (it must see angles). No expected output.

No reference solution is here: the expected outputs (of the correct solution and of the known mistakes)
come from the checker's ``expected`` provider (:mod:`course_lib.teaching.exercises.stored`).
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F

from course_lib import irreps as _irreps
from course_lib.teaching.checks import exercise
from course_lib.teaching.exercises.common import (
    call_student,
    close,
    expect_tensor,
    random_rotation_and_reflection,
    rng,
    shape_of,
    type_name,
)
from course_lib.teaching.exercises.stored import provider

__all__ = ["check_radial_basis", "check_convolution", "check_gate", "check_nequip_variant", "irreps_equivariance_error",
           "VARIANT_MAX_PARAMETERS"]


# ------------------------------------------------------------------------- helpers


@functools.cache
def _normalised(name: str):
    """e3nn's ``normalize2mom`` of an activation (its constant is estimated once from 10^6 samples)."""
    from e3nn.math import normalize2mom

    return normalize2mom({"silu": F.silu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[name])


def _diagnose(out, want, exercise_id: str, inputs: tuple, mistakes: dict, default: str, **tol) -> str:
    """The text of the first known mistake whose output ``out`` matches, else ``default`` (every mistake's
    output is asked for, so that the stored file holds them all)."""
    outputs = {name: want(exercise_id, name, *inputs) for name in mistakes}
    return next((mistakes[name] for name, v in outputs.items() if close(out, v, **tol)), default)


@contextlib.contextmanager
def _default_dtype(dtype):
    """e3nn builds Clebsch-Gordan buffers and Wigner-D generators in the default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def irreps_equivariance_error(fn, inputs, irreps_in, irreps_out, R) -> float:
    """:func:`course_lib.irreps.irreps_equivariance_error`, with ``"xyz"`` accepted for Cartesian positions
    and vectors (the irreps ``1o``: e3nn orders its components as (x, y, z), so ``D(R) = R``) and ``None``
    for inputs that do not transform (edge indices)."""
    irreps_in = tuple("1o" if isinstance(ir, str) and ir == "xyz" else ir for ir in irreps_in)
    with torch.no_grad():
        return _irreps.irreps_equivariance_error(fn, tuple(inputs), irreps_in, irreps_out, R)


def _transforms(seed: int) -> dict[str, torch.Tensor]:
    rotation, reflection = random_rotation_and_reflection(seed, seed + 1)
    return {"rotation": rotation, "reflection": reflection}


# ------------------------------------------------------------------------- 07.radial_basis


_RADIAL_MISTAKES = {
    "no envelope": "the polynomial envelope is missing: multiply every B_n(r) by u(r / r_c) (zero beyond r_c), so "
                   "the basis goes smoothly to zero at the cutoff",
    "envelope beyond cutoff": "beyond the cutoff the envelope must be 0 (the polynomial u(x) does not stay 0 for "
                              "x > 1: use torch.where(x < 1, u, 0))",
    "cosine cutoff": "this is SchNet's cosine cutoff; NequIP uses the polynomial envelope u(x) = 1 - (p+1)(p+2)/2 x^p "
                     "+ p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)",
    "p = 6": "use the exponent p that is passed in (this call has p = {p}); you used p = 6",
    "n from 0": "n runs from 1 to num_basis (n = 0 gives sin(0) = 0, a useless basis function)",
    "no 2/r_c": "the prefactor 2 / r_c is missing: B_n(r) = (2 / r_c) sin(n pi r / r_c) / r",
    "no 1/r": "divide by r: B_n(r) = (2 / r_c) sin(n pi r / r_c) / r (the spherical Bessel function j_0)",
    "no /r_c in sine": "the argument of the sine is n pi r / r_c: divide by the cutoff inside the sine",
    "no pi": "the argument of the sine is n pi r / r_c: the factor pi is missing",
}


@exercise("07.radial_basis", "Bessel radial basis times the polynomial envelope")
def check_radial_basis(fn, fb, seed: int = 0, n: int = 60, cutoff: float = 4.0, num_basis: int = 8, p: int = 6,
                       expected=None):
    g = torch.Generator().manual_seed(seed)
    r = 0.05 + torch.rand(n, generator=g, dtype=torch.float64) * (1.3 * cutoff)   # some beyond the cutoff
    r[:3] = torch.tensor([0.5 * cutoff, cutoff, 1.2 * cutoff], dtype=torch.float64)
    r_in = r.clone()
    out = fn(r_in, cutoff, num_basis, p)
    expect_tensor(fb, out)
    if out.shape == (num_basis, n) and n != num_basis:
        fb.expect(False, f"the output has shape {shape_of(out)}, the transpose of the expected {(n, num_basis)}: one "
                  "row per distance, one column per Bessel function (use r[:, None] against n[None, :])", fatal=True)
    fb.expect(out.shape == (n, num_basis), f"the output has shape {shape_of(out)}; expected {(n, num_basis)}: one row "
              "per distance r, one column per n = 1..num_basis", fatal=True)
    fb.expect(torch.equal(r_in, r), "your function modified its input r in place; work on new tensors")
    want = provider(expected)
    inputs = (r, cutoff, num_basis, p)
    mistakes = {k: m.format(p=p) for k, m in _RADIAL_MISTAKES.items() if k != "p = 6" or p != 6}
    msg = _diagnose(out, want, "07.radial_basis", inputs, mistakes,
                    "the values differ from (2 / r_c) sin(n pi r / r_c) / r * u(r / r_c), n = 1..num_basis",
                    atol=1e-9, rtol=1e-7)
    fb.expect(close(out, want("07.radial_basis", "values", *inputs), atol=1e-9, rtol=1e-7), msg,
              ok="matches the reference", values=True)
    beyond = r >= cutoff
    fb.expect(bool((out[beyond].abs() < 1e-12).all()),
              "distances at or beyond the cutoff must give exactly 0 (the atom is not a neighbour)")
    # smoothness at the cutoff: value and first two derivatives -> 0 as r -> r_c from below
    rc = torch.tensor([cutoff * (1 - 1e-5)], dtype=torch.float64, requires_grad=True)
    val = fn(rc, cutoff, num_basis, p)
    ok_grad = isinstance(val, torch.Tensor) and val.requires_grad
    fb.expect(ok_grad, "the output is detached from r (no gradient): forces are derivatives through this basis; avoid "
              ".detach(), numpy and torch.tensor(...) on intermediate results", fatal=True)
    (d1,) = torch.autograd.grad(val.sum(), rc)
    size = float(val.detach().abs().max())
    fb.expect(size < 1e-6 and abs(float(d1)) < 1e-3,
              f"just below the cutoff the basis and its derivative must vanish (got |B| = {size:.1e}, "
              f"|dB/dr| = {abs(float(d1)):.1e}): forces must not jump when a neighbour leaves")
    out32 = fn(r.float(), cutoff, num_basis, p)
    fb.expect(isinstance(out32, torch.Tensor) and out32.dtype == torch.float32,
              "float32 input: keep the dtype of r (create n with dtype=r.dtype, no .double() inside)")


# ------------------------------------------------------------------------- 07.convolution


def _conv_setup(seed: int, l_max: int, mul: int, n_atoms: int, r_max: float, dtype=torch.float64):
    """A ConvolutionBlock (the reference), its radial basis and an asymmetric graph with an isolated atom."""
    from e3nn import o3

    from course_lib.models.nequip import ConvolutionBlock, default_hidden_irreps
    from course_lib.models.radial import BesselRBF
    from course_lib.neighbors import radius_graph

    with torch.random.fork_rng(), _default_dtype(dtype):  # the weights of the radial MLP come from the seed
        torch.manual_seed(seed)
        irreps_in = default_hidden_irreps(mul, l_max)
        irreps_sh = o3.Irreps.spherical_harmonics(l_max)
        keep = o3.Irreps([(1, (l, p)) for l in range(l_max + 1) for p in (1, -1)])
        conv = ConvolutionBlock(irreps_in, irreps_sh, keep, num_basis=8, radial_hidden=(16,)).to(dtype)
    avg = 2.5 + seed % 3
    conv.avg_num_neighbors.fill_(avg)
    rbf = BesselRBF(8, r_max, trainable=False)
    g = torch.Generator().manual_seed(1000 + seed)
    pos = torch.rand(n_atoms, 3, generator=g, dtype=torch.float64) * 3.0
    pos[-1] += 20.0                                        # an isolated atom: no neighbours
    edge_index, _ = radius_graph(pos, r_max)
    keep_edges = torch.rand(edge_index.shape[1], generator=g) < 0.75   # directed: j -> i without i -> j
    keep_edges[:2] = True
    edge_index = edge_index[:, keep_edges]
    x = torch.randn(n_atoms, irreps_in.dim, generator=g, dtype=torch.float64)
    return conv, rbf, pos.to(dtype), x.to(dtype), edge_index, avg


#: mistake -> its message, tried in this order
_CONV_MISTAKES = {
    "roles": "edge_index[0] is the neighbour j and edge_index[1] the centre i: the message of edge e "
        "goes to i = edge_index[1, e] and carries x_j (you swapped the two rows)",
    "src_i": "the message of edge (j -> i) carries the NEIGHBOUR's features x_j, not the centre's own "
        "x_i",
    "vec": "the edge vector is r_ij = pos[j] - pos[i] (from the centre i to the neighbour j); yours "
        "points the other way, which flips the sign of every odd-l spherical harmonic",
    "mean": "you averaged over the actual neighbours; NequIP sums and divides by the constant "
        "sqrt(avg_num_neighbors) (a division by the actual count would jump when a neighbour crosses the cutoff)",
    "avg": "divide by the SQUARE ROOT of avg_num_neighbors (a sum of n terms of size 1 has size ~ "
        "sqrt(n))",
    "none": "the normalisation is missing: divide the sum over neighbours by "
        "sqrt(avg_num_neighbors)",
    "sqrt_deg": "divide by the constant sqrt(avg_num_neighbors), not by the square root of each "
        "atom's own neighbour count (that would make the energy jump when a neighbour crosses the cutoff)",
    "unnormalised_sh": "the spherical harmonics take the DIRECTION only: normalize=True "
        "(otherwise Y^l scales with |r|^l)",
    "integral": "use normalization='component' for the spherical harmonics "
        "(sum_m Y_m^2 = 2l + 1), as ConvolutionBlock does",
    "norm_sh": "use normalization='component' for the spherical harmonics "
        "(sum_m Y_m^2 = 2l + 1), as ConvolutionBlock does",
}


def _check_convolution_values(fb, out, want, conv, rbf, x, pos, edge_index, avg) -> None:
    """The output against ConvolutionBlock; when it differs, the message of the first known mistake that matches."""
    inputs = (conv, rbf, x, pos, edge_index, avg)
    msg = _diagnose(out, want, "07.convolution", inputs, _CONV_MISTAKES,
                    "the output differs from m_i = 1/sqrt(avg_num_neighbors) sum_j tp(x_j, Y(r_ij), "
                    "radial(rbf(|r_ij|))) with r_ij = pos[j] - pos[i]", atol=1e-10, rtol=1e-7)
    fb.expect(close(out, want("07.convolution", "values", *inputs), atol=1e-10, rtol=1e-7), msg,
              ok="matches course_lib.models.nequip.ConvolutionBlock", values=True)


def _check_convolution_symmetries(fn, fb, out, conv, rbf, x, pos, edge_index, avg, seed: int) -> None:
    """O(3) equivariance, translation invariance and independence of the edge order."""
    tp, radial = conv.tp, conv.radial
    # O(3): rotate the positions and the input features together; the output rotates with D_out
    for name, R in _transforms(seed).items():
        err = irreps_equivariance_error(lambda p, h: fn(h, p, edge_index, tp, radial, rbf, avg), (pos, x),
                                        ("xyz", tp.irreps_in1), tp.irreps_out, R)
        fb.expect(err < 1e-9, f"{name}: rotating the positions (R) and the features (D_in(R)) should rotate the "
                  f"output by D_out(R); the error is {err:.1e}. Only use r_ij through Y(r_ij) and |r_ij|")
    t = torch.tensor([1.5, -2.0, 0.7], dtype=pos.dtype)
    with torch.no_grad():
        moved = fn(x, pos + t, edge_index, tp, radial, rbf, avg)
    fb.expect(close(moved, out, atol=1e-10, rtol=1e-7), "translating all atoms changed the output: use only "
              "differences pos[j] - pos[i], never absolute positions")
    perm = torch.randperm(edge_index.shape[1], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        shuffled = fn(x, pos, edge_index[:, perm], tp, radial, rbf, avg)
    fb.expect(close(shuffled, out, atol=1e-10, rtol=1e-7), "shuffling the list of edges changed your output: do not "
              "rely on the edge order")


@exercise("07.convolution", "the tensor-product convolution of NequIP")
def check_convolution(fn, fb, seed: int = 0, l_max: int = 1, mul: int = 3, n_atoms: int = 8, r_max: float = 2.5,
                      expected=None):
    conv, rbf, pos, x, edge_index, avg = _conv_setup(seed, l_max, mul, n_atoms, r_max)
    tp, radial = conv.tp, conv.radial
    N, D_out = n_atoms, tp.irreps_out.dim
    x_in, pos_in = x.clone(), pos.clone()
    out = fn(x_in, pos_in, edge_index, tp, radial, rbf, avg)
    expect_tensor(fb, out)
    if out.dim() == 2 and out.shape[0] == edge_index.shape[1] and out.shape[0] != N:
        fb.expect(False, f"the output has one row per edge {shape_of(out)}: sum the messages into their centre atoms i "
                  f"(edge_index[1]) to get one row per atom, shape {(N, D_out)}", fatal=True)
    fb.expect(out.shape == (N, D_out), f"the output has shape {shape_of(out)}; expected {(N, D_out)} = "
              "[number of atoms, tp.irreps_out.dim] (create the sum with x.shape[0] rows)", fatal=True)
    fb.expect(torch.equal(x_in, x) and torch.equal(pos_in, pos), "your function modified x or pos in place")
    _check_convolution_values(fb, out, provider(expected), conv, rbf, x, pos, edge_index, avg)
    fb.expect(close(out[-1], torch.zeros(D_out, dtype=out.dtype), atol=1e-9, rtol=1e-7),
              "the isolated atom (no neighbours) must get m_i = 0 (the empty sum)")
    _check_convolution_symmetries(fn, fb, out, conv, rbf, x, pos, edge_index, avg, seed)
    # forces: the output must be differentiable with respect to the positions
    p = pos.clone().requires_grad_(True)
    res = fn(x, p, edge_index, tp, radial, rbf, avg)
    fb.expect(isinstance(res, torch.Tensor) and res.requires_grad,
              "the output is detached from pos: forces are -dE/dpos through this convolution (no .detach(), .item() "
              "or numpy)")
    # float32 model and inputs stay float32
    conv32, rbf32, pos32, x32, ei32, avg32 = _conv_setup(seed, l_max, mul, n_atoms, r_max, dtype=torch.float32)
    out32 = fn(x32, pos32, ei32, conv32.tp, conv32.radial, rbf32, avg32)
    fb.expect(isinstance(out32, torch.Tensor) and out32.dtype == torch.float32,
              "float32 features and positions: keep float32 (create the output with dtype=x.dtype or use index_add "
              "on zeros_like-shaped tensors of the messages' dtype)")


# ------------------------------------------------------------------------- 07.gate


def _gate_setup(seed: int, muls=(3, 2, 2, 2, 1), n: int = 6, dtype=torch.float64):
    """The reference e3nn Gate (inside GateNonlinearity) for 0e, 0o, 1o, 1e, 2e channels and random inputs."""
    from e3nn import o3

    from course_lib.models.nequip import GateNonlinearity

    m0e, m0o, m1o, m1e, m2e = muls
    hidden = o3.Irreps(f"{m0e}x0e+{m0o}x0o+{m1o}x1o+{m1e}x1e+{m2e}x2e")
    ref = GateNonlinearity(hidden, hidden, o3.Irreps.spherical_harmonics(2)).gate.to(dtype)
    g = torch.Generator().manual_seed(2000 + seed)
    scalars = 1.5 * torch.randn(n, ref.irreps_scalars.dim, generator=g, dtype=torch.float64).to(dtype)
    gates = 1.5 * torch.randn(n, ref.irreps_gates.dim, generator=g, dtype=torch.float64).to(dtype)
    gated = torch.randn(n, ref.irreps_gated.dim, generator=g, dtype=torch.float64).to(dtype)
    return ref, scalars, gates, gated


_GATE_MISTAKES = {
    "not normalised": "the activations are not rescaled: e3nn multiplies each activation f by the constant c with "
                      "E[(c f(z))^2] = 1 for z ~ N(0, 1); wrap them with e3nn.math.normalize2mom (SiLU x 1.68, tanh "
                      "x 1.59, sigmoid x 1.85)",
    "silu on odd scalars": "odd scalars (0o, pseudo-scalars) need an ODD activation (tanh): SiLU(-s) != -SiLU(s), so "
                           "a SiLU on a pseudo-scalar breaks reflections",
    "scalars unchanged": "the scalars are returned unchanged: apply SiLU to the even scalars (0e) and tanh to the odd "
                         "ones (0o)",
    "silu gates": "the gates go through a SIGMOID (as in NequIP's paper version), not SiLU",
    "no gate activation": "the gates multiply the l > 0 channels after a sigmoid: sigmoid(g) * v",
    "tiled gates": "gate k multiplies all 2l + 1 components of channel k: repeat each gate 2l + 1 times "
                   "(repeat_interleave, or reshape the block to [N, mul, 2l + 1] and multiply by gates[:, :, None]); "
                   "you tiled them",
    **{f"{a} on gated{'' if nrm else ', not normalised'}":
       "an activation was applied to the components of the l > 0 features: that breaks rotations; multiply each "
       "channel by its (activated) gate scalar instead" for a in ("silu", "sigmoid", "tanh") for nrm in (True, False)},
}


@exercise("07.gate", "the gated nonlinearity")
def check_gate(fn, fb, seed: int = 0, muls=(3, 2, 2, 2, 1), n: int = 6, expected=None):
    ref_gate, scalars, gates, gated = _gate_setup(seed, muls, n)
    irreps_scalars, irreps_gated = ref_gate.irreps_scalars, ref_gate.irreps_gated
    dim_out = irreps_scalars.dim + irreps_gated.dim
    args = (scalars.clone(), gates.clone(), gated.clone())
    out = fn(*args, irreps_scalars, irreps_gated)
    expect_tensor(fb, out)
    if out.dim() == 2 and out.shape[1] == dim_out + gates.shape[1]:
        fb.expect(False, f"the output has {out.shape[1]} columns: the gates are used up (they multiply the l > 0 "
                  f"channels) and are not part of the output; expected {(n, dim_out)} = [N, scalars + gated]",
                  fatal=True)
    fb.expect(out.shape == (n, dim_out), f"the output has shape {shape_of(out)}; expected {(n, dim_out)} = [N, "
              f"irreps_scalars.dim + irreps_gated.dim] ({irreps_scalars} then {irreps_gated})", fatal=True)
    fb.expect(all(torch.equal(a, b) for a, b in zip(args, (scalars, gates, gated))),
              "your function modified its inputs in place (e.g. gated *= ...); work on new tensors")
    want = provider(expected)
    inputs = (ref_gate, scalars, gates, gated)
    msg = _diagnose(out, want, "07.gate", inputs, _GATE_MISTAKES,
                    "the output differs from [SiLU(0e scalars), tanh(0o scalars), sigmoid(gates) * gated] (each "
                    "activation normalised with e3nn.math.normalize2mom)", atol=1e-6, rtol=5e-3)
    fb.expect(close(out, want("07.gate", "values", *inputs), atol=1e-6, rtol=5e-3), msg,
              ok="matches e3nn's Gate (as used by course_lib.models.nequip.GateNonlinearity)", values=True)
    # O(3): scalars 0e/0o and gated irreps rotate with their D matrices, the gates are 0e (invariant)
    from e3nn import o3

    irreps_out = irreps_scalars + irreps_gated
    for name, R in _transforms(seed + 7).items():
        err = irreps_equivariance_error(lambda s, g_, v: fn(s, g_, v, irreps_scalars, irreps_gated),
                                        (scalars, gates, gated),
                                        (irreps_scalars, o3.Irreps(f"{gates.shape[1]}x0e"), irreps_gated),
                                        irreps_out, R)
        fb.expect(err < 1e-9, f"{name}: the gate is not equivariant (error {err:.1e}): scalars may go through any "
                  "activation (odd ones for 0o), but l > 0 features may only be multiplied by invariant numbers")
    # a gate of +infinity lets the channel through (times the normalisation constant); zero gated input -> 0
    big = torch.full_like(gates, 50.0)
    res = fn(scalars, big, gated, irreps_scalars, irreps_gated)
    c = _normalised("sigmoid").cst
    fb.expect(isinstance(res, torch.Tensor) and close(res[:, irreps_scalars.dim:], c * gated, atol=1e-6, rtol=5e-3),
              "with very large gates, sigmoid(g) = 1 and the l > 0 channels should pass through (times the "
              "normalisation constant of the sigmoid)")
    r32 = fn(scalars.float(), gates.float(), gated.float(), irreps_scalars, irreps_gated)
    fb.expect(isinstance(r32, torch.Tensor) and r32.dtype == torch.float32,
              "float32 input: keep float32 (no .double() inside)")


# ------------------------------------------------------------------------- 07.nequip_variant (design)

#: the parameter budget of a NequIP variant (the notebook's NequIP of section 7 has about 37,600)
VARIANT_MAX_PARAMETERS = 15_000


def _variant_graphs(pos_list, z_list):
    from torch_geometric.data import Batch, Data

    return Batch.from_data_list([Data(z=torch.as_tensor(z, dtype=torch.long), pos=torch.as_tensor(p).double())
                                 for p, z in zip(pos_list, z_list)])


def _variant_energy(fb, model, graphs, what: str, grad: bool = False):
    """The energies [num_graphs] (float64) and, with ``grad``, the forces -dE/dpos [N, 3]."""
    pos = graphs.pos.detach().clone().requires_grad_(grad)
    graphs = graphs.clone()
    graphs.pos = pos
    out = call_student(fb, model, (graphs,), f"the model on {what}")
    ok = isinstance(out, torch.Tensor) and tuple(out.shape) == (int(graphs.num_graphs),)
    if not ok:
        expect_tensor(fb, out, "the model")
        fb.expect(False, f"the model must return one energy per graph, shape ({int(graphs.num_graphs)},), on {what}; "
                  f"got {shape_of(out)}", fatal=True)
    if not bool(torch.isfinite(out.detach()).all()):
        fb.expect(False, f"the energy has NaN or inf on {what}", fatal=True)
    if not grad:
        return out.detach().double(), None
    if not out.requires_grad:
        return out.detach().double(), torch.zeros_like(pos)
    (g,) = torch.autograd.grad(out.sum(), pos, allow_unused=True)
    return out.detach().double(), (torch.zeros_like(pos) if g is None else -g.detach().double())


def _variant_build(cls, fb, seed: int):
    from course_lib.graph import count_parameters

    with torch.random.fork_rng(devices=[]):  # seeded weights, the notebook's random state left alone
        torch.manual_seed(seed)
        model = call_student(fb, cls, (), "building the model with no arguments (NequIPVariant())")
    fb.expect(type_name(model) != "NequIP", "this is the library's NequIP class: the exercise asks for a variant that "
              "you assemble (your own forward pass from the blocks, or your own blocks)", fatal=True)
    cutoff = getattr(model, "cutoff", None)
    fb.expect(isinstance(cutoff, (int, float)) and not isinstance(cutoff, bool) and 1.5 <= float(cutoff) <= 6.0,
              f"the model needs an attribute `cutoff`, a number of Angstrom in [1.5, 6]; got {cutoff!r}", fatal=True)
    model = model.double()
    model.eval()
    count = count_parameters(model, trainable_only=False)
    fb.expect(count <= VARIANT_MAX_PARAMETERS, f"over the budget: {count} parameters > {VARIANT_MAX_PARAMETERS}. The "
              "radial MLPs hold most of NequIP's parameters (the table of section 7): fewer or narrower hidden "
              "layers there, fewer channels or fewer blocks", ok=f"{count} parameters (budget "
              f"{VARIANT_MAX_PARAMETERS})", values=True)
    return model, float(cutoff)


def _variant_symmetries(fb, model, seed: int, frames: int) -> list[str]:
    """Invariance of the energy under rotations, reflections, translations, permutations, and forces that agree
    with finite differences of the energy, on ethanol frames; returns the broken properties."""
    from course_lib.datasets import load_molecules

    data = load_molecules("ethanol", "test", dtype=torch.float64)[seed: seed + frames]
    graphs = _variant_graphs([d.pos for d in data], [d.z for d in data])
    energy, forces = _variant_energy(fb, model, graphs, "ethanol frames", grad=True)
    tol = 1e-8 * max(1.0, float(energy.abs().max()))
    R, M = random_rotation_and_reflection(seed + 1, seed + 2)
    t = torch.randn(3, generator=rng(seed + 3), dtype=torch.float64) * 2.0
    perm = torch.cat([torch.randperm(len(d.z), generator=rng(seed + 4 + k)) for k, d in enumerate(data)])
    offsets = torch.repeat_interleave(torch.tensor([0] + [len(d.z) for d in data][:-1]).cumsum(0),
                                      torch.tensor([len(d.z) for d in data]))
    perm = perm + offsets
    moved = {"rotation": graphs.pos @ R.T, "reflection": graphs.pos @ M.T, "translation": graphs.pos + t}
    broken = []
    for name, pos in moved.items():
        other = graphs.clone()
        other.pos = pos
        err = float((_variant_energy(fb, model, other, f"a {name} of them")[0] - energy).abs().max())
        fb.expect(err <= tol, f"the energy is not invariant under {name} (it changes by {err:.1e} eV): every input of "
                  "the readout must be an invariant (0e) feature, built from bond vectors, never coordinates",
                  ok=f"energy invariant under {name}")
        broken += [] if err <= tol else [f"{name} invariance (error {err:.1e} eV)"]
    other = graphs.clone()
    other.pos, other.z = graphs.pos[perm], graphs.z[perm]
    err = float((_variant_energy(fb, model, other, "the atoms renumbered")[0] - energy).abs().max())
    fb.expect(err <= tol, f"the energy changes when the atoms are renumbered ({err:.1e} eV): sum over atoms and "
              "neighbours, never use atom indices", ok="energy invariant under permutations")
    broken += [] if err <= tol else [f"permutation invariance (error {err:.1e} eV)"]
    return broken + _variant_gradient(fb, model, graphs, forces, seed)


def _variant_gradient(fb, model, graphs, forces, seed: int, h: float = 1e-4) -> list[str]:
    """Autograd forces against central finite differences of the energy, on a few coordinates."""
    coords = torch.randperm(graphs.pos.numel(), generator=rng(seed + 9))[:6]
    fd = []
    for c in coords.tolist():
        e = []
        for sign in (1.0, -1.0):
            other = graphs.clone()
            other.pos = graphs.pos.clone()
            other.pos.view(-1)[c] += sign * h
            e.append(float(_variant_energy(fb, model, other, "a displaced frame")[0].sum()))
        fd.append(-(e[0] - e[1]) / (2 * h))
    fd = torch.tensor(fd, dtype=torch.float64)
    auto = forces.reshape(-1)[coords]
    err = float((auto - fd).abs().max())
    ok = err <= 1e-4 * max(1.0, float(fd.abs().max()))
    fb.expect(ok, f"the forces -dE/dr from autograd differ from finite differences of the energy by {err:.1e} eV/A: "
              "is a part of the energy detached from the positions, or not differentiable (a hard cutoff inside, "
              "rounding)?", ok="forces = -dE/dr (autograd = finite differences)")
    return [] if ok else [f"forces = -dE/dr (autograd vs finite differences: {err:.1e} eV/A)"]


def _variant_cutoff(fb, model, cutoff: float) -> list[str]:
    """O at the origin, H bonded to it, a C atom on the far side at the cutoff -/+ delta: energy and force on C
    must go smoothly to their values without the C-O pair."""
    delta = 1e-4 * cutoff

    def frame(x):
        return _variant_graphs([torch.tensor([[0.0, 0.0, 0.0], [-0.97, 0.0, 0.0], [x, 0.0, 0.0]])], [[8, 1, 6]])

    e_in, f_in = _variant_energy(fb, model, frame(cutoff - delta), "C just inside the cutoff of O", grad=True)
    e_out, _ = _variant_energy(fb, model, frame(cutoff + delta), "C just outside the cutoff of O")
    e_mid, f_mid = _variant_energy(fb, model, frame(0.6 * cutoff), "C at 0.6 cutoff from O", grad=True)
    scale_e = max(float((e_mid - e_out).abs()), 1e-6)
    scale_f = max(float(f_mid[2].norm()), 1e-6)
    jump = float((e_in - e_out).abs())
    force = float(f_in[2].norm())
    ok_e, ok_f = jump <= 1e-5 * scale_e, force <= 1e-3 * scale_f
    fb.expect(ok_e, f"the energy jumps by {jump:.1e} eV when an atom crosses the cutoff ({jump / scale_e:.1e} of its "
              "interaction energy at 0.6 r_c): the edge's contribution must go to zero at r_c. Multiply the radial "
              "basis by an envelope, and make the radial network zero for a zero input (no biases), or multiply "
              "its output by the envelope", ok="energy continuous at the cutoff")
    fb.expect(ok_f, f"the force on an atom just inside the cutoff is {force:.1e} eV/A ({force / scale_f:.1e} of the "
              "force at 0.6 r_c), but 0 just outside: the forces jump at the cutoff, so MD does not conserve energy. "
              "The envelope must make the basis AND its derivative vanish at r_c (NequIP's polynomial, p = 6)",
              ok="forces continuous at the cutoff")
    return ([] if ok_e else [f"smooth cutoff: energy jump {jump:.1e} eV"]) + \
           ([] if ok_f else [f"smooth cutoff: force jump {force:.1e} eV/A"])


@exercise("07.nequip_variant", "design: a NequIP variant of your own that keeps every symmetry")
def check_nequip_variant(cls, fb, seed: int = 0, frames: int = 2, expected=None):
    """A design exercise: invariances, forces = -grad and the smooth cutoff are prerequisites (a model that breaks
    one scores 0 for the case, the feedback lists what it breaks with the errors); the parameter budget and
    seeing angles (two bent triatomics with equal bonds) are the bars."""
    from course_lib import expressivity

    model, cutoff = _variant_build(cls, fb, seed)
    broken = _variant_symmetries(fb, model, seed, frames) + _variant_cutoff(fb, model, cutoff)
    a, b = expressivity.bent_pair(bond=cutoff / 1.3)
    pair = _variant_graphs([a.pos, b.pos], [a.z, b.z])
    e, _ = _variant_energy(fb, model, pair, "two bent triatomics (105 and 150 degrees)")
    gap = float((e[0] - e[1]).abs())
    fb.expect(gap > 1e-8 * max(1.0, float(e.abs().max())), "the energy is the same for two bent triatomics H-C-H with "
              "equal bond lengths and angles of 105 and 150 degrees (the H atoms do not see each other within the "
              "cutoff): the model sees distances only. Keep l >= 1 features (vectors) and their tensor products",
              ok=f"tells the bent triatomics apart (energy gap {gap:.1e} eV)", values=True)
    fb.expect(not broken, f"the design breaks a required property ({'; '.join(broken)}): whatever else it does, a "
              "potential without them is not a solution, and this case scores 0", fatal=True,
              ok="has every required property")
