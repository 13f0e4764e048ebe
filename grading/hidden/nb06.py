"""Hidden tests of notebook 06 (irreps and tensor products).

Loaded by ``python -m course_lib.teaching.grading --hidden DIR``.

``HIDDEN[exercise_id](obj, fb)`` grades the student's object. Each test first runs the *public* checker
exactly as the notebook's self-check cell does, then the same checker with other seeds and sizes, then
extra cases the public check does not have: higher degrees l, float32, other irreps and multiplicities,
other hyperparameters of the module. Symmetry tests go through ``course_lib.symmetry`` (vectors,
pseudovectors) and ``course_lib.irreps`` (irreps features), so the feedback carries the error values.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from e3nn import o3
from torch_geometric.data import Data

from course_lib import irreps as I
from course_lib import symmetry as S
from course_lib.teaching.exercises import nb06 as public
from course_lib.teaching.exercises.common import expect_tensor
from course_lib.teaching.grading import run_cases

_spec = importlib.util.spec_from_file_location("_course_reference_nb06",
                                               Path(__file__).with_name("reference") / "nb06.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)
REF = {"expected": reference.compute}


def _scaled_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    diff = (out.detach().to(torch.float64) - ref.detach().to(torch.float64)).abs().max()
    return float(diff) / max(1.0, float(ref.abs().max()))


# --------------------------------------------------------------------------------------------
# 06.wigner_d_from_harmonics
# --------------------------------------------------------------------------------------------


def _wigner_extra(fn, fb, seed: int = 4) -> None:
    g = torch.Generator().manual_seed(40_000 + seed)
    A, B = S.random_orthogonal(3, det=-1, generator=g), S.random_orthogonal(3, det=-1, generator=g)
    for l in (1, 2):
        DA, DB, DAB, DAt = (fn(l, R.clone()) for R in (A, B, A @ B, A.T))
        expect_tensor(fb, DA, "wigner_d_from_harmonics")
        err = float((DA @ DB - DAB).abs().max())
        fb.expect(err < 1e-8, f"l = {l}: two reflections: |D(A) D(B) - D(AB)| = {err:.2e} (AB is a rotation)",
                  ok=f"l = {l}: product of reflections {err:.1e}")
        err_t = float((DAt - DA.T).abs().max())
        fb.expect(err_t < 1e-8, f"l = {l}: D(R^T) must be D(R)^T (D is orthogonal), error {err_t:.2e}")
    R64 = S.random_orthogonal(3, det=1, generator=g)
    R32 = R64.float()
    D32 = fn(2, R32)
    expect_tensor(fb, D32, "wigner_d_from_harmonics")
    fb.expect(D32.dtype == torch.float32, f"a float32 R must give a float32 D, got {D32.dtype}")
    err32 = _scaled_error(D32, I.wigner_D(o3.Irrep(2, 1), R64))  # R32 is R64 to float32 round-off
    fb.expect(err32 < 1e-4, f"float32 R, l = 2: D wrong by {err32:.2e}")
    eye = fn(3, torch.eye(3, dtype=torch.float64))
    fb.expect(isinstance(eye, torch.Tensor) and _scaled_error(eye, torch.eye(7, dtype=torch.float64)) < 1e-8,
              "the identity rotation must give the identity matrix (l = 3)")


def hidden_wigner_d_from_harmonics(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_wigner_d_from_harmonics, {}),
        ("hidden: seed=1", public.check_wigner_d_from_harmonics, {"seed": 1}),
        ("hidden: seed=2, l up to 5", public.check_wigner_d_from_harmonics, {"seed": 2, "lmax": 5}),
        ("hidden: products of reflections, transposes, float32", _wigner_extra, {}),
    ])


# --------------------------------------------------------------------------------------------
# 06.cross_product_from_cg
# --------------------------------------------------------------------------------------------


def _cross_extra(fn, fb, seed: int = 5) -> None:
    g = torch.Generator().manual_seed(50_000 + seed)
    a = 1e3 * torch.randn(40, 3, generator=g, dtype=torch.float64)
    b = 1e-2 * torch.randn(40, 3, generator=g, dtype=torch.float64)
    out = fn(a, b)
    expect_tensor(fb, out, "cross_product_from_cg")
    err = _scaled_error(out, torch.linalg.cross(a, b, dim=-1))
    fb.expect(err < 1e-10, f"inputs of very different sizes (|a| ~ 1e3, |b| ~ 1e-2): scaled error {err:.2e}")
    par = fn(a, 2.5 * a)
    fb.expect(isinstance(par, torch.Tensor) and float(par.abs().max()) < 1e-6 * float(a.abs().max()) ** 2,
              "parallel vectors must give a zero cross product")
    a4 = torch.randn(3, 2, 5, 3, generator=g).float()
    b4 = torch.randn(3, 2, 5, 3, generator=g).float()
    out4 = fn(a4, b4)
    fb.expect(isinstance(out4, torch.Tensor) and tuple(out4.shape) == (3, 2, 5, 3) and out4.dtype == torch.float32
              and _scaled_error(out4, torch.linalg.cross(a4, b4, dim=-1)) < 1e-5,
              "float32 inputs of shape [3, 2, 5, 3]: expected the float32 cross product of the same shape")
    data = Data(pos=a[:8].float(), a=a[:8].float() / 1e3, b=b[:8].float() * 1e2)
    kinds = {"a": "vector", "b": "vector"}
    for name, T in (("inversion", S.inversion(3)), ("reflection", S.reflection(3, g))):
        e = S.equivariance_error(lambda d: fn(d.a, d.b), data, T, output="pseudovector", field_kinds=kinds)
        fb.expect(e < S.default_tolerance(torch.float32), f"float32: not a pseudovector under {name}: course_lib."
                  f"symmetry error {e:.2e}", ok=f"float32 {name}: {e:.1e}")


def hidden_cross_product_from_cg(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_cross_product_from_cg, {}),
        ("hidden: seed=1, N=50", public.check_cross_product_from_cg, {"seed": 1, "n": 50}),
        ("hidden: seed=2, N=1", public.check_cross_product_from_cg, {"seed": 2, "n": 1}),
        ("hidden: scales, parallel vectors, float32 batches", _cross_extra, {}),
    ])


# --------------------------------------------------------------------------------------------
# 06.norm_activation
# --------------------------------------------------------------------------------------------


def _norm_extra(fn, fb, seed: int = 6) -> None:
    g = torch.Generator().manual_seed(60_000 + seed)
    for irreps_str, scale, dtype in (("8x1o", 30.0, torch.float64), ("3x0e + 2x1e + 1x4e + 2x0o", 1.0, torch.float32)):
        irreps = o3.Irreps(irreps_str)
        x = (scale * torch.randn(12, irreps.dim, generator=g, dtype=torch.float64)).to(dtype)
        out = fn(x.clone(), irreps)
        expect_tensor(fb, out, "norm_activation")
        fb.expect(tuple(out.shape) == tuple(x.shape), f"{irreps}: expected shape {list(x.shape)}, got "
                  f"{list(out.shape)}", fatal=True)
        fb.expect(out.dtype == dtype, f"{irreps}: {dtype} features must stay {dtype}, got {out.dtype}")
        err = _scaled_error(out, reference.norm_activation(x.double(), irreps))
        tol = 1e-10 if dtype == torch.float64 else 1e-5
        fb.expect(err < tol, f"{irreps} (features of size ~{scale:g}, {dtype}): wrong values, scaled error {err:.2e}")
        for name, R in (("rotation", S.random_orthogonal(3, det=1, generator=g)),
                        ("reflection", S.random_orthogonal(3, det=-1, generator=g))):
            e = I.irreps_equivariance_error(lambda v, ir=irreps: fn(v, ir), x, irreps, irreps, R)
            fb.expect(e < I.irreps_tolerance(dtype), f"{irreps}, {dtype}: not equivariant under a {name}: "
                      f"course_lib.irreps error {e:.2e}", ok=f"{irreps} {name}: {e:.1e}")


def hidden_norm_activation(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_norm_activation, {}),
        ("hidden: seed=1, N=20", public.check_norm_activation, {"seed": 1, "n": 20, **REF}),
        ("hidden: seed=2, other irreps", public.check_norm_activation,
         {"seed": 2, "irreps": "1x3o + 2x0o + 1x2e + 4x1e", **REF}),
        ("hidden: large features, l = 4, float32", _norm_extra, {}),
    ])


# --------------------------------------------------------------------------------------------
# 06.radial_tensor_product
# --------------------------------------------------------------------------------------------


def _radial_extra(cls, fb, seed: int = 7) -> None:
    """Other hyperparameters (num_basis, cutoff, hidden) and a single edge."""
    irreps_in, irreps_sh, irreps_out = "3x0e + 3x1o", "1x0e + 1x1o + 1x2e", "3x0e + 3x1o + 3x2e"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = cls(irreps_in, irreps_sh, irreps_out, num_basis=4, cutoff=2.0, hidden=8)
    tp = m.tp
    g = torch.Generator().manual_seed(70_000 + seed)
    h = torch.randn(6, tp.irreps_in1.dim, generator=g)
    r = torch.nn.functional.normalize(torch.randn(6, 3, generator=g), dim=-1) * (0.5 + torch.rand(6, 1, generator=g))
    with torch.no_grad():
        w = m.radial(m.rbf(r.norm(dim=-1)))
        fb.expect(tuple(w.shape) == (6, tp.weight_numel), f"num_basis=4, hidden=8: the radial MLP must map [E, 4] "
                  f"Gaussian features to [E, {tp.weight_numel}] weights, got {list(w.shape)}: use the arguments "
                  "num_basis and hidden, not fixed numbers", fatal=True)
        out = m(h, r)
        expect_tensor(fb, out, "forward")
        fb.expect(tuple(out.shape) == (6, tp.irreps_out.dim), f"expected [6, {tp.irreps_out.dim}], got "
                  f"{list(out.shape)}", fatal=True)
        one = m(h[:1], r[:1])
        fb.expect(isinstance(one, torch.Tensor) and _scaled_error(one, out[:1]) < 1e-5,
                  "a single edge must give the same message as inside a batch of edges")
        for name, R in (("rotation", S.random_orthogonal(3, det=1, generator=g)),
                        ("reflection", S.random_orthogonal(3, det=-1, generator=g))):
            e = I.irreps_equivariance_error(m, (h, r), (tp.irreps_in1, "1o"), tp.irreps_out, R)
            fb.expect(e < 1e-4, f"num_basis=4, cutoff=2: not equivariant under a {name}: course_lib.irreps error "
                      f"{e:.2e}", ok=f"{name}: {e:.1e}")


def hidden_radial_tensor_product(cls, fb) -> None:
    run_cases(fb, cls, [
        ("public check", public.check_radial_tensor_product, {}),
        ("hidden: l up to 3, pseudoscalar outputs", public.check_radial_tensor_product,
         {"seed": 1, "config": 1, "n_edges": 17, **REF}),
        ("hidden: an output block without uvu path", public.check_radial_tensor_product,
         {"seed": 2, "config": 2, "n_edges": 5, **REF}),
        ("hidden: num_basis=4, cutoff=2, hidden=8, one edge", _radial_extra, {}),
    ])


def hidden_quadrupole_layer(fn, fb) -> None:
    """A design exercise: the public check, then other structures (sizes, seeds); no reference output."""
    run_cases(fb, fn, [
        ("public check", public.check_quadrupole_layer, {}),
        ("hidden: seed=3, 14 atoms", public.check_quadrupole_layer, {"seed": 3, "n": 14}),
        ("hidden: seed=4, 5 atoms", public.check_quadrupole_layer, {"seed": 4, "n": 5}),
        ("hidden: seed=5, 24 atoms", public.check_quadrupole_layer, {"seed": 5, "n": 24}),
    ])


HIDDEN = {
    "06.wigner_d_from_harmonics": hidden_wigner_d_from_harmonics,
    "06.cross_product_from_cg": hidden_cross_product_from_cg,
    "06.norm_activation": hidden_norm_activation,
    "06.radial_tensor_product": hidden_radial_tensor_product,
    "06.quadrupole_layer": hidden_quadrupole_layer,
}
