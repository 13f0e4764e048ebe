"""Hidden tests of notebook 00 (symmetry primer), loaded by ``python -m course_lib.teaching.grading --hidden DIR``.

``HIDDEN[exercise_id](obj, fb)`` grades the student's function. Each test first runs the *public*
checker exactly as the notebook's self-check cell does (on its stored expected outputs: what a student
sees in Colab is part of what the grader says), then the same checker with other seeds and sizes (the
expected outputs computed by the reference solutions of ``reference/nb00.py``, which are not in the
installed package and whose answers to these cases are stored nowhere), then extra cases the public
check does not have: float32 inputs, explicit reflections (det -1) and inversions, larger clouds,
inputs far from the unit scale, other groups. Every symmetry test goes through
``course_lib.symmetry`` so the feedback carries the error values.

:func:`course_lib.teaching.grading.run_cases` runs each case with its own Feedback: all cases weigh the same
in the score, and a case that stops at a fatal failure or raises scores 0 without hiding the others.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import torch
from torch_geometric.data import Data

from course_lib import symmetry as S
from course_lib.teaching.exercises import nb00 as public
from course_lib.teaching.exercises.common import expect_tensor
from course_lib.teaching.grading import run_cases

_spec = importlib.util.spec_from_file_location("_course_reference_nb00",
                                               Path(__file__).with_name("reference") / "nb00.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)
REF = {"expected": reference.compute}

F32_TOL = S.default_tolerance(torch.float32)  # 1e-4 (scaled error, see course_lib.symmetry)
F64_TOL = 1e-9


def _cloud(n: int, d: int, seed: int, dtype=torch.float64, scale: float = 2.0) -> Data:
    g = torch.Generator().manual_seed(10_000 + seed)
    pos = (scale * torch.randn(n, d, generator=g, dtype=torch.float64)).to(dtype)
    return Data(pos=pos)


def _symmetries(data: Data, seed: int) -> dict[str, S.Transform]:
    """Transforms beyond the public check: other random elements, an explicit det -1 element, inversion."""
    d = data.pos.shape[1]
    g = torch.Generator().manual_seed(20_000 + seed)
    return {
        "rotation (another random one)": S.rotation(d, g),
        "reflection (det -1, another random one)": S.reflection(d, g),
        "inversion x -> -x": S.inversion(d),
        "translation by a large vector": S.translation(d, scale=50.0, generator=g),
        "permutation": S.permutation(data, g),
    }


# --------------------------------------------------------------------------------------------
# 00.pairwise_distances
# --------------------------------------------------------------------------------------------


def _pairwise_extra(fn, fb, seed: int = 3, n: int = 25) -> None:
    for dtype, tol in ((torch.float32, F32_TOL), (torch.float64, F64_TOL)):
        data = _cloud(n, 3, seed, dtype)
        out = fn(data.pos.clone())
        expect_tensor(fb, out, "pairwise_distances")
        fb.expect(tuple(out.shape) == (n, n), f"{dtype}: expected shape [{n}, {n}], got {list(out.shape)}",
                  fatal=True)
        fb.expect(out.dtype == dtype, f"{dtype} input: keep the dtype of pos, got {out.dtype}")
        ref = reference.pairwise_distances(data.pos.double())
        err = float((out.double() - ref).abs().max())
        fb.expect(err < 10 * tol * max(1.0, float(ref.max())),
                  f"{dtype}, N={n}: wrong distances, max |D - D_ref| = {err:.2e}")
        ii, jj = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        off = ii != jj
        data.edge_index = torch.stack([ii[off], jj[off]])

        def per_edge(d):
            return fn(d.pos)[d.edge_index[0], d.edge_index[1]]

        for name, T in _symmetries(data, seed).items():
            e = S.equivariance_error(per_edge, data, T, output="edge_scalar")
            fb.expect(e < 10 * tol, f"{dtype}: distances change under {name}: course_lib.symmetry error {e:.2e} "
                      f"(tolerance {10 * tol:.0e})", ok=f"{name}: {e:.1e}")


def hidden_pairwise_distances(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_pairwise_distances, {}),
        ("hidden: seed=1, N=12", public.check_pairwise_distances, {"seed": 1, "n": 12, **REF}),
        ("hidden: seed=2, N=40", public.check_pairwise_distances, {"seed": 2, "n": 40, **REF}),
        ("hidden: float32/float64, N=25, reflections", _pairwise_extra, {}),
    ])


# --------------------------------------------------------------------------------------------
# 00.symmetrize
# --------------------------------------------------------------------------------------------


def _symmetrize_extra(fn, fb, seed: int = 4) -> None:
    torch.manual_seed(seed)
    f = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    group = S.dihedral_group(6)  # 12 elements: 6 rotations and 6 reflections of the plane
    data = _cloud(9, 2, seed)
    with torch.no_grad():
        out = fn(f, data.pos.clone(), group)
        expect_tensor(fb, out, "symmetrize")
        fb.expect(tuple(out.shape) == (9, 3), f"D6 group: expected the shape of f(x), [9, 3], got {list(out.shape)}",
                  fatal=True)
        ref = reference.symmetrize(f, data.pos, group)
        err = float((out - ref).abs().max())
        fb.expect(err < 1e-9, f"D6 (12 elements, with reflections): wrong average, max error {err:.2e}: average over "
                  "every element of `group`, whatever its size")
        for k in (1, 7):  # a rotation by 60 degrees and a reflection (det -1)
            T = S.orthogonal(group[k])
            e = S.equivariance_error(lambda d: fn(f, d.pos, group), data, T, output="scalar")
            fb.expect(e < 1e-9, f"D6: not invariant under {T.name}: course_lib.symmetry error {e:.2e}")
        x32 = data.pos.float()
        g32 = [g.float() for g in group]
        f32 = copy.deepcopy(f).float()
        out32 = fn(f32, x32, g32)
        fb.expect(isinstance(out32, torch.Tensor) and out32.dtype == torch.float32,
                  "float32 points and group: the result must stay float32")


def hidden_symmetrize(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_symmetrize, {}),
        ("hidden: seed=1, N=20", public.check_symmetrize, {"seed": 1, "n": 20, **REF}),
        ("hidden: seed=2, N=3", public.check_symmetrize, {"seed": 2, "n": 3, **REF}),
        ("hidden: dihedral group D6, float32", _symmetrize_extra, {}),
    ])


# --------------------------------------------------------------------------------------------
# 00.radial_field
# --------------------------------------------------------------------------------------------


def _radial_extra(fn, fb, seed: int = 5, n: int = 30) -> None:
    torch.manual_seed(seed)
    phi = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1)).double()
    with torch.no_grad():
        for dtype, tol in ((torch.float64, F64_TOL), (torch.float32, F32_TOL)):
            phi_t = copy.deepcopy(phi).to(dtype)
            data = _cloud(n, 3, seed, dtype)
            out = fn(data.pos.clone(), phi_t)
            expect_tensor(fb, out, "radial_field")
            fb.expect(tuple(out.shape) == (n, 3), f"{dtype}, N={n}: expected shape [{n}, 3], got {list(out.shape)}",
                      fatal=True)
            ref = reference.radial_field(data.pos.double(), phi)
            err = float((out.double() - ref).abs().max()) / max(1.0, float(ref.abs().max()))
            fb.expect(err < 10 * tol, f"{dtype}, N={n}: wrong field, scaled max error {err:.2e}")
            for name, T in _symmetries(data, seed).items():
                e = S.equivariance_error(lambda d, p=phi_t: fn(d.pos, p), data, T, output="vector")
                fb.expect(e < 10 * tol, f"{dtype}: not equivariant under {name}: course_lib.symmetry error {e:.2e} "
                          f"(tolerance {10 * tol:.0e})", ok=f"{name}: {e:.1e}")


def hidden_radial_field(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_radial_field, {}),
        ("hidden: seed=1, N=15", public.check_radial_field, {"seed": 1, "n": 15, **REF}),
        ("hidden: seed=2, N=2", public.check_radial_field, {"seed": 2, "n": 2, **REF}),
        ("hidden: N=30, float32, reflections", _radial_extra, {}),
    ])


# --------------------------------------------------------------------------------------------
# 00.gated_nonlinearity
# --------------------------------------------------------------------------------------------


def _gated_extra(fn, fb, seed: int = 6, n: int = 64, channels: int = 8, scale: float = 1.0,
                 dtype=torch.float64) -> None:
    g = torch.Generator().manual_seed(30_000 + seed)
    s = torch.randn(n, channels, generator=g, dtype=torch.float64)
    v = scale * torch.randn(n, channels, 3, generator=g, dtype=torch.float64)
    tol = F32_TOL if dtype == torch.float32 else F64_TOL
    data = Data(pos=torch.randn(n, 3, generator=g, dtype=torch.float64).to(dtype), s=s.to(dtype), v=v.to(dtype))
    out = fn(data.s.clone(), data.v.clone())
    expect_tensor(fb, out, "gated_nonlinearity")
    fb.expect(tuple(out.shape) == (n, channels, 3), f"expected shape [{n}, {channels}, 3], got {list(out.shape)}",
              fatal=True)
    fb.expect(out.dtype == dtype, f"{dtype} inputs: keep the dtype, got {out.dtype}")
    for name, T in _symmetries(data, seed).items():
        if name.startswith("translation"):
            continue
        e = S.equivariance_error(lambda d: fn(d.s, d.v), data, T, output="vector", field_kinds={"s": "scalar",
                                                                                                "v": "vector"})
        fb.expect(e < 10 * tol, f"not equivariant under {name}: course_lib.symmetry error {e:.2e} "
                  f"(tolerance {10 * tol:.0e}); scale each vector by its scalar gate only: clamping, ReLU or "
                  "any function of the x, y, z components breaks rotations", ok=f"{name}: {e:.1e}")
    ref = reference.gated_nonlinearity(data.s.double(), data.v.double())
    err = float((out.double() - ref).abs().max()) / max(1.0, float(ref.abs().max()))
    fb.expect(err < 10 * tol, f"wrong values, scaled max error {err:.2e} (expected "
              "sigmoid(scalars)[..., None] * vectors, for vectors of any size)")


def hidden_gated_nonlinearity(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_gated_nonlinearity, {}),
        ("hidden: seed=1, N=64, C=8", public.check_gated_nonlinearity, {"seed": 1, "n": 64, "channels": 8, **REF}),
        ("hidden: seed=2, N=1, C=1", public.check_gated_nonlinearity, {"seed": 2, "n": 1, "channels": 1, **REF}),
        ("hidden: vectors of size ~10, N=64, C=8", _gated_extra, {"scale": 10.0}),
        ("hidden: float32, N=64, C=8", _gated_extra, {"dtype": torch.float32}),
    ])


HIDDEN = {
    "00.pairwise_distances": hidden_pairwise_distances,
    "00.symmetrize": hidden_symmetrize,
    "00.radial_field": hidden_radial_field,
    "00.gated_nonlinearity": hidden_gated_nonlinearity,
}
