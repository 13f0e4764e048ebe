"""Checkers of notebook 06 (irreps and tensor products): reference solutions pass, typical mistakes get
specific feedback, the hidden tests agree."""

import importlib.util
import math
import re
from pathlib import Path

import pytest
import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, NormActivation
from reference_solutions import reference
from torch import nn

from course_lib.models.radial import GaussianRBF
from course_lib.teaching import assign
from course_lib.teaching.checks import Feedback
from course_lib.teaching.exercises import check
from course_lib.teaching.exercises import nb06 as public

nb06 = reference("nb06")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "06_irreps_tensor_products.py"
HIDDEN = ROOT / "grading" / "hidden" / "nb06.py"
EXERCISES = {
    "06.wigner_d_from_harmonics": nb06.wigner_d_from_harmonics,
    "06.cross_product_from_cg": nb06.cross_product_from_cg,
    "06.norm_activation": nb06.norm_activation,
    "06.radial_tensor_product": nb06.RadialTensorProduct,
    "06.quadrupole_layer": nb06.quadrupole_layer,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def _messages(res) -> str:
    return "\n".join(res.messages + ([res.error] if res.error else []))


def _fails_with(exercise_id, obj, *patterns):
    res = check(exercise_id, obj, verbose=False)
    text = _messages(res)
    assert not res.passed, f"{exercise_id}: a wrong answer passed"
    for pattern in patterns:
        assert re.search(pattern, text), f"{exercise_id}: expected {pattern!r} in the feedback:\n{text}"
    return text


# ---------------------------------------------------------------- reference solutions


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
@pytest.mark.parametrize("seed", [0, 3])
def test_reference_solution_passes(exercise_id, seed):
    hidden_case = {"expected": nb06.compute} if seed else {}  # other seeds: the reference computes, nothing stored
    res = check(exercise_id, EXERCISES[exercise_id], verbose=False, seed=seed, **hidden_case)
    assert res.passed, str(res)
    assert res.n_total >= 5


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_not_implemented_is_reported_not_raised(exercise_id):
    def stub(*args, **kwargs):
        raise NotImplementedError("Exercise: write your code here")

    res = check(exercise_id, stub, verbose=False)
    assert not res.passed and "not implemented yet" in res.error


def test_reference_norm_activation_is_e3nns_norm_activation_with_silu():
    irreps = o3.Irreps(public.NORM_IRREPS)
    x = torch.randn(6, irreps.dim, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(NormActivation(irreps, torch.nn.functional.silu)(x), nb06.norm_activation(x, irreps),
                          atol=1e-6)


def test_reference_wigner_d_matches_e3nn_to_its_precision():
    R = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))[0]
    for l in range(4):
        D = nb06.wigner_d_from_harmonics(l, R)
        assert torch.allclose(D, o3.Irrep(l, (-1) ** l).D_from_matrix(R), atol=1e-5)
        assert torch.allclose(D @ D.T, torch.eye(2 * l + 1, dtype=torch.float64), atol=1e-12)


def test_uvu_instructions_follow_the_selection_rules():
    ins = nb06.uvu_instructions("2x0e + 2x1o", "0e + 1o + 2e", "2x0e + 2x1o + 2x1e + 2x2e + 3x0e")
    assert (1, 1, 2, "uvu", True) in ins  # 1o x 1o -> 1e
    assert (0, 1, 1, "uvu", True) in ins  # 0e x 1o -> 1o
    assert all(i_out != 4 for _, _, i_out, _, _ in ins)  # 3x0e: multiplicity differs from every input
    assert (0, 1, 2, "uvu", True) not in ins  # 0e x 1o -> 1e breaks parity
    assert len(ins) == len(set(ins)) == 8


# ---------------------------------------------------------------- 06.wigner_d_from_harmonics


def _fit(points: int = None, transpose: bool = False, rotate=lambda x, R: x @ R.T, dtype=None):
    def fn(l, R):
        n = points if points is not None else 4 * l + 4
        x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0), dtype=dtype or R.dtype)
        Y = o3.spherical_harmonics(l, x, normalize=True)
        Y_R = o3.spherical_harmonics(l, rotate(x, R), normalize=True)
        sol = torch.linalg.lstsq(Y, Y_R).solution
        return sol if transpose else sol.T

    return fn


def test_wigner_transposed():
    _fails_with("06.wigner_d_from_harmonics", _fit(transpose=True), "you returned the transpose")


def test_wigner_points_rotated_the_wrong_way():
    _fails_with("06.wigner_d_from_harmonics", _fit(rotate=lambda x, R: x @ R), "you returned the transpose",
                r"x @ R\.T")


def test_wigner_too_few_points():
    text = _fails_with("06.wigner_d_from_harmonics", _fit(points=5), r"l = 3: .* at least 2l\+1 = 7 points")
    assert "l = 2:" not in text  # 5 points are enough up to l = 2


def test_wigner_float32_points():
    _fails_with("06.wigner_d_from_harmonics", _fit(dtype=torch.float32), "raised RuntimeError",
                r"dtype=R\.dtype")


def test_wigner_so3_matrix_without_parity():
    text = _fails_with("06.wigner_d_from_harmonics", lambda l, R: o3.Irrep(l, 1).D_from_matrix(R),
                       r"l = 1: R a random reflection \(det -1\): this is the matrix of the \*even\* irrep 1e",
                       "do not call e3nn's D_from_matrix")
    assert "l = 2: R" not in text or "only accurate" in text


def test_wigner_e3nn_matrix_is_reported_as_imprecise():
    _fails_with("06.wigner_d_from_harmonics", lambda l, R: o3.Irrep(l, (-1) ** l).D_from_matrix(R),
                r"D is only accurate to \d\.\de-0[67]", "do not call e3nn's D_from_matrix")


def test_wigner_wrong_shape():
    _fails_with("06.wigner_d_from_harmonics", lambda l, R: torch.eye(2 * l + 1, dtype=R.dtype)[:, :1],
                r"for l = 0 expected a \[1, 1\] matrix|for l = 1 expected a \[3, 3\] matrix")


# ---------------------------------------------------------------- 06.cross_product_from_cg


SQRT6 = math.sqrt(6.0)


def _cg(factor=SQRT6, spec="ijk,...i,...j->...k", dtype_from_a=True, swap=False):
    def fn(a, b):
        C = o3.wigner_3j(1, 1, 1, dtype=a.dtype if dtype_from_a else None)
        x, y = (b, a) if swap else (a, b)
        return factor * torch.einsum(spec, C, x, y)

    return fn


def test_cross_missing_sqrt6():
    _fails_with("06.cross_product_from_cg", _cg(factor=1.0), r"\(a x b\) / sqrt\(6\)", "multiply by sqrt\\(6\\)")


def test_cross_tensor_product_normalisation():
    _fails_with("06.cross_product_from_cg", _cg(factor=math.sqrt(3.0)), r"\(a x b\) / sqrt\(2\)",
                "FullTensorProduct")


def test_cross_swapped_arguments():
    _fails_with("06.cross_product_from_cg", _cg(swap=True), r"you computed b x a")


def test_cross_float32_coefficients():
    _fails_with("06.cross_product_from_cg", _cg(dtype_from_a=False), "raised RuntimeError", r"dtype=a\.dtype")


def test_cross_fixed_batch_axis():
    _fails_with("06.cross_product_from_cg", _cg(spec="ijk,ni,nj->nk"), r"shape \[2, 4, 3\] raised ValueError",
                "use '...' for the leading axes")


def test_cross_with_torch_cross():
    text = _fails_with("06.cross_product_from_cg", lambda a, b: torch.linalg.cross(a, b, dim=-1),
                       "not with torch.linalg.cross")
    assert "pseudovector" not in text  # the values and the symmetry are right


def test_cross_dot_product_is_not_a_pseudovector():
    text = _fails_with("06.cross_product_from_cg", lambda a, b: a * (a * b).sum(-1, keepdim=True) * 0 + a,
                       "wrong values", r"pseudovector \(1e: v -> det\(R\) R v\) under reflection")
    assert "under rotation" not in text  # a itself rotates like a vector: only reflections tell


# ---------------------------------------------------------------- 06.norm_activation


def _blockwise(per_copy):
    def fn(x, irreps):
        out = []
        for (mul, ir), sl in zip(irreps, irreps.slices()):
            block = x[:, sl].reshape(-1, mul, ir.dim)
            out.append(per_copy(block, ir).reshape(-1, mul * ir.dim))
        return torch.cat(out, dim=-1)

    return fn


def test_norm_componentwise():
    _fails_with("06.norm_activation", lambda x, irreps: torch.sigmoid(x) * x,
                r"not equivariant under a random rotation: course_lib.irreps error \d\.\d\de[+-]\d\d",
                "componentwise")


def test_norm_transposed_layout():
    def transposed(x, irreps):
        out = []
        for (mul, ir), sl in zip(irreps, irreps.slices()):
            block = x[:, sl].reshape(-1, ir.dim, mul)
            out.append((torch.sigmoid(block.norm(dim=1, keepdim=True)) * block).reshape(-1, mul * ir.dim))
        return torch.cat(out, dim=-1)

    _fails_with("06.norm_activation", transposed, "not equivariant", r"reshape it to \[N, mul, 2l\+1\]")


def test_norm_one_norm_per_block():
    text = _fails_with("06.norm_activation", _blockwise(lambda b, ir: torch.sigmoid(b.norm(dim=(1, 2), keepdim=True))
                                                        * b), "one norm over all copies of a block")
    assert "not equivariant" not in text  # still equivariant, only the values are wrong


def test_norm_divides_by_the_norm():
    _fails_with("06.norm_activation", _blockwise(lambda b, ir: torch.sigmoid(b.norm(dim=-1, keepdim=True)) * b
                                                 / b.norm(dim=-1, keepdim=True)),
                "you divided by the norm", "x = 0 must give 0")


def test_norm_scalars_untouched():
    _fails_with("06.norm_activation", _blockwise(lambda b, ir: b if ir.l == 0
                                                 else torch.sigmoid(b.norm(dim=-1, keepdim=True)) * b),
                r"scalar copies \(l = 0\) are unchanged")


def test_norm_hard_coded_irreps():
    fixed = o3.Irreps(public.NORM_IRREPS)
    _fails_with("06.norm_activation", lambda x, irreps: nb06.norm_activation(x, fixed), "do not assume sorted irreps")


# ---------------------------------------------------------------- 06.radial_tensor_product


class _Variant(nn.Module):
    """RadialTensorProduct with one deliberate mistake."""

    mode = "uvu"
    parity = True
    paths = "all"
    shared = False
    normalize = True
    radial_input = "rbf"

    def __init__(self, irreps_in, irreps_sh, irreps_out, num_basis=8, cutoff=3.0, hidden=16):
        super().__init__()
        self.irreps_in, self.irreps_sh, self.irreps_out = (o3.Irreps(i) for i in (irreps_in, irreps_sh, irreps_out))
        self.rbf = GaussianRBF(num_basis, cutoff)
        ins = []
        for i1, (mul1, ir1) in enumerate(self.irreps_in):
            for i2, (_, ir2) in enumerate(self.irreps_sh):
                for io, (mul_out, ir_out) in enumerate(self.irreps_out):
                    allowed = ir_out in ir1 * ir2 if self.parity else abs(ir1.l - ir2.l) <= ir_out.l <= ir1.l + ir2.l
                    if self.paths == "scalar_sh" and ir2.l != 0:
                        continue
                    if allowed and mul_out == mul1:
                        ins.append((i1, i2, io, self.mode, True))
        kwargs = {} if self.shared else {"shared_weights": False, "internal_weights": False}
        self.tp = o3.TensorProduct(self.irreps_in, self.irreps_sh, self.irreps_out, ins, **kwargs)
        n_in = num_basis if self.radial_input == "rbf" else 3
        self.radial = FullyConnectedNet([n_in, hidden, self.tp.weight_numel], torch.nn.functional.silu)

    def forward(self, h, edge_vec):
        sh = o3.spherical_harmonics(self.irreps_sh, edge_vec, normalize=self.normalize, normalization="component")
        if self.shared:
            return self.tp(h, sh)
        w = self.radial(self.rbf(edge_vec.norm(dim=-1)) if self.radial_input == "rbf" else edge_vec)
        return self.tp(h, sh, w)


def _variant(**attrs):
    return type("RadialTensorProduct", (_Variant,), attrs)


def test_variant_without_mistakes_passes():
    assert check("06.radial_tensor_product", _Variant, verbose=False).passed


def test_radial_uvw_mode():
    _fails_with("06.radial_tensor_product", _variant(mode="uvw"), "connection mode 'uvu'",
                r"should have 32 weights \(mul_in x mul_sh per uvu path\), it has 128")


def test_radial_ignores_parity():
    _fails_with("06.radial_tensor_product", _variant(parity=False), "raised AssertionError",
                r"\(i1, i2, i_out, 'uvu', True\)")


def test_radial_missing_paths():
    _fails_with("06.radial_tensor_product", _variant(paths="scalar_sh"), r"6 allowed path\(s\) missing, e\.g\. "
                r"4x0e \(x\) 1x1o -> 4x1o", "should have 32 weights")


def test_radial_shared_weights():
    _fails_with("06.radial_tensor_product", _variant(shared=True), "each edge needs its own weights",
                r"do not change when every edge gets 1\.3 times longer")


def test_radial_unnormalised_harmonics():
    _fails_with("06.radial_tensor_product", _variant(normalize=False), r"direction r / \|r\|")


def test_radial_weights_from_the_edge_vector():
    text = _fails_with("06.radial_tensor_product", _variant(radial_input="vector"),
                       r"the radial MLP takes the \[E, num_basis\] Gaussian features")
    assert "raised RuntimeError" in text


# ---------------------------------------------------------------- hidden tests


def _hidden():
    spec = importlib.util.spec_from_file_location("_hidden_nb06_test", HIDDEN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_hidden_tests_pass_the_reference(exercise_id):
    fb = Feedback()
    _hidden().HIDDEN[exercise_id](EXERCISES[exercise_id], fb)
    assert not fb.failed, fb.failed
    assert not fb.__dict__.get("test_errors"), fb.test_errors
    assert len(fb.cases) >= 4 and all(score == 1.0 for _, score in fb.cases)


def test_hidden_tests_catch_what_the_public_check_misses():
    """Seven fixed sample points fit l <= 3 (the public check) but not l = 4, 5 (hidden)."""
    seven = _fit(points=7)
    assert check("06.wigner_d_from_harmonics", seven, verbose=False).passed
    fb = Feedback()
    _hidden().HIDDEN["06.wigner_d_from_harmonics"](seven, fb)
    assert any("l = 4" in m for m in fb.failed), fb.failed


# ---------------------------------------------------------------- the notebook's own cells


def _notebook():
    if not NOTEBOOK.is_file():
        pytest.skip("notebooks/06_irreps_tensor_products.py not present")
    return assign.read_source(NOTEBOOK)


@pytest.mark.parametrize("student", [False, True])
def test_notebook_exercise_cells(student):
    nb = _notebook()
    cells = assign.exercise_cells(nb)
    assert sorted(ex_id for ex_id, _, _ in cells) == sorted(EXERCISES)
    imports = assign.imports_source(nb)
    for exercise_id, points, source in cells:
        assert 1 <= points <= 3
        if student:
            source = assign.stub_source(source, exercise_id)
        namespace: dict = {}
        exec(compile(imports + "\n" + source, f"<{exercise_id}>", "exec"), namespace)
        res = check(exercise_id, eval(assign.check_target(nb, exercise_id), namespace), verbose=False)
        if student:
            assert not res.passed and "not implemented yet" in res.error, str(res)
        else:
            assert res.passed, str(res)


def test_checkers_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for exercise_id, obj in EXERCISES.items():
        check(exercise_id, obj, verbose=False)
    assert torch.equal(torch.rand(3), expected)


def test_feedback_is_deterministic():
    wrong = _variant(normalize=False)
    assert str(check("06.radial_tensor_product", wrong, verbose=False)) == str(
        check("06.radial_tensor_product", wrong, verbose=False))
    relu = lambda x, irreps: torch.relu(x)
    assert str(check("06.norm_activation", relu, verbose=False)) == str(check("06.norm_activation", relu,
                                                                              verbose=False))


# --------------------------------------------------------------------------------------------
# 06.quadrupole_layer (design)
# --------------------------------------------------------------------------------------------


def _quadrupole_score(fn):
    from course_lib.teaching.exercises.nb06 import check_quadrupole_layer
    from course_lib.teaching.grading import run_cases

    fb = Feedback()
    run_cases(fb, fn, [("public", check_quadrupole_layer, {})])
    return fb.cases[0][1], fb.failed


def _cartesian_quadrupole(pos, edge_index):
    """Another design: sum over bonds of the symmetric traceless r r^T / |r|^2, in e3nn's basis."""
    j, i = edge_index
    r = pos[j] - pos[i]
    s = r[:, :, None] * r[:, None, :] / (r * r).sum(-1)[:, None, None] - torch.eye(3, dtype=pos.dtype) / 3
    Q = math.sqrt(5) * o3.wigner_3j(1, 1, 2, dtype=pos.dtype)
    per_bond = torch.einsum("ijm,eij->em", Q, s)
    return torch.zeros(len(pos), 5, dtype=pos.dtype).index_add(0, i, per_bond)


class _LearnedQuadrupole(nn.Module):
    """A third design: a small radial MLP of the bond length weights Y^2 of the bond."""

    def __init__(self, hidden=16):
        super().__init__()
        self.radial = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, pos, edge_index):
        j, i = edge_index
        r = pos[j] - pos[i]
        w = self.radial(r.norm(dim=-1, keepdim=True).to(self.radial[0].weight.dtype)).to(pos.dtype)
        y2 = o3.spherical_harmonics(2, r, normalize=True, normalization="component")
        return torch.zeros(len(pos), 5, dtype=pos.dtype).index_add(0, i, w * y2)


def test_quadrupole_layer_accepts_the_reference_and_other_designs():
    for kw in ({}, {"seed": 3, "n": 14}):
        assert check("06.quadrupole_layer", nb06.quadrupole_layer, verbose=False, **kw).passed
    assert check("06.quadrupole_layer", _cartesian_quadrupole, verbose=False).passed
    torch.manual_seed(0)
    res = check("06.quadrupole_layer", _LearnedQuadrupole(), verbose=False)
    assert res.passed, res


def test_quadrupole_layer_scores_a_broken_symmetry_zero_naming_it():
    def two_o(pos, edge_index):  # sym. traceless part of r (x) (sum of r_ij x r_ik): 1o x 1e -> 2o
        j, i = edge_index
        r = pos[j] - pos[i]
        total = torch.zeros_like(pos).index_add(0, i, r)
        c = torch.linalg.cross(r, total[i])
        m = (r[:, :, None] * c[:, None, :] + c[:, :, None] * r[:, None, :]) / 2
        m = m - torch.einsum("eii->e", m)[:, None, None] * torch.eye(3, dtype=pos.dtype) / 3
        Q = math.sqrt(5) * o3.wigner_3j(1, 1, 2, dtype=pos.dtype)
        return torch.zeros(len(pos), 5, dtype=pos.dtype).index_add(0, i, torch.einsum("ijm,eij->em", Q, m))

    def entries(pos, edge_index):  # five entries of r r^T: not the e3nn basis
        j, i = edge_index
        r = pos[j] - pos[i]
        rr = (r[:, :, None] * r[:, None, :]).reshape(-1, 9)[:, [0, 1, 2, 4, 5]]
        return torch.zeros(len(pos), 5, dtype=pos.dtype).index_add(0, i, rr)

    score, messages = _quadrupole_score(two_o)
    assert score == 0.0 and any("2o feature" in m for m in messages) and any("scores 0" in m for m in messages), \
        messages
    score, messages = _quadrupole_score(entries)
    assert score == 0.0 and any("rotation equivariance (error" in m for m in messages), messages
    score, messages = _quadrupole_score(lambda p, e: nb06.quadrupole_layer(p, e) + 0.01 * p[:, :1])
    assert score == 0.0 and any("translation invariance" in m for m in messages), messages


def test_quadrupole_layer_zero_for_some_atoms_misses_the_goal_with_a_fraction():
    def pairs_only(pos, edge_index):  # sum over pairs of bonds of sym(r_ij x r_ik ...): zero for one neighbour
        j, i = edge_index
        r = pos[j] - pos[i]
        total = torch.zeros_like(pos).index_add(0, i, r)
        out = _cartesian_quadrupole(pos, edge_index)
        count = torch.bincount(i, minlength=len(pos)).to(pos.dtype)[:, None]
        return out * (count > 1) + 0 * total[:, :1]

    score, messages = _quadrupole_score(pairs_only)
    assert 0.0 < score < 0.5 and any("zero for atoms that have" in m for m in messages), (score, messages)
    assert not any("scores 0" in m for m in messages)
    score, messages = _quadrupole_score(lambda p, e: torch.zeros(len(p), 5, dtype=p.dtype))
    assert score < 0.5 and any("zero for atoms that have" in m for m in messages)
    score, messages = _quadrupole_score(_LearnedQuadrupole(hidden=1000))  # a correct layer, too many weights
    assert 0.0 < score < 1.0 and any("over the budget" in m for m in messages), messages


def test_quadrupole_layer_hidden_tests_run():
    path = Path(__file__).resolve().parents[1] / "grading" / "hidden" / "nb06.py"
    spec = importlib.util.spec_from_file_location("_hidden_nb06_q", path)
    hidden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hidden)
    fb = Feedback()
    hidden.HIDDEN["06.quadrupole_layer"](_cartesian_quadrupole, fb)
    assert not fb.failed and [s for _, s in fb.cases] == [1.0, 1.0, 1.0, 1.0], fb.failed
