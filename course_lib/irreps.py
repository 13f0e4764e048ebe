"""Symmetry checks for functions of e3nn irreps features (the O(3) counterpart of :mod:`course_lib.symmetry`).

:mod:`course_lib.symmetry` transforms graphs field by field (positions, vectors, scalars). Features of
equivariant networks built with e3nn are different: a feature vector of type ``irreps`` (for instance
``"4x0e + 2x1o + 1x2e"``, dimension 4 + 6 + 5 = 15) transforms under an element ``R`` of O(3) by the
block-diagonal Wigner-D matrix ``D(R) = irreps.D_from_matrix(R)``: ``x -> x @ D(R)^T``. This module
measures the error of a function of such features,

    error = max |f(D_in(R) x) - D_out(R) f(x)| / max(1, max |D_out(R) f(x)|),

with the same scaling as :func:`course_lib.symmetry.equivariance_error`, and turns it into the same
deterministic pass/fail lines (``"rotation: OK (err < 1e-04)"``) for notebook cells.

Cartesian vectors are the irreps ``"1o"``: e3nn orders the three components of ``l = 1`` as
``(x, y, z)``, so ``Irreps("1o").D_from_matrix(R)`` is ``R`` itself (checked for the installed version
in ``tests/test_irreps.py``). A pseudovector (a cross product) is ``"1e"``, a pseudoscalar (a signed
volume) ``"0o"``.

Precision: e3nn builds the generators of its Wigner-D matrices in torch's *default* dtype, so under the
usual float32 default ``D_from_matrix`` is only accurate to about 1e-6, even for a float64 ``R``.
:func:`wigner_D` switches the default dtype to float64 for the call: its matrices are exact to ~1e-14,
and the tolerances are those of :mod:`course_lib.symmetry` (1e-9 for float64 results, 1e-4 for float32).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = [
    "as_irreps",
    "wigner_D",
    "transform_features",
    "irreps_tolerance",
    "irreps_equivariance_error",
    "assert_irreps_equivariant",
    "assert_irreps_not_equivariant",
]


def as_irreps(irreps):
    """An ``e3nn.o3.Irreps`` from a string (``"2x0e + 1x1o"``), an ``Irrep``, or an ``Irreps``."""
    from e3nn import o3

    if isinstance(irreps, o3.Irreps):
        return irreps
    if isinstance(irreps, (str, o3.Irrep)):
        return o3.Irreps(irreps)
    raise ValueError(f"expected irreps as a string such as '2x0e + 1x1o' or an e3nn Irreps, got "
                     f"{type(irreps).__name__}")


def _orthogonal_3x3(R) -> torch.Tensor:
    R = torch.as_tensor(R, dtype=torch.float64)
    if R.shape != (3, 3):
        raise ValueError(f"R must be a 3x3 matrix (an element of O(3)), got shape {tuple(R.shape)}")
    if not torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-9):
        raise ValueError("R is not orthogonal (R R^T != I): build it with course_lib.symmetry.random_orthogonal, "
                         "rotation_matrix_3d or reflection_matrix")
    return R


def wigner_D(irreps, R) -> torch.Tensor:
    """The matrix ``D(R)`` of an O(3) element ``R [3, 3]`` on features of type ``irreps``, float64 ``[dim, dim]``.

    Block diagonal, one ``(2l+1) x (2l+1)`` block per copy of each irrep; for ``det R = -1`` the block
    of an irrep of parity ``p`` is multiplied by ``p`` (``e``: +1, ``o``: -1), on top of the rotation
    part ``-R``. ``Irreps.D_from_matrix`` computed in float64 (exact to ~1e-14), with checks of ``R``.
    """
    irreps = as_irreps(irreps)
    R = _orthogonal_3x3(R)
    if irreps.dim == 0:
        return torch.zeros(0, 0, dtype=torch.float64)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn's generators follow the default dtype (see the module notes)
    try:
        return irreps.D_from_matrix(R)
    finally:
        torch.set_default_dtype(old)


def transform_features(x: torch.Tensor, irreps, R) -> torch.Tensor:
    """Act with ``R`` on features ``x [..., irreps.dim]``: returns ``x @ D(R)^T`` in float64."""
    irreps = as_irreps(irreps)
    if x.shape[-1] != irreps.dim:
        raise ValueError(f"features of type {irreps} need a last axis of size {irreps.dim}, got shape "
                         f"{tuple(x.shape)}")
    return x.to(torch.float64) @ wigner_D(irreps, R).to(x.device).T


def irreps_tolerance(dtype: torch.dtype) -> float:
    """Default tolerance of the scaled error for results in ``dtype``: that of :mod:`course_lib.symmetry`."""
    from course_lib.symmetry import default_tolerance

    return default_tolerance(dtype)


def _as_tuple(x) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _irreps_per_item(irreps, n: int, what: str) -> list:
    from e3nn import o3

    single = irreps is None or isinstance(irreps, (str, o3.Irreps, o3.Irrep))  # Irreps and Irrep are tuples
    items = [irreps] if single else list(irreps)
    if len(items) != n:
        raise ValueError(f"{what}: got {n} tensor(s) but {len(items)} irreps; give one irreps per tensor "
                         "(None for an invariant tensor such as per-edge weights)")
    return [None if ir is None else as_irreps(ir) for ir in items]


def _transform(x: torch.Tensor, irreps, R) -> torch.Tensor:
    if irreps is None:
        return x
    y = transform_features(x, irreps, R)
    return y.to(x.dtype) if x.is_floating_point() else y


def _error_and_dtype(fn, inputs, irreps_in, irreps_out, R) -> tuple[float, torch.dtype]:
    R = _orthogonal_3x3(R)
    inputs = _as_tuple(inputs)
    ins = _irreps_per_item(irreps_in, len(inputs), "inputs")
    for x, ir in zip(inputs, ins):
        if ir is not None and x.shape[-1] != ir.dim:
            raise ValueError(f"an input of type {ir} needs a last axis of size {ir.dim}, got shape {tuple(x.shape)}")
    f_x = _as_tuple(fn(*inputs))
    f_gx = _as_tuple(fn(*[_transform(x, ir, R) for x, ir in zip(inputs, ins)]))
    outs = _irreps_per_item(irreps_out, len(f_x), "outputs")
    err, dtype = 0.0, None
    for ref, got, ir in zip(f_x, f_gx, outs):
        if ir is not None and ref.shape[-1] != ir.dim:
            raise ValueError(f"fn returned shape {tuple(ref.shape)} for an output declared as {ir} "
                             f"(dimension {ir.dim}): check irreps_out")
        if got.shape != ref.shape:
            raise ValueError(f"fn returned shape {tuple(got.shape)} for the transformed input but {tuple(ref.shape)} "
                             "for the original one")
        expected = ref.detach().to(torch.float64) if ir is None else transform_features(ref.detach(), ir, R)
        diff = got.detach().to(torch.float64) - expected
        scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
        e = float(diff.abs().max()) / scale if diff.numel() else 0.0
        err = e if (e != e or e > err) else err  # keeps NaN
        if ref.is_floating_point():
            eps = torch.finfo(ref.dtype).eps
            dtype = ref.dtype if dtype is None or eps > torch.finfo(dtype).eps else dtype
    return err, (dtype or torch.float64)


def irreps_equivariance_error(
    fn: Callable,
    inputs,
    irreps_in,
    irreps_out,
    R,
) -> float:
    """The scaled error of ``fn`` under the O(3) element ``R``: ``fn(D_in x)`` against ``D_out fn(x)``.

    ``inputs``: a tensor ``[..., irreps_in.dim]`` or a tuple of tensors, passed as ``fn(*inputs)``.
    ``irreps_in``: the irreps of each input (one per tensor; a string, an ``Irreps``, or None for a
    tensor that does not transform, e.g. per-edge weights or atom types). Cartesian vectors and
    positions (without translations) are ``"1o"``. ``irreps_out``: the same for the output(s).
    ``R``: a ``[3, 3]`` orthogonal matrix, rotation (det +1) or improper (det -1). Returns a float.
    """
    return _error_and_dtype(fn, inputs, irreps_in, irreps_out, R)[0]


def _label(R, name: str | None) -> str:
    if name:
        return name
    return "rotation" if float(torch.linalg.det(_orthogonal_3x3(R))) > 0 else "reflection"


def assert_irreps_equivariant(
    fn: Callable,
    inputs,
    irreps_in,
    irreps_out,
    R,
    tol: float | None = None,
    name: str | None = None,
) -> str:
    """Assert that ``fn`` is equivariant under ``R``; return a deterministic line ``"name: OK (err < 1e-04)"``.

    The tolerance defaults to :func:`irreps_tolerance` of the least precise output dtype. The
    ``AssertionError`` names the symmetry and the error value.
    """
    err, dtype = _error_and_dtype(fn, inputs, irreps_in, irreps_out, R)
    tol = irreps_tolerance(dtype) if tol is None else tol
    label = _label(R, name)
    if not err < tol:  # also catches NaN
        raise AssertionError(f"{label}: symmetry broken: error {err:.3e} > tolerance {tol:.0e}")
    return f"{label}: OK (err < {tol:.0e})"


def assert_irreps_not_equivariant(
    fn: Callable,
    inputs,
    irreps_in,
    irreps_out,
    R,
    min_error: float = 1e-3,
    name: str | None = None,
) -> str:
    """Assert that ``fn`` is *not* equivariant under ``R`` (error above ``min_error``); return a deterministic line."""
    err = irreps_equivariance_error(fn, inputs, irreps_in, irreps_out, R)
    label = _label(R, name)
    if not err > min_error:
        raise AssertionError(f"{label}: expected the symmetry to be broken, but the error is only {err:.3e}")
    return f"{label}: broken as expected (err > {min_error:.0e})"
