"""Notebook 06 (irreps, spherical harmonics and tensor products): checkers.

Exercises (id, points):

- ``06.wigner_d_from_harmonics`` (2): ``wigner_d_from_harmonics(l, R [3, 3]) -> [2l+1, 2l+1]``: the
  Wigner-D matrix of an O(3) element fitted from ``Y^l(R x) = D Y^l(x)`` at sample points.
- ``06.cross_product_from_cg`` (2): ``cross_product_from_cg(a [..., 3], b [..., 3]) -> [..., 3]``: the
  cross product from the Clebsch-Gordan coefficients ``o3.wigner_3j(1, 1, 1)``.
- ``06.norm_activation`` (2): ``norm_activation(x [N, irreps.dim], irreps) -> [N, irreps.dim]``: every
  copy of every irrep scaled by ``sigmoid`` of its own norm.
- ``06.radial_tensor_product`` (3): ``RadialTensorProduct(irreps_in, irreps_sh, irreps_out)``: a "uvu"
  tensor product of node features with the spherical harmonics of the edge vectors, with per-edge
  weights from a radial MLP of the edge length.
- ``06.quadrupole_layer`` (3, design): ``quadrupole_layer(pos [N, 3], edge_index [2, E]) -> [N, 5]``: a ``2e``
  feature of every atom's neighbourhood (the five coefficients in e3nn's basis). Any design passes that is
  rotation-equivariant with ``D^2``, even under the inversion (``2e``, not ``2o``), translation invariant,
  permutation equivariant, local (only the pairs of ``edge_index``), within :data:`QUADRUPOLE_MAX_PARAMETERS`
  parameters if it is a module, and nonzero for every atom that has a neighbour; there is no expected output.

No reference solution is here: the correct values come from the library (``course_lib.irreps.wigner_D``,
``torch.linalg.cross``) or, with the outputs of the known mistakes, from the checker's ``expected``
provider (:mod:`course_lib.teaching.exercises.stored`; the references live with the hidden tests, in
``grading/hidden/reference/nb06.py``). Symmetry tests go through
:mod:`course_lib.symmetry` (Cartesian vectors and pseudovectors) and :mod:`course_lib.irreps` (irreps
features), with fixed seeds, so the feedback is deterministic.
"""

from __future__ import annotations

import math
import re

import torch
from e3nn import o3
from torch import nn
from torch_geometric.data import Data

from course_lib import irreps as I
from course_lib import symmetry as S
from course_lib.teaching.checks import Feedback, exercise
from course_lib.teaching.exercises.common import (
    call_student,
    close_scaled,
    expect_tensor,
    random_rotation_and_reflection,
    rng,
    shape_of,
    source_of,
    type_name,
)
from course_lib.teaching.exercises.stored import provider

__all__ = [
    "check_wigner_d_from_harmonics",
    "check_cross_product_from_cg",
    "check_norm_activation",
    "check_radial_tensor_product",
    "check_quadrupole_layer",
    "QUADRUPOLE_MAX_PARAMETERS",
    "NORM_IRREPS",
    "TP_CONFIGS",
]


# --------------------------------------------------------------------------------------------
# Helpers of the checkers
# --------------------------------------------------------------------------------------------


def _elements(seed: int) -> dict[str, torch.Tensor]:
    g = rng(1000 + seed)
    rotation, reflection = random_rotation_and_reflection(g, g)
    return {
        "a random rotation": rotation,
        "a random reflection (det -1)": reflection,
        "the inversion -I": -torch.eye(3, dtype=torch.float64),
    }


# --------------------------------------------------------------------------------------------
# 06.wigner_d_from_harmonics
# --------------------------------------------------------------------------------------------


def _sh_error(D: torch.Tensor, l: int, R: torch.Tensor, seed: int) -> float:
    """max |Y(R x) - D Y(x)| on fresh random points (the defining property of D)."""
    x = torch.randn(50, 3, generator=rng(2000 + seed), dtype=torch.float64)
    Y = o3.spherical_harmonics(l, x, normalize=True)
    Y_R = o3.spherical_harmonics(l, x @ R.T, normalize=True)
    return float((Y_R - Y @ D.detach().to(torch.float64).T).abs().max())


@exercise("06.wigner_d_from_harmonics", "Wigner-D matrices fitted from spherical harmonics")
def check_wigner_d_from_harmonics(fn, fb: Feedback, seed: int = 0, lmax: int = 3, expected=None) -> None:
    del expected  # nothing is stored: course_lib.irreps.wigner_D gives the exact matrices
    elements = _elements(seed)
    results: dict[tuple[int, str], torch.Tensor] = {}
    for l in range(lmax + 1):
        for name, R in elements.items():
            R_in = R.clone()
            D = call_student(fb, fn, (l, R_in), f"wigner_d_from_harmonics({l}, R) with R {name} (float64)",
                             "make the sample points in the dtype of R (torch.randn(..., dtype=R.dtype)) and rotate "
                             "them as x @ R.T")
            expect_tensor(fb, D, "wigner_d_from_harmonics")
            fb.expect(torch.equal(R_in, R), "wigner_d_from_harmonics modified R in place", fatal=True)
            n = 2 * l + 1
            fb.expect(tuple(D.shape) == (n, n), f"for l = {l} expected a [{n}, {n}] matrix (2l+1 = {n} "
                      f"components), got {shape_of(D, brackets='[]')}", fatal=True)
            fb.expect(bool(torch.isfinite(D).all()), f"l = {l}, R {name}: D contains NaN or inf: normalise "
                      "the sample points (normalize=True) and use points that are not at the origin", fatal=True)
            results[(l, name)] = D
    fb.expect(all(D.dtype == torch.float64 for D in results.values()),
              "for a float64 R return a float64 D (keep the dtype of R; a float32 fit is only good to ~1e-6)")

    for l in range(lmax + 1):
        problems = []  # (priority, message): the most telling mistake of this l is reported
        for name, R in elements.items():
            D = results[(l, name)]
            ref = I.wigner_D(o3.Irrep(l, (-1) ** l), R)  # float64 generators: exact to ~1e-14
            if close_scaled(D, ref, 1e-8):
                continue
            if l % 2 == 1 and float(torch.linalg.det(R)) < 0 and close_scaled(D, -ref, 1e-5):
                problems.append((0, f"R {name}: this is the matrix of the *even* irrep {l}e; the spherical harmonics "
                                    f"of degree {l} have parity (-1)^l = -1, so for det R = -1, D picks up a minus "
                                    "sign. Fit D from the harmonics at R x, reflections included"))
            elif close_scaled(D, ref.T, 1e-5):
                problems.append((1, f"R {name}: you returned the transpose D(R)^T = D(R^-1). Rotate the points as "
                                    "x @ R.T (rows R x_p) and remember that lstsq solves Y D^T = Y(Rx) for D^T"))
            elif close_scaled(D, ref, 1e-5):
                err = float((D.detach().to(torch.float64) - ref).abs().max())
                problems.append((3, f"R {name}: D is only accurate to {err:.1e} (like e3nn's D_from_matrix under "
                                    "the float32 default dtype, or a fit in float32): fit D in float64 from the "
                                    "spherical harmonics by least squares"))
            else:
                err = _sh_error(D, l, R, seed)
                problems.append((2, f"R {name}: Y(R x) = D Y(x) fails by {err:.2e} on fresh points: fit D by least "
                                    f"squares (in float64) from the harmonics of at least 2l+1 = {2 * l + 1} points "
                                    "in general position (more is safer)"))
        worst = min(problems)[1] if problems else ""
        fb.expect(not problems, f"l = {l}: {worst}", ok=f"l = {l}: D correct")

    if lmax >= 2:
        g = rng(3000 + seed)
        R1, R2 = S.random_orthogonal(3, generator=g), S.random_orthogonal(3, generator=g)
        D1, D2, D12 = (call_student(fb, fn, (2, R), "wigner_d_from_harmonics(2, R)") for R in (R1, R2, R1 @ R2))
        err = float((D1 @ D2 - D12).abs().max())
        fb.expect(err < 1e-8, f"not a representation: |D(R1) D(R2) - D(R1 R2)| = {err:.2e} for l = 2",
                  ok=f"homomorphism: {err:.1e}")
    D3 = results[(lmax, "a random reflection (det -1)")]
    orth = float((D3 @ D3.T - torch.eye(2 * lmax + 1, dtype=D3.dtype)).abs().max())
    fb.expect(orth < 1e-8, f"D must be orthogonal (D D^T = I); for l = {lmax} and a reflection the error is {orth:.2e}",
              ok=f"orthogonal: {orth:.1e}")
    src = source_of(fn)
    fb.expect(not re.search(r"D_from_matrix|D_from_angles|wigner_D", src),
              "fit D from the spherical harmonics (least squares): do not call e3nn's D_from_matrix / "
              "D_from_angles / wigner_D, which is what the check compares with")


# --------------------------------------------------------------------------------------------
# 06.cross_product_from_cg
# --------------------------------------------------------------------------------------------


@exercise("06.cross_product_from_cg", "The cross product from Clebsch-Gordan coefficients")
def check_cross_product_from_cg(fn, fb: Feedback, seed: int = 0, n: int = 6, expected=None) -> None:
    del expected  # nothing is stored: torch.linalg.cross gives the answer
    g = rng(seed)
    a = torch.randn(n, 3, generator=g, dtype=torch.float64)
    b = torch.randn(n, 3, generator=g, dtype=torch.float64)
    a0, b0 = a.clone(), b.clone()
    out = call_student(fb, fn, (a, b), f"cross_product_from_cg(a, b) with a, b of shape [{n}, 3] (float64)",
                       "build the coefficients in the dtype of a: o3.wigner_3j(1, 1, 1, dtype=a.dtype), and contract "
                       "them with torch.einsum('ijk,...i,...j->...k', C, a, b)")
    expect_tensor(fb, out, "cross_product_from_cg")
    fb.expect(torch.equal(a, a0) and torch.equal(b, b0), "cross_product_from_cg modified its inputs in place")
    fb.expect(tuple(out.shape) == (n, 3),
              f"expected one vector per pair, shape [{n}, 3], got {shape_of(out, brackets='[]')}", fatal=True)
    fb.expect(out.dtype == torch.float64, f"float64 inputs must give a float64 result, got {out.dtype}: build "
              "wigner_3j with dtype=a.dtype")
    ref = torch.linalg.cross(a, b, dim=-1)
    values_ok = close_scaled(out, ref, 1e-10)
    if values_ok:
        fb.expect(True, "values")
    elif close_scaled(out, -ref, 1e-10):
        fb.expect(False, "you computed b x a = -(a x b): contract C[i, j, k] with a on index i and b on index j")
    elif close_scaled(out, ref / math.sqrt(6), 1e-10):
        fb.expect(False, "your result is (a x b) / sqrt(6): wigner_3j is normalised to Frobenius norm 1, and the "
                         "Levi-Civita symbol has norm sqrt(6); multiply by sqrt(6)")
    elif close_scaled(out, ref / math.sqrt(2), 1e-10):
        fb.expect(False, "your result is (a x b) / sqrt(2), the l = 1 output of FullTensorProduct('1o', '1o') "
                         "(component normalisation multiplies the path by sqrt(3)); multiply C by sqrt(6) instead")
    else:
        fb.expect(False, f"wrong values: for a[0] = {[round(v, 3) for v in a[0].tolist()]} and b[0] = "
                  f"{[round(v, 3) for v in b[0].tolist()]} expected a x b = {[round(v, 3) for v in ref[0].tolist()]}, "
                  f"got {[round(v, 3) for v in out[0].tolist()]}: use the l = 1 coefficients wigner_3j(1, 1, 1)")

    data = Data(pos=a.clone(), a=a.clone(), b=b.clone())
    kinds = {"a": "vector", "b": "vector"}
    g2 = rng(100 + seed)
    transforms = {"rotation": S.rotation(3, g2), "reflection": S.reflection(3, g2), "inversion": S.inversion(3)}
    for name, T in transforms.items():
        err = S.equivariance_error(lambda d: fn(d.a, d.b), data, T, output="pseudovector", field_kinds=kinds)
        fb.expect(err < 1e-9, f"a x b must transform as a pseudovector (1e: v -> det(R) R v) under {name}, but the "
                  f"course_lib.symmetry error is {err:.2e}", ok=f"pseudovector under {name}: error {err:.1e}")

    src = source_of(fn)
    fb.expect(not src or (not re.search(r"linalg\.cross|torch\.cross|\.cross\(", src) and "wigner_3j" in src),
              "compute the cross product from the Clebsch-Gordan coefficients o3.wigner_3j(1, 1, 1), not with "
              "torch.linalg.cross")
    if not values_ok:
        return  # the cases below test shapes and dtypes of a correct formula
    a2 = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    b2 = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    out2 = call_student(fb, fn, (a2, b2), "cross_product_from_cg(a, b) with a, b of shape [2, 4, 3]",
                        "use '...' for the leading axes in the einsum")
    fb.expect(isinstance(out2, torch.Tensor) and close_scaled(out2, torch.linalg.cross(a2, b2, dim=-1), 1e-10),
              "wrong result for inputs of shape [2, 4, 3]: any leading shape [..., 3] must work ('...' in einsum)")
    out32 = call_student(fb, fn, (a.float(), b.float()), "cross_product_from_cg(a, b) with float32 inputs",
                         "build wigner_3j with dtype=a.dtype")
    fb.expect(isinstance(out32, torch.Tensor) and out32.dtype == torch.float32 and close_scaled(out32, ref, 1e-5),
              "float32 inputs must give the float32 cross product (build wigner_3j with dtype=a.dtype)")


# --------------------------------------------------------------------------------------------
# 06.norm_activation
# --------------------------------------------------------------------------------------------

NORM_IRREPS = "2x0e + 1x0o + 3x1o + 1x1e + 2x2e"


#: the known mistakes of 06.norm_activation (their outputs come from the provider) and what to tell
NORM_MISTAKES = {
    "componentwise abs": "you applied sigmoid to each component separately (sigmoid(x) * x or sigmoid(|x_i|) * x_i); "
    "a function of single components does not commute with rotations: use the norm of each copy (2l+1 components)",
    "componentwise x": "componentwise sigmoid(x) * x does not commute with rotations: gate each copy by sigmoid of "
    "its norm",
    "transposed layout": "e3nn stores a block 'mul x ir' copy by copy: reshape it to [N, mul, 2l+1] (not "
    "[N, 2l+1, mul]) and take the norm over the last axis",
    "one norm per block": "you took one norm over all copies of a block: every copy u (2l+1 components) gets its "
    "own gate sigmoid(|x_u|)",
    "one norm per node": "you took one norm over all features of a node: every copy of every irrep gets its own gate",
    "divided by the norm": "you divided by the norm (sigmoid(|x_u|) x_u / |x_u|, e3nn's normalize=True): the "
    "exercise asks for sigmoid(|x_u|) x_u",
    "scalars unchanged": "the scalar copies (l = 0) are unchanged: they get the same gate sigmoid(|s|) as every "
    "other copy",
}


@exercise("06.norm_activation", "A norm nonlinearity for irreps features")
def check_norm_activation(fn, fb: Feedback, seed: int = 0, n: int = 5, irreps: str = NORM_IRREPS,
                          expected=None) -> None:
    want = provider(expected)
    irreps = o3.Irreps(irreps)
    g = rng(seed)
    x = 1.5 * torch.randn(n, irreps.dim, generator=g, dtype=torch.float64)
    x0 = x.clone()
    out = call_student(fb, fn, (x, irreps), f"norm_activation(x, irreps) with irreps = {irreps} and x of shape "
                       f"[{n}, {irreps.dim}]",
                       "loop over zip(irreps, irreps.slices()); each (mul, ir) block reshapes to [N, mul, ir.dim]")
    expect_tensor(fb, out, "norm_activation")
    fb.expect(torch.equal(x, x0), "norm_activation modified x in place; build new tensors")
    fb.expect(tuple(out.shape) == (n, irreps.dim),
              f"expected the shape of x, [{n}, {irreps.dim}], got {shape_of(out, brackets='[]')}", fatal=True)
    fb.expect(bool(torch.isfinite(out).all()), "the output contains NaN or inf", fatal=True)

    elements = _elements(seed)
    for name in ("a random rotation", "a random reflection (det -1)"):
        err = I.irreps_equivariance_error(lambda v: fn(v, irreps), x, irreps, irreps, elements[name])
        fb.expect(err < 1e-9, f"not equivariant under {name}: course_lib.irreps error {err:.2e} (tolerance 1e-09); "
                  "gate each copy of an irrep with a function of its norm only", ok=f"{name}: error {err:.1e}")

    ref = want("06.norm_activation", "values", x, str(irreps))
    mistakes = {variant: want("06.norm_activation", variant, x, str(irreps)) for variant in NORM_MISTAKES}
    values_ok = close_scaled(out, ref, 1e-10)
    if values_ok:
        fb.expect(True, "values")
    else:
        for variant, message in NORM_MISTAKES.items():
            if close_scaled(out, mistakes[variant], 1e-10):
                fb.expect(False, message)
                break
        else:
            fb.expect(False, "wrong values: expected every copy x_u of every irrep (2l+1 consecutive components) "
                             "scaled by sigmoid(|x_u|)")

    zero = torch.zeros(2, irreps.dim, dtype=torch.float64)
    out0 = call_student(fb, fn, (zero, irreps), "norm_activation(x, irreps) with x = 0")
    fb.expect(isinstance(out0, torch.Tensor) and bool(torch.isfinite(out0).all()) and close_scaled(out0, zero, 0.0),
              "x = 0 must give 0 (not NaN): do not divide by the norm")
    if not values_ok:
        return  # the case below tests other irreps for a correct formula
    other = o3.Irreps("1x2e + 2x1o + 3x0e + 1x3o")
    x2 = torch.randn(3, other.dim, generator=g, dtype=torch.float64)
    out2 = call_student(fb, fn, (x2, other), f"norm_activation(x, irreps) with irreps = {other}",
                        "do not assume sorted irreps or l <= 2; loop over zip(irreps, irreps.slices())")
    ref2 = want("06.norm_activation", "values", x2, str(other))
    fb.expect(isinstance(out2, torch.Tensor) and close_scaled(out2, ref2, 1e-10),
              f"wrong result for irreps = {other}: do not assume sorted irreps or l <= 2; loop over "
              "zip(irreps, irreps.slices())")


# --------------------------------------------------------------------------------------------
# 06.radial_tensor_product
# --------------------------------------------------------------------------------------------

#: (irreps_in, irreps_sh, irreps_out) of the checks; the last block of config 2 has no uvu path.
TP_CONFIGS = (
    ("4x0e + 4x1o", "1x0e + 1x1o + 1x2e", "4x0e + 4x1o + 4x1e + 4x2e"),
    ("2x0e + 2x1o + 2x2e", "1x0e + 1x1o + 1x2e + 1x3o", "2x0e + 2x0o + 2x1o + 2x1e + 2x2e + 2x3o"),
    ("3x0e + 2x1o", "1x0e + 1x1o", "3x0e + 2x1o + 2x1e + 5x1e"),
)


def _path_name(irreps_in, irreps_sh, irreps_out, path) -> str:
    i1, i2, io = path
    return f"{irreps_in[i1]} (x) {irreps_sh[i2]} -> {irreps_out[io]}"


def _edges(n_edges: int, irreps_in, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = rng(4000 + seed)
    h = torch.randn(n_edges, irreps_in.dim, generator=g)
    direction = torch.nn.functional.normalize(torch.randn(n_edges, 3, generator=g), dim=-1)
    length = 0.8 + 1.7 * torch.rand(n_edges, 1, generator=g)  # inside the cutoff 3.0
    return h, direction * length


def _build_radial_tensor_product(cls, fb: Feedback, seed: int, irreps_in, irreps_sh, irreps_out):
    """Build the student's module (seeded); returns ``(module, module.tp, module.radial)`` once they exist."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = call_student(fb, cls, (irreps_in, irreps_sh, irreps_out),
                         f"RadialTensorProduct('{irreps_in}', '{irreps_sh}', '{irreps_out}')",
                         "list the instructions as (i1, i2, i_out, 'uvu', True) tuples, only for allowed paths: e3nn "
                         "raises an AssertionError for a path the selection rules forbid; `ir_out in ir1 * ir2` checks "
                         "|l1 - l2| <= l_out <= l1 + l2 and the parity p_out = p1 p2, and 'uvu' needs mul_out == mul1")
    fb.expect(isinstance(m, nn.Module), f"RadialTensorProduct(...) must build an nn.Module, got {type_name(m)}",
              fatal=True)
    tp = getattr(m, "tp", None)
    fb.expect(isinstance(tp, o3.TensorProduct), "store the tensor product as self.tp (an e3nn o3.TensorProduct), "
              f"got {type_name(tp)}", fatal=True)
    radial = getattr(m, "radial", None)
    fb.expect(isinstance(radial, nn.Module), "store the radial MLP as self.radial (e3nn.nn.FullyConnectedNet "
              "[num_basis, hidden, tp.weight_numel])", fatal=True)
    return m, tp, radial


def _check_uvu_paths(fb: Feedback, want, tp, irreps_in, irreps_sh, irreps_out) -> None:
    """The instructions of ``tp``: 'uvu' only, every allowed path and no other, per-edge weights."""
    modes = sorted({ins.connection_mode for ins in tp.instructions})
    fb.expect(modes == ["uvu"], f"every instruction must use the connection mode 'uvu' (output channel u = input "
              f"channel u), got {modes}: 'uvw' mixes all channels and has mul1 * mul2 * mul_out weights per path")
    paths = want("06.radial_tensor_product", "paths", str(irreps_in), str(irreps_sh), str(irreps_out))
    allowed = {tuple(int(v) for v in row) for row in paths.reshape(-1, 3).tolist()}
    got = {(ins.i_in1, ins.i_in2, ins.i_out) for ins in tp.instructions}
    missing = sorted(allowed - got)
    extra = sorted(got - allowed)
    names = lambda paths: "; ".join(_path_name(irreps_in, irreps_sh, irreps_out, p) for p in paths[:4])
    fb.expect(not missing, f"{len(missing)} allowed path(s) missing, e.g. {names(missing)}: include every "
              "(i1, i2, i_out) with ir_out in ir1 * ir2 (|l1 - l2| <= l <= l1 + l2 and parity p1 p2) and the same "
              "multiplicity in and out", ok="all allowed paths")
    fb.expect(not extra, f"path(s) that should not be there: {names(extra)}", ok="no extra path")
    n_weights = sum(irreps_in[i1].mul * irreps_sh[i2].mul for i1, i2, _ in allowed)
    fb.expect(tp.weight_numel == n_weights, f"the tensor product should have {n_weights} weights "
              f"(mul_in x mul_sh per uvu path), it has {tp.weight_numel}")
    fb.expect(not tp.shared_weights and not tp.internal_weights, "each edge needs its own weights: build the "
              "TensorProduct with shared_weights=False, internal_weights=False and pass weights to tp(h, sh, weights)")


def _clean_tensor_product(tp) -> o3.TensorProduct:
    """A fresh e3nn TensorProduct with the irreps, instructions and path weights of the student's ``tp``.

    The expected messages are computed with it, never with the student's object (which could compute
    anything: in the grader it lives in the student's process). Path weights that differ from e3nn's
    default normalisation are reproduced by scaling the rebuilt paths.
    """
    irreps = tuple(o3.Irreps(str(x)) for x in (tp.irreps_in1, tp.irreps_in2, tp.irreps_out))
    mine = list(tp.instructions)
    paths = [(int(i.i_in1), int(i.i_in2), int(i.i_out), str(i.connection_mode), bool(i.has_weight)) for i in mine]
    default = o3.TensorProduct(*irreps, paths, shared_weights=False, internal_weights=False)
    scaled = [(*p, float(m.path_weight) / d.path_weight if d.path_weight else 1.0)
              for p, m, d in zip(paths, mine, default.instructions, strict=True)]
    return o3.TensorProduct(*irreps, scaled, shared_weights=False, internal_weights=False)


@torch.no_grad()
def _check_message_values(fb: Feedback, m, tp, radial, out, h, edge_vec, irreps_sh) -> None:
    """The messages against ``tp(h, Y(r / |r|), radial(rbf(|r|)))`` built from the student's own parts."""
    n_edges = h.shape[0]
    rbf = getattr(m, "rbf", None)
    fb.expect(isinstance(rbf, nn.Module), "keep the given Gaussian expansion self.rbf = GaussianRBF(num_basis, "
              "cutoff)", fatal=True)
    feats = rbf(edge_vec.norm(dim=-1))  # [E, num_basis]
    weights = call_student(fb, radial, (feats,), f"self.radial(self.rbf(|r|)) with Gaussian features of shape "
                           f"{list(feats.shape)}",
                           "the radial MLP takes the [E, num_basis] Gaussian features of the edge lengths: "
                           "FullyConnectedNet([num_basis, hidden, self.tp.weight_numel], ...)")
    ok_w = isinstance(weights, torch.Tensor) and tuple(weights.shape) == (n_edges, tp.weight_numel)
    fb.expect(ok_w or tp.shared_weights, f"self.radial(self.rbf(|r|)) must give one weight vector per edge, "
              f"shape [{n_edges}, {tp.weight_numel}] (tp.weight_numel), got {shape_of(weights, brackets='[]')}",
              fatal=True)
    if tp.shared_weights or tp.internal_weights:
        return  # already reported: there is nothing per edge to compare with

    clean = _clean_tensor_product(tp)

    def expected(normalize=True, normalization="component"):
        sh = o3.spherical_harmonics(irreps_sh, edge_vec, normalize=normalize, normalization=normalization)
        return clean(h, sh, weights)

    if close_scaled(out, expected(), 1e-5):
        fb.expect(True, "values")
    elif close_scaled(out, expected(normalize=False), 1e-5):
        fb.expect(False, "use the spherical harmonics of the direction r / |r|: o3.spherical_harmonics(..., "
                         "normalize=True); the length enters only through the radial weights")
    elif close_scaled(out, expected(normalization="integral"), 1e-5):
        fb.expect(False, "use normalization='component' for the spherical harmonics (|Y^l|^2 = 2l+1)")
    else:
        fb.expect(False, "wrong messages: expected self.tp(h, Y, w) with Y = o3.spherical_harmonics(irreps_sh, "
                         "edge_vec, normalize=True, normalization='component') and w = self.radial(self.rbf(|r|))")


def _check_edge_symmetries(fb: Feedback, m, out, h, edge_vec, irreps_in, irreps_out, seed: int) -> None:
    """O(3) equivariance of the messages, their dependence on the edge length, and on their own edge only."""
    elements = _elements(seed)
    for name in ("a random rotation", "a random reflection (det -1)"):
        err = I.irreps_equivariance_error(m, (h, edge_vec), (irreps_in, "1o"), irreps_out, elements[name])
        fb.expect(err < 1e-4, f"the messages are not equivariant under {name}: course_lib.irreps error {err:.2e} "
                  "(tolerance 1e-04); the weights may depend on |r| only and the harmonics on r / |r|",
                  ok=f"{name}: error {err:.1e}")
    longer = call_student(fb, m, (h, 1.3 * edge_vec), "forward(h, 1.3 * edge_vec)")
    fb.expect(isinstance(longer, torch.Tensor) and not close_scaled(longer, out, 1e-6),
              "the messages do not change when every edge gets 1.3 times longer: the weights must come from "
              "self.radial(self.rbf(|r|)), one weight vector per edge")
    perm = torch.randperm(h.shape[0], generator=rng(5000 + seed))
    permuted = call_student(fb, m, (h[perm], edge_vec[perm]), "forward on permuted edges")
    fb.expect(isinstance(permuted, torch.Tensor) and close_scaled(permuted, out[perm], 1e-5),
              "each message must depend on its own edge only (reordering the edges must reorder the messages)")


@exercise("06.radial_tensor_product", "A uvu tensor product with per-edge radial weights")
def check_radial_tensor_product(cls, fb: Feedback, seed: int = 0, config: int = 0, n_edges: int = 10,
                                expected=None) -> None:
    irreps_in, irreps_sh, irreps_out = (o3.Irreps(s) for s in TP_CONFIGS[config])
    m, tp, radial = _build_radial_tensor_product(cls, fb, seed, irreps_in, irreps_sh, irreps_out)
    _check_uvu_paths(fb, provider(expected), tp, irreps_in, irreps_sh, irreps_out)

    h, edge_vec = _edges(n_edges, irreps_in, seed)
    out = call_student(fb, m, (h.clone(), edge_vec.clone()),
                       f"forward(h, edge_vec) with h of shape {list(h.shape)} and "
                       f"edge_vec of shape {list(edge_vec.shape)}",
                       "the radial MLP takes self.rbf(edge_vec.norm(dim=-1)), of shape [E, num_basis]")
    expect_tensor(fb, out, "forward")
    fb.expect(tuple(out.shape) == (n_edges, irreps_out.dim), f"expected one message per edge, shape "
              f"[{n_edges}, {irreps_out.dim}], got {shape_of(out, brackets='[]')}", fatal=True)
    fb.expect(bool(torch.isfinite(out).all()), "the messages contain NaN or inf", fatal=True)

    _check_message_values(fb, m, tp, radial, out, h, edge_vec, irreps_sh)
    _check_edge_symmetries(fb, m, out, h, edge_vec, irreps_in, irreps_out, seed)


# --------------------------------------------------------------------------------------------
# 06.quadrupole_layer (design)
# --------------------------------------------------------------------------------------------

#: the parameter budget of a quadrupole layer that is an ``nn.Module`` (a plain function has none)
QUADRUPOLE_MAX_PARAMETERS = 2000
_IR_2E = o3.Irrep("2e")


def _quadrupole_structure(seed: int, n: int, cutoff: float = 1.6):
    from course_lib.neighbors import radius_graph

    g = rng(1000 + seed)
    pos = torch.rand(n, 3, generator=g, dtype=torch.float64) * (n ** (1 / 3)) * 1.1
    edge_index, _ = radius_graph(pos, cutoff)
    return pos, edge_index


def _quadrupole_run(fb: Feedback, fn, pos, edge_index, what: str, first: bool = False) -> torch.Tensor:
    out = call_student(fb, fn, (pos.clone(), edge_index.clone()), f"quadrupole_layer on {what}")
    n = pos.shape[0]
    ok = isinstance(out, torch.Tensor) and tuple(out.shape) == (n, 5)
    if first or not ok:
        expect_tensor(fb, out, "quadrupole_layer")
        fb.expect(ok, f"return the five 2e coefficients of every atom, shape ({n}, 5), on {what}; got "
                  f"{shape_of(out)} (a 3x3 matrix per atom? convert a symmetric traceless matrix S to its five "
                  "coefficients with the basis Q = sqrt(5) wigner_3j(1, 1, 2) of section 3)", fatal=True)
    out = out.detach().to(torch.float64)
    finite = bool(torch.isfinite(out).all())
    if first or not finite:
        fb.expect(finite, f"the output has NaN or inf on {what} (a division by a zero norm?)", fatal=True)
    return out


def _quadrupole_budget(fb: Feedback, layer) -> None:
    """The parameter budget (a bar), for a module (a function has no parameters)."""
    if not isinstance(layer, nn.Module):
        return
    count = sum(int(p.numel()) for p in layer.parameters())
    fb.expect(count <= QUADRUPOLE_MAX_PARAMETERS, f"over the budget: {count} parameters > {QUADRUPOLE_MAX_PARAMETERS}; "
              "a 2e feature needs few weights (a radial function of a few numbers)", ok=f"{count} parameters (budget "
              f"{QUADRUPOLE_MAX_PARAMETERS})", values=True)


def _quadrupole_symmetries(fb: Feedback, fn, pos, edge_index, out, seed: int) -> list[str]:
    """Record each required property; return the names (with errors) of those the layer breaks."""
    n, broken = pos.shape[0], []
    scale = max(1.0, float(out.abs().max()))
    tol = 1e-5 * scale
    R, M = random_rotation_and_reflection(seed + 1, seed + 1)
    rot = float((_quadrupole_run(fb, fn, pos @ R.T, edge_index, "a rotated structure")
                 - out @ I.wigner_D(_IR_2E, R).T).abs().max())
    fb.expect(rot <= tol, f"not rotation-equivariant as 2e: |f(R x) - D^2(R) f(x)| = {rot:.1e}. The five numbers "
              "must be the coefficients of an l = 2 irrep in e3nn's basis (o3.spherical_harmonics(2, ...) of the bond "
              "vectors, or Q contracted with a symmetric traceless matrix), not five entries of a 3x3 matrix",
              ok="rotation-equivariant (D^2)")
    broken += [] if rot <= tol else [f"rotation equivariance (error {rot:.1e})"]
    inverted = _quadrupole_run(fb, fn, -pos, edge_index, "the inverted structure (x -> -x)")
    even, odd = float((inverted - out).abs().max()), float((inverted + out).abs().max())
    why = ("it changes sign under the inversion: that is a 2o feature (odd parity), not 2e. Parities multiply: a "
           "product of two bond vectors (1o x 1o) is even, a cross product (1e) times one more bond vector is odd"
           if odd <= tol < even else "it has no definite parity under the inversion")
    fb.expect(even <= tol, f"wrong parity: {why} (|f(-x) - f(x)| = {even:.1e})", ok="even under the inversion (2e)")
    broken += [] if even <= tol else [f"parity (2e must not change under x -> -x; error {even:.1e})"]
    refl = float((_quadrupole_run(fb, fn, pos @ M.T, edge_index, "a reflected structure")
                  - out @ I.wigner_D(_IR_2E, M).T).abs().max())
    fb.expect(refl <= tol, f"not equivariant under a reflection as 2e (error {refl:.1e})", ok="reflection-equivariant")
    broken += [] if refl <= tol else [f"reflection equivariance (error {refl:.1e})"]
    t = torch.randn(3, generator=rng(seed + 7), dtype=torch.float64) * 3.0
    trans = float((_quadrupole_run(fb, fn, pos + t, edge_index, "a translated structure") - out).abs().max())
    fb.expect(trans <= tol, f"not translation invariant (error {trans:.1e}): use the bond vectors r_j - r_i, never "
              "the positions themselves", ok="translation invariant")
    broken += [] if trans <= tol else [f"translation invariance (error {trans:.1e})"]
    perm = torch.randperm(n, generator=rng(seed + 3))
    permuted = _quadrupole_run(fb, fn, pos[perm], torch.argsort(perm)[edge_index], "the atoms renumbered")
    ok_perm = bool(torch.allclose(permuted, out[perm], atol=tol, rtol=0))
    fb.expect(ok_perm, "not permutation equivariant: renumbering the atoms must renumber the rows (sum over the "
              "neighbours of each atom, do not use atom indices)", ok="permutation equivariant")
    broken += [] if ok_perm else ["permutation equivariance"]
    far = torch.cat([pos, torch.full((1, 3), 50.0, dtype=torch.float64)])
    ok_local = bool(torch.allclose(_quadrupole_run(fb, fn, far, edge_index, "one more, isolated atom")[:n], out,
                                   atol=tol, rtol=0))
    fb.expect(ok_local, "the feature of an atom changes when an atom that is in no edge is added: use only the pairs "
              "of edge_index", ok="local")
    return broken + ([] if ok_local else ["locality"])


@exercise("06.quadrupole_layer", "design: a 2e feature of each atom's neighbourhood")
def check_quadrupole_layer(fn, fb: Feedback, seed: int = 0, n: int = 8, expected=None) -> None:
    """A design exercise: the symmetries (rotation with D^2, even parity, translation, permutation, locality) are
    prerequisites; the bars are a nonzero 2e feature for every atom with a neighbour and the parameter budget.
    A layer that breaks a prerequisite scores 0 for the case (the feedback lists what it breaks, with the
    errors); one that has them all and misses the goal gets a fraction."""
    pos, edge_index = _quadrupole_structure(seed, n)
    out = _quadrupole_run(fb, fn, pos, edge_index, f"a random structure of {n} atoms", first=True)
    _quadrupole_budget(fb, fn)
    broken = _quadrupole_symmetries(fb, fn, pos, edge_index, out, seed)
    from course_lib.neighbors import radius_graph

    chain = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.1, 0.0], [1.3, 1.0, 0.2]], dtype=torch.float64)
    small = {}
    for what, (p, e) in {"the random structure": (pos, edge_index),
                         "a bent three-atom chain (each end atom has one neighbour)":
                         (chain, radius_graph(chain, 1.2)[0])}.items():
        o = out if p is pos else _quadrupole_run(fb, fn, p, e, what)
        has = torch.zeros(len(p), dtype=torch.bool)
        has[e[1]] = True
        norms = o.norm(dim=-1)
        zero = [int(k) for k in torch.nonzero(has & (norms <= 1e-8 * max(1.0, float(norms.max())))).flatten()]
        if zero:
            small[what] = zero
    fb.expect(not small, "the feature is zero for atoms that have neighbours ("
              + "; ".join(f"atoms {v} of {k}" for k, v in small.items()) + "): a 2e feature of an anisotropic "
              "neighbourhood must not vanish (a single bond already defines a quadrupole r r^T - |r|^2 I / 3). A "
              "constant zero has every symmetry and says nothing", ok="nonzero for every atom with a neighbour",
              values=True)
    fb.expect(not broken, f"the design breaks a required property ({'; '.join(broken)}): whatever else it does, a "
              "layer without them is not a solution, and this case scores 0", fatal=True,
              ok="has every required property")
