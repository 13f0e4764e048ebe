"""Notebook 00 (symmetry primer): checkers of the exercises.

Exercises (id, points):

- ``00.pairwise_distances`` (1): ``pairwise_distances(pos [N, d]) -> [N, N]`` without ``torch.cdist``.
- ``00.symmetrize`` (2): ``symmetrize(f, x, group)``: the group average ``mean_g f(x g^T)``.
- ``00.radial_field`` (2): ``radial_field(pos, phi) -> [N, d]``: ``sum_j phi(|x_ij|) x_ij``.
- ``00.gated_nonlinearity`` (2): ``gated_nonlinearity(scalars [N, C], vectors [N, C, 3])``.

No reference solution is here: the values a correct solution (and each known mistake) gives on the
checker's inputs come from the checker's ``expected`` provider (stored outputs in the notebook, see
:mod:`course_lib.teaching.exercises.stored`; the reference itself in the hidden tests). Every symmetry
test goes through :mod:`course_lib.symmetry`, with fixed seeds, so the feedback is deterministic.
"""

from __future__ import annotations

import torch
from torch_geometric.data import Data

from course_lib import symmetry as S
from course_lib.teaching.checks import Feedback, exercise
from course_lib.teaching.exercises.common import call_student, close, expect_tensor, shape_of, source_of
from course_lib.teaching.exercises.stored import provider

__all__ = [
    "check_pairwise_distances",
    "check_symmetrize",
    "check_radial_field",
    "check_gated_nonlinearity",
]


# --------------------------------------------------------------------------------------------
# Helpers of the checkers
# --------------------------------------------------------------------------------------------


def _mlp(d_in: int, d_out: int, seed: int) -> torch.nn.Module:
    """A small seeded MLP (float64); the global RNG state of the notebook is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(d_in, 16), torch.nn.Tanh(), torch.nn.Linear(16, d_out))
    return net.double()


def _cloud(n: int, d: int, seed: int, dtype=torch.float64) -> Data:
    g = torch.Generator().manual_seed(seed)
    pos = (2.0 * torch.randn(n, d, generator=g, dtype=torch.float64)).to(dtype)
    charge = (torch.randint(0, 2, (n,), generator=g) * 2 - 1).to(dtype)
    return Data(pos=pos, charge=charge)


_SYMMETRY_HINT = {
    "translation": "use only differences pos_i - pos_j, never the absolute positions",
    "rotation": "multiply difference vectors by scalar weights only; a function applied to each "
                "component (ReLU, abs, a Linear layer on the xyz axis) does not commute with rotations",
    "reflection": "multiply difference vectors by scalar weights only; cross products and "
                  "component-wise functions do not commute with reflections",
    "permutation": "sum over all neighbours j and treat every node alike (no special node 0)",
}


# --------------------------------------------------------------------------------------------
# 00.pairwise_distances
# --------------------------------------------------------------------------------------------


@exercise("00.pairwise_distances", "Pairwise distances with broadcasting")
def check_pairwise_distances(fn, fb: Feedback, seed: int = 0, n: int = 6, expected=None) -> None:
    want = provider(expected)
    data = _cloud(n, 3, seed)
    ref = want("00.pairwise_distances", "values", data.pos)
    pos = data.pos.clone()
    out = call_student(fb, fn, (pos,), f"pairwise_distances(pos) with pos of shape [{n}, 3]")
    expect_tensor(fb, out, "pairwise_distances")
    fb.expect(torch.equal(pos, data.pos), "pairwise_distances modified its input pos in place; "
              "compute new tensors instead (e.g. diff = pos[:, None, :] - pos[None, :, :])")
    if tuple(out.shape) == (n, n, 3):
        hint = "these are the difference vectors: take their length over the last axis"
    elif tuple(out.shape) == (n * (n - 1) // 2,):
        hint = "this is the condensed list of pairs i < j: return the full square matrix"
    else:
        hint = "broadcast pos[:, None, :] - pos[None, :, :] to [N, N, d] and reduce the last axis"
    fb.expect(tuple(out.shape) == (n, n), f"expected shape [{n}, {n}] (one distance per pair of points) "
              f"for pos of shape [{n}, 3], got {shape_of(out, brackets='[]')}: {hint}", fatal=True)
    fb.expect(bool(torch.isfinite(out).all()), "the distances contain NaN or inf: the diagonal must be 0 "
              "(do not mask it with inf), and if you expand |a|^2 + |b|^2 - 2 a.b, round-off makes tiny "
              "negative values: compute the differences directly or clamp(min=0) before the square root",
              fatal=True)
    fb.expect(out.dtype == pos.dtype, f"keep the dtype of pos ({pos.dtype}), got {out.dtype}")
    diag = float(out.diagonal().abs().max())
    fb.expect(diag < 1e-6, f"the diagonal must be exactly 0 (the distance of a point to itself), got "
              f"max |D[i, i]| = {diag:.3g}: do not fill it with another value, and avoid the "
              "|a|^2 + |b|^2 - 2 a.b expansion whose round-off leaves small non-zero values")
    asym = float((out - out.T).abs().max())
    fb.expect(asym < 1e-6, f"D must be symmetric (D[i, j] = D[j, i]), but max |D - D^T| = {asym:.3g}: "
              "fill every pair (i, j), not only i < j")
    fb.expect(bool((out >= 0).all()), "distances must be non-negative: take the length of each "
                                      "difference vector, not a signed sum of its components")

    # invariance, measured with the course's symmetry API: one distance per ordered pair (edge)
    ii, jj = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    off = ii != jj
    data.edge_index = torch.stack([ii[off], jj[off]])

    def per_edge(d):
        return fn(d.pos)[d.edge_index[0], d.edge_index[1]]

    for name, T in S.standard_transforms(data, generator=seed + 1).items():
        err = S.equivariance_error(per_edge, data, T, output="edge_scalar")
        fb.expect(err < 1e-9, f"distances must not change under {name} (course_lib.symmetry error "
                  f"{err:.2e} > 1e-09): {_SYMMETRY_HINT[name]}", ok=f"{name}: error {err:.1e}")

    if close(out, ref, atol=1e-7, rtol=1e-7):
        fb.expect(True, "values", values=True)
        pos2 = _cloud(n - 1, 2, seed + 2, dtype=torch.float32).pos
        ref2 = want("00.pairwise_distances", "values", pos2)
        out2 = call_student(fb, fn, (pos2.clone(),), "pairwise_distances(pos) with 2D points (pos of shape "
                            f"[{n - 1}, 2])", "do not hard-code the dimension 3")
        fb.expect(isinstance(out2, torch.Tensor) and close(out2, ref2, atol=1e-5, rtol=1e-5),
                  "wrong result for 2D points in float32: do not hard-code the dimension d = 3 or the dtype",
                  values=True)
    elif close(out, ref**2, atol=1e-7, rtol=1e-7):
        fb.expect(False, "these are squared distances: take the square root (.sqrt())", values=True)
    else:
        k = int((out.to(ref.dtype) - ref).abs().argmax())
        i, j = divmod(k, n)
        fb.expect(False, f"wrong values: D[{i}, {j}] should be |pos[{i}] - pos[{j}]| = {float(ref[i, j]):.4f}, "
                  f"you returned {float(out[i, j]):.4f} (the Euclidean norm over the coordinate axis)", values=True)
    fb.expect("cdist" not in source_of(fn), "the exercise asks for broadcasting, not torch.cdist: "
              "subtract pos[None, :, :] from pos[:, None, :] and reduce the last axis")


# --------------------------------------------------------------------------------------------
# 00.symmetrize
# --------------------------------------------------------------------------------------------


def _z2(d: int, dtype=torch.float64) -> list[torch.Tensor]:
    eye = torch.eye(d, dtype=dtype)
    return [eye, -eye]


@exercise("00.symmetrize", "Symmetrization by group averaging")
def check_symmetrize(fn, fb: Feedback, seed: int = 0, n: int = 7, expected=None) -> None:
    want = provider(expected)
    f = _mlp(3, 2, seed)
    data = _cloud(n, 3, seed)
    x = data.pos.clone()
    group = _z2(3)
    ref = want("00.symmetrize", "values", f, data.pos, group)
    with torch.no_grad():
        out = call_student(fb, fn, (f, x, group), f"symmetrize(f, x, Z2) with x of shape [{n}, 3] and f: "
                           f"[{n}, 3] -> [{n}, 2]")
        expect_tensor(fb, out, "symmetrize")
        fb.expect(torch.equal(x, data.pos), "symmetrize modified x in place; build the transformed "
                  "inputs as new tensors (x @ g.T)")
        shape = tuple(f(x).shape)
        extra = (" (you stacked the |G| outputs: take the mean over that axis)"
                 if tuple(out.shape) == (len(group), *shape) else "")
        fb.expect(tuple(out.shape) == shape, f"the result must have the shape of f(x), {list(shape)}, "
                  f"got {shape_of(out, brackets='[]')}{extra}", fatal=True)

        def sym(d):
            return fn(f, d.pos, group)

        err = S.equivariance_error(sym, data, S.inversion(3), output="scalar")
        fb.expect(err < 1e-9, f"symmetrize(f, x, Z2) is not invariant under x -> -x (course_lib.symmetry "
                  f"error {err:.2e} > 1e-09): evaluate f on g x for every element g of the group and "
                  "average the results", ok=f"Z2: error {err:.1e}")

        if close(out, ref, atol=1e-7, rtol=1e-7):
            fb.expect(True, "values", values=True)
        elif close(out, 2 * ref, atol=1e-7, rtol=1e-7):
            fb.expect(False, "you returned the sum f(x) + f(-x); divide by len(group): the group "
                             "*average* leaves an already invariant function unchanged", values=True)
        elif close(out, f(data.pos), atol=1e-7, rtol=1e-7):
            fb.expect(False, "you returned f(x) unchanged; average f over the transformed inputs", values=True)
        else:
            fb.expect(False, "wrong values: expected the average of f(x @ g.T) over the elements g of the "
                             "group, i.e. (f(x) + f(-x)) / 2 for Z2 (apply g to the input x, not to f(x))",
                      values=True)

        # an already invariant function must be left unchanged (the average is a projection)
        f_even = lambda y: (y**2).sum(dim=-1, keepdim=True)
        out_even = call_student(fb, fn, (f_even, x, group), "symmetrize(f_even, x, Z2)")
        fb.expect(isinstance(out_even, torch.Tensor) and close(out_even, f_even(x), atol=1e-7, rtol=1e-7),
                  "symmetrizing an even function (f(-x) = f(x)) must return f(x) unchanged")

        # the group argument must be used: C4 in 2D and the 48-element cubic group in 3D
        for gname, grp, dim, tname in (("C4 (2D rotations by 90 degrees)", S.cyclic_group(4), 2,
                                        "the rotation by 90 degrees"),
                                       ("the cubic point group (48 elements)", S.lattice_point_group(3), 3,
                                        "a cubic symmetry")):
            f2 = _mlp(dim, 1, seed + dim)
            data2 = _cloud(5, dim, seed + 10 + dim)
            ref2 = want("00.symmetrize", "values", f2, data2.pos, grp)
            out2 = call_student(fb, fn, (f2, data2.pos.clone(), grp), f"symmetrize(f, x, group) with group = {gname}")
            if not fb.expect(isinstance(out2, torch.Tensor) and close(out2, ref2, atol=1e-7, rtol=1e-7),
                             f"wrong result for group = {gname}: loop over *all* elements of `group` "
                             "(not only x and -x) and divide by len(group)", values=True):
                continue
            T = S.orthogonal(grp[1]) if dim == 2 else S.box_symmetry(3, "rot90")
            err = S.equivariance_error(lambda d, f2=f2, grp=grp: fn(f2, d.pos, grp), data2, T, output="scalar")
            fb.expect(err < 1e-9, f"not invariant under {tname} for group = {gname} (error {err:.2e})")


# --------------------------------------------------------------------------------------------
# 00.radial_field
# --------------------------------------------------------------------------------------------


def _gauss(r: torch.Tensor) -> torch.Tensor:
    """phi(r) = exp(-r^2), the radial weight of the 2D case."""
    return torch.exp(-(r**2))


@exercise("00.radial_field", "An E(3)-equivariant radial vector field")
def check_radial_field(fn, fb: Feedback, seed: int = 0, n: int = 7, expected=None) -> None:
    want = provider(expected)
    phi = _mlp(1, 1, seed)
    data = _cloud(n, 3, seed)
    ref = want("00.radial_field", "values", data.pos, phi)
    squared = want("00.radial_field", "phi of r squared", data.pos, phi)
    pos2 = data.pos[:5, :2].float()
    ref2 = want("00.radial_field", "values", pos2, _gauss)
    pos = data.pos.clone()
    with torch.no_grad():
        out = call_student(fb, fn, (pos, phi), f"radial_field(pos, phi) with pos of shape [{n}, 3] and phi an MLP "
                           "mapping [..., 1] -> [..., 1]",
                           "phi expects distances with a trailing axis of size 1: use "
                           "(diff**2).sum(dim=-1, keepdim=True).sqrt()")
        expect_tensor(fb, out, "radial_field")
        fb.expect(torch.equal(pos, data.pos), "radial_field modified pos in place")
        hint = (": sum over the neighbours j (axis 1)" if tuple(out.shape) == (n, n, 3) else "")
        fb.expect(tuple(out.shape) == (n, 3), f"expected one vector per node, shape [{n}, 3], got "
                  f"{shape_of(out, brackets='[]')}{hint}", fatal=True)
        fb.expect(bool(torch.isfinite(out).all()), "the output contains NaN or inf: do not divide by the "
                  "distance (it is 0 for j = i); the field is phi(|x_ij|) * x_ij", fatal=True)
        fb.expect(bool(out.abs().max() > 1e-6), "the output is all zeros: v_i = sum_j phi(|x_ij|) x_ij")

        def field(d):
            return fn(d.pos, phi)

        errors = {}
        for name, T in S.standard_transforms(data, generator=seed + 1).items():
            err = S.equivariance_error(field, data, T, output="vector")
            errors[name] = err
            fb.expect(err < 1e-9, f"not equivariant under {name}: course_lib.symmetry error {err:.2e} "
                      f"(tolerance 1e-09); {_SYMMETRY_HINT[name]}", ok=f"{name}: error {err:.1e}")

        if close(out, ref, atol=1e-7, rtol=1e-7):
            fb.expect(True, "values", values=True)
        elif close(out, -ref, atol=1e-7, rtol=1e-7):
            fb.expect(False, "your vectors point the wrong way: use x_ij = pos_i - pos_j "
                             "(from neighbour j to node i)", values=True)
        elif close(out, squared, atol=1e-7, rtol=1e-7):
            fb.expect(False, "phi must receive the distance |x_ij|, not its square", values=True)
        elif all(e < 1e-9 for e in errors.values()):
            fb.expect(False, "equivariant, but not the requested field: v_i = sum_j phi(|x_ij|) "
                             "(pos_i - pos_j), with phi applied to distances of shape [N, N, 1]", values=True)
        else:
            fb.expect(False, "wrong values: expected v_i = sum_j phi(|x_ij|) (pos_i - pos_j)", values=True)

        if not close(out, ref, atol=1e-7, rtol=1e-7):
            return
        out2 = call_student(fb, fn, (pos2.clone(), _gauss),
                            "radial_field(pos, phi) with 2D float32 points and phi(r) = exp(-r^2)")
        fb.expect(isinstance(out2, torch.Tensor) and close(out2, ref2, atol=1e-5, rtol=1e-5),
                  "wrong result for 2D points and phi(r) = exp(-r^2): do not hard-code d = 3", values=True)


# --------------------------------------------------------------------------------------------
# 00.gated_nonlinearity
# --------------------------------------------------------------------------------------------


@exercise("00.gated_nonlinearity", "A gated nonlinearity for vector features")
def check_gated_nonlinearity(fn, fb: Feedback, seed: int = 0, n: int = 5, channels: int = 4,
                             expected=None) -> None:
    want = provider(expected)
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, channels, generator=g, dtype=torch.float64)
    v = torch.randn(n, channels, 3, generator=g, dtype=torch.float64)
    s0, v0 = s.clone(), v.clone()
    ref = want("00.gated_nonlinearity", "values", s0, v0)
    norm_gate = want("00.gated_nonlinearity", "norm gate", s0, v0)
    relu_gate = want("00.gated_nonlinearity", "relu gate", s0, v0)
    out = call_student(fb, fn, (s, v), f"gated_nonlinearity(scalars, vectors) with scalars of shape [{n}, {channels}] "
                       f"and vectors of shape [{n}, {channels}, 3]",
                       "the gate has shape [N, C] and the vectors [N, C, 3]: give the gate a trailing axis with "
                       "gate[..., None] (or .unsqueeze(-1)) so that it broadcasts over the 3 components")
    expect_tensor(fb, out, "gated_nonlinearity")
    fb.expect(torch.equal(s, s0) and torch.equal(v, v0), "gated_nonlinearity modified its inputs in place "
              "(e.g. sigmoid_ or *=); return a new tensor")
    fb.expect(tuple(out.shape) == (n, channels, 3), f"expected the shape of the vectors, [{n}, {channels}, 3], "
              f"got {shape_of(out, brackets='[]')}", fatal=True)
    fb.expect(not close(out, v, atol=1e-7, rtol=1e-7), "the output equals the input vectors: multiply them by the gate "
                                  "sigmoid(scalars)")

    data = Data(pos=torch.randn(n, 3, generator=g, dtype=torch.float64), s=s, v=v)
    kinds = {"s": "scalar", "v": "vector"}

    def gate(d):
        return fn(d.s, d.v)

    for name, T in S.standard_transforms(data, generator=seed + 1).items():
        err = S.equivariance_error(gate, data, T, output="vector", field_kinds=kinds)
        fb.expect(err < 1e-9, f"not equivariant under {name}: course_lib.symmetry error {err:.2e} "
                  "(tolerance 1e-09); multiply each vector by a scalar gate: a function applied to the "
                  "x, y, z components (ReLU, tanh, ...) does not commute with rotations and reflections",
                  ok=f"{name}: error {err:.1e}")

    out_s = call_student(fb, fn, (s + 1.0, v), "gated_nonlinearity(scalars + 1, vectors)")
    uses_s = isinstance(out_s, torch.Tensor) and not close(out_s, out, atol=1e-7, rtol=1e-7)
    if close(out, ref, atol=1e-7, rtol=1e-7):
        fb.expect(True, "values", values=True)
    elif close(out, norm_gate, atol=1e-7, rtol=1e-7):
        fb.expect(False, "you gated each vector with sigmoid of its own norm: that is a norm nonlinearity "
                         "(also equivariant); here the gate of channel c comes from the scalars: "
                         "sigmoid(scalars[:, c])", values=True)
    elif not uses_s:
        fb.expect(False, "the output does not depend on the scalars: the gate of channel c must be "
                         "sigmoid(scalars[:, c]), multiplied onto vectors[:, c, :]", values=True)
    elif close(out, relu_gate, atol=1e-7, rtol=1e-7):
        fb.expect(False, "use the sigmoid as gate (the exercise asks for sigmoid(scalars)), not ReLU", values=True)
    else:
        fb.expect(False, "wrong values: expected the vectors of channel c scaled by the gate of scalar c "
                         "(a sigmoid of scalars[:, c])", values=True)
