"""course_lib.irreps: Wigner-D matrices of O(3) elements and equivariance checks of irreps features."""

import math

import pytest
import torch
from e3nn import o3

from course_lib import irreps as I
from course_lib import symmetry as S

ROT = S.random_orthogonal(3, det=1, generator=1)
REFL = S.random_orthogonal(3, det=-1, generator=2)
INV = -torch.eye(3, dtype=torch.float64)
ELEMENTS = {"rotation": ROT, "reflection": REFL, "inversion": INV}


def _sh(l):
    return lambda x: o3.spherical_harmonics(l, x, normalize=True)


def _points(n=20, seed=0, dtype=torch.float64):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("name", sorted(ELEMENTS))
def test_low_irreps_are_the_cartesian_objects(name):
    """e3nn's l = 1 basis is (x, y, z): 1o is a vector, 1e a pseudovector, 0o a pseudoscalar."""
    R = ELEMENTS[name]
    det = float(torch.linalg.det(R))
    assert torch.allclose(I.wigner_D("1o", R), R, atol=1e-12)
    assert torch.allclose(I.wigner_D("1e", R), det * R, atol=1e-12)
    assert torch.allclose(I.wigner_D("0o", R), torch.tensor([[det]], dtype=torch.float64))
    assert torch.equal(I.wigner_D("0e", R), torch.ones(1, 1, dtype=torch.float64))


def test_wigner_D_is_a_block_diagonal_representation():
    irreps = o3.Irreps("2x0e + 1x0o + 2x1o + 1x1e + 1x2e + 1x3o")
    A, B = S.random_orthogonal(3, generator=5), S.random_orthogonal(3, det=-1, generator=6)
    DA, DB, DAB = I.wigner_D(irreps, A), I.wigner_D(irreps, B), I.wigner_D(irreps, A @ B)
    assert DA.dtype == torch.float64 and DA.shape == (irreps.dim, irreps.dim)
    assert torch.allclose(DA @ DB, DAB, atol=1e-12)
    assert torch.allclose(DA @ DA.T, torch.eye(irreps.dim, dtype=torch.float64), atol=1e-9)
    mask = torch.zeros(irreps.dim, irreps.dim, dtype=torch.bool)
    for (mul, ir), sl in zip(irreps, irreps.slices()):
        for u in range(mul):
            start = sl.start + u * ir.dim
            mask[start:start + ir.dim, start:start + ir.dim] = True
    assert DA[~mask].abs().max() == 0  # nothing outside the (2l+1)-blocks of each copy
    parities = [ir.p for mul, ir in irreps for _ in range(mul * ir.dim)]
    assert torch.equal(I.wigner_D(irreps, INV).diagonal(), torch.tensor(parities, dtype=torch.float64))


def test_wigner_D_is_exact_in_float64_and_restores_the_default_dtype():
    """e3nn's generators follow the default dtype: D_from_matrix under float32 is off by ~1e-7..1e-6."""
    x = _points(40, seed=7)
    assert torch.get_default_dtype() == torch.float32
    for l in range(6):
        ir = f"{l}{'e' if l % 2 == 0 else 'o'}"
        Y, Y_R = _sh(l)(x), _sh(l)(x @ REFL.T)
        exact = float((Y_R - Y @ I.wigner_D(ir, REFL).T).abs().max())
        e3nn_default = float((Y_R - Y @ o3.Irreps(ir).D_from_matrix(REFL).T).abs().max())
        assert exact < 1e-12, (l, exact)
        if l >= 1:
            assert 1e-9 < e3nn_default < 1e-4, (l, e3nn_default)  # why wigner_D switches the dtype
    assert torch.get_default_dtype() == torch.float32


def test_transform_features_matches_the_matrix():
    x = torch.randn(4, 8, dtype=torch.float32)
    y = I.transform_features(x, "2x0e + 2x1o", ROT)
    assert y.dtype == torch.float64
    assert torch.allclose(y, x.double() @ I.wigner_D("2x0e + 2x1o", ROT).T)


@pytest.mark.parametrize("l", [0, 1, 2, 3])
def test_spherical_harmonics_are_equivariant_with_parity(l):
    p = "e" if l % 2 == 0 else "o"
    for name, R in ELEMENTS.items():
        err = I.irreps_equivariance_error(_sh(l), _points(), "1o", f"{l}{p}", R)
        assert err < 1e-12, (l, name, err)
        line = I.assert_irreps_equivariant(_sh(l), _points(), "1o", f"{l}{p}", R, name=f"Y{l} {name}")
        assert line == f"Y{l} {name}: OK (err < 1e-09)"
    if l % 2 == 1:  # the wrong parity passes rotations and fails reflections
        assert I.irreps_equivariance_error(_sh(l), _points(), "1o", f"{l}e", ROT) < 1e-12
        assert I.irreps_equivariance_error(_sh(l), _points(), "1o", f"{l}e", REFL) > 0.1
        with pytest.raises(AssertionError, match=r"reflection: symmetry broken: error \d\.\d+e[+-]\d+ > tolerance"):
            I.assert_irreps_equivariant(_sh(l), _points(), "1o", f"{l}e", REFL)


def test_relu_breaks_and_the_line_is_deterministic():
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(3))
    line = I.assert_irreps_not_equivariant(torch.relu, x, "2x1o", "2x1o", ROT)
    assert line == "rotation: broken as expected (err > 1e-03)"
    with pytest.raises(AssertionError, match="expected the symmetry to be broken"):
        I.assert_irreps_not_equivariant(lambda v: 2 * v, x, "2x1o", "2x1o", ROT)


def test_several_inputs_outputs_and_invariant_inputs():
    """A cross product is 1o x 1o -> 1e; weights that do not transform are passed with irreps None."""
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(7, 3, generator=g, dtype=torch.float64)
    w = torch.randn(7, 1, generator=g, dtype=torch.float64)
    fn = lambda a, b, w: (w * torch.linalg.cross(a, b), (a * b).sum(-1, keepdim=True))
    for R in ELEMENTS.values():
        assert I.irreps_equivariance_error(fn, (a, b, w), ("1o", "1o", None), ("1e", "0e"), R) < 1e-9
    assert I.irreps_equivariance_error(fn, (a, b, w), ("1o", "1o", None), ("1o", "0e"), REFL) > 0.1
    assert I.irreps_equivariance_error(fn, (a, b, w), ("1o", "1o", None), ("1e", "0e"), ROT) < 1e-9


def test_e3nn_modules_in_float32_use_the_float32_tolerance():
    tp = o3.FullyConnectedTensorProduct("2x0e + 2x1o", "1x0e + 1x1o + 1x2e", "2x0e + 2x1o + 1x2e")
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(6, tp.irreps_in1.dim, generator=g), torch.randn(6, tp.irreps_in2.dim, generator=g)
    with torch.no_grad():
        line = I.assert_irreps_equivariant(tp, (x, y), (tp.irreps_in1, tp.irreps_in2), tp.irreps_out, REFL)
    assert line == "reflection: OK (err < 1e-04)"
    assert I.irreps_tolerance(torch.float64) == 1e-9 and I.irreps_tolerance(torch.float32) == 1e-4


def test_error_is_scaled_like_course_lib_symmetry():
    """max |f(gx) - g f(x)| / max(1, max |g f(x)|): a relative error for large outputs."""
    x = _points(5)
    big = lambda v: 1000.0 * v + torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)  # breaks equivariance by ~1
    err = I.irreps_equivariance_error(big, x, "1o", "1o", ROT)
    expected_scale = float((1000.0 * x @ ROT.T + torch.tensor([1.0, 0, 0], dtype=torch.float64) @ ROT.T).abs().max())
    assert 0.5 / expected_scale < err < 3.0 / expected_scale
    nan = I.irreps_equivariance_error(lambda v: v * math.nan, x, "1o", "1o", ROT)
    assert nan != nan
    with pytest.raises(AssertionError):
        I.assert_irreps_equivariant(lambda v: v * math.nan, x, "1o", "1o", ROT)


def test_bad_inputs_get_clear_errors():
    x = _points(4)
    with pytest.raises(ValueError, match="last axis of size 5"):
        I.irreps_equivariance_error(lambda v: v, x, "2e", "2e", ROT)
    with pytest.raises(ValueError, match="not orthogonal"):
        I.irreps_equivariance_error(lambda v: v, x, "1o", "1o", 2 * ROT)
    with pytest.raises(ValueError, match="3x3 matrix"):
        I.wigner_D("1o", torch.eye(2))
    with pytest.raises(ValueError, match="one irreps per tensor"):
        I.irreps_equivariance_error(lambda a, b: a, (x, x), "1o", "1o", ROT)
    with pytest.raises(ValueError, match="declared as 1x2e"):
        I.irreps_equivariance_error(lambda v: v, x, "1o", "2e", ROT)
    with pytest.raises(ValueError, match="expected irreps as a string"):
        I.as_irreps(3)
