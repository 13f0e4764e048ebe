"""Checkers of notebook 00 (symmetry primer): reference solutions pass, typical mistakes get specific feedback.

The public checks compare with stored expected outputs (seed 0, the notebook's case); other seeds are
the hidden tests' cases, checked against the live reference (``expected=nb00.compute``).
"""

import re
from pathlib import Path

import pytest
import torch
from reference_solutions import reference

from course_lib import symmetry as S
from course_lib.teaching import assign
from course_lib.teaching.exercises import check

nb00 = reference("nb00")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "00_symmetry_primer.py"
EXERCISES = {
    "00.pairwise_distances": nb00.pairwise_distances,
    "00.symmetrize": nb00.symmetrize,
    "00.radial_field": nb00.radial_field,
    "00.gated_nonlinearity": nb00.gated_nonlinearity,
}


def _messages(res) -> str:
    return "\n".join(res.messages + ([res.error] if res.error else []))


def _fails_with(exercise_id, fn, *patterns):
    res = check(exercise_id, fn, verbose=False)
    text = _messages(res)
    assert not res.passed, f"{exercise_id}: a wrong answer passed"
    for pattern in patterns:
        assert re.search(pattern, text), f"{exercise_id}: expected {pattern!r} in the feedback:\n{text}"
    return text


# ---------------------------------------------------------------- reference solutions


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_reference_solution_passes(exercise_id, seed):
    live = {} if seed == 0 else {"expected": nb00.compute}
    res = check(exercise_id, EXERCISES[exercise_id], verbose=False, seed=seed, **live)
    assert res.passed, str(res)
    assert res.n_total >= 5  # several independent tests, not a single all-or-nothing comparison


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_not_implemented_is_reported_not_raised(exercise_id):
    def stub(*args):
        raise NotImplementedError("Exercise: write your code here")

    res = check(exercise_id, stub, verbose=False)
    assert not res.passed and "not implemented yet" in res.error


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_feedback_is_deterministic(exercise_id):
    wrong = {
        "00.pairwise_distances": lambda p: (p[:, None] - p[None]).sum(-1).abs(),
        "00.symmetrize": lambda f, x, group: f(x),
        "00.radial_field": lambda p, phi: torch.relu(nb00.radial_field(p, phi)),
        "00.gated_nonlinearity": lambda s, v: torch.relu(v),
    }[exercise_id]
    first = check(exercise_id, wrong, verbose=False)
    second = check(exercise_id, wrong, verbose=False)
    assert str(first) == str(second)


def test_random_rotations_are_rotations():
    R = S.random_rotations(50, generator=0)
    eye = torch.eye(3, dtype=torch.float64).expand(50, 3, 3)
    assert torch.allclose(R @ R.transpose(1, 2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(50, dtype=torch.float64))
    assert torch.equal(R, S.random_rotations(50, generator=0))  # seeded


# ---------------------------------------------------------------- 00.pairwise_distances


def test_pairwise_squared_distances():
    _fails_with("00.pairwise_distances", lambda p: ((p[:, None] - p[None]) ** 2).sum(-1), "squared distances")


def test_pairwise_wrong_shape():
    _fails_with("00.pairwise_distances", lambda p: p[:, None] - p[None], r"expected shape \[6, 6\]",
                "difference vectors")
    _fails_with("00.pairwise_distances", lambda p: p.norm(dim=-1), r"got \[6\]")


def test_pairwise_diagonal_not_zero():
    def masked_diagonal(p):
        d = nb00.pairwise_distances(p)
        return d + torch.eye(len(p), dtype=p.dtype)  # "forgot" that D_ii = 0

    _fails_with("00.pairwise_distances", masked_diagonal, "diagonal must be exactly 0")

    def inf_diagonal(p):
        return nb00.pairwise_distances(p) + torch.diag(torch.full((len(p),), float("inf"), dtype=p.dtype))

    _fails_with("00.pairwise_distances", inf_diagonal, "NaN or inf", "do not mask it with inf")


def test_pairwise_upper_triangle_only():
    def upper(p):
        return torch.triu(nb00.pairwise_distances(p))

    _fails_with("00.pairwise_distances", upper, "must be symmetric")


def test_pairwise_non_invariant_feature():
    text = _fails_with("00.pairwise_distances", lambda p: (p[:, None] - p[None]).sum(-1).abs(),
                       r"must not change under rotation \(course_lib.symmetry error \d\.\d\de[+-]\d\d > 1e-09\)",
                       "must not change under reflection", "wrong values")
    assert "translation" not in text and "permutation" not in text  # those two still hold


def test_pairwise_cdist_is_not_allowed():
    def with_cdist(pos):
        return torch.cdist(pos, pos)

    _fails_with("00.pairwise_distances", with_cdist, "not torch.cdist")


def test_pairwise_hard_coded_dimension():
    def three_d_only(pos):
        diff = pos[:, None, :] - pos[None, :, :]
        return (diff[..., 0] ** 2 + diff[..., 1] ** 2 + diff[..., 2] ** 2).sqrt()

    _fails_with("00.pairwise_distances", three_d_only, "2D points", "raised IndexError")


def test_pairwise_exception_is_reported_with_context():
    _fails_with("00.pairwise_distances", lambda p: p @ p, r"raised RuntimeError", r"pos of shape \[6, 3\]")


# ---------------------------------------------------------------- 00.symmetrize


def test_symmetrize_sum_instead_of_mean():
    _fails_with("00.symmetrize", lambda f, x, group: sum(f(x @ g.T) for g in group), "you returned the sum")


def test_symmetrize_ignores_the_group():
    text = _fails_with("00.symmetrize", lambda f, x, group: (f(x) + f(-x)) / 2,
                       r"group = C4.*loop over \*all\* elements", "group = the cubic point group")
    assert "x -> -x" not in text  # Z2 itself is right


def test_symmetrize_not_invariant():
    _fails_with("00.symmetrize", lambda f, x, group: f(x), r"not invariant under x -> -x \(course_lib.symmetry error",
                "returned f\\(x\\) unchanged")


def test_symmetrize_transforms_the_output_instead_of_the_input():
    _fails_with("00.symmetrize", lambda f, x, group: torch.stack([f(x) @ torch.eye(2, dtype=x.dtype)
                                                                  for g in group]).mean(0),
                "not invariant under x -> -x")


def test_symmetrize_stacked_without_mean():
    _fails_with("00.symmetrize", lambda f, x, group: torch.stack([f(x @ g.T) for g in group]),
                "you stacked the |G| outputs")


# ---------------------------------------------------------------- 00.radial_field


def test_radial_field_relu_on_vectors():
    _fails_with("00.radial_field", lambda p, phi: torch.relu(nb00.radial_field(p, phi)),
                r"not equivariant under rotation: course_lib.symmetry error \d\.\d\de[+-]\d\d \(tolerance 1e-09\)",
                "not equivariant under reflection", "component")


def test_radial_field_wrong_sign():
    _fails_with("00.radial_field", lambda p, phi: -nb00.radial_field(p, phi), "point the wrong way")


def test_radial_field_absolute_positions():
    text = _fails_with("00.radial_field", lambda p, phi: phi(p.norm(dim=-1, keepdim=True)) * p,
                       "not equivariant under translation", "never the absolute positions")
    assert "under rotation" not in text  # phi(|x_i|) x_i is rotation equivariant, only translations break


def test_radial_field_squared_distance():
    def squared(pos, phi):
        diff = pos[:, None, :] - pos[None, :, :]
        return (phi((diff**2).sum(-1, keepdim=True)) * diff).sum(1)

    _fails_with("00.radial_field", squared, "not its square")


def test_radial_field_missing_trailing_axis():
    def no_keepdim(pos, phi):
        diff = pos[:, None, :] - pos[None, :, :]
        return (phi(diff.norm(dim=-1)) * diff).sum(1)

    _fails_with("00.radial_field", no_keepdim, "raised RuntimeError", "trailing axis of size 1")


def test_radial_field_wrong_shape():
    _fails_with("00.radial_field", lambda p, phi: phi((p[:, None] - p[None]).norm(dim=-1, keepdim=True))
                * (p[:, None] - p[None]), r"shape \[7, 3\], got \[7, 7, 3\]: sum over the neighbours")


def test_radial_field_unit_vectors_give_nan():
    def unit(pos, phi):
        diff = pos[:, None, :] - pos[None, :, :]
        r = diff.norm(dim=-1, keepdim=True)
        return (phi(r) * diff / r).sum(1)

    _fails_with("00.radial_field", unit, "NaN or inf", "do not divide by the distance")


# ---------------------------------------------------------------- 00.gated_nonlinearity


def test_gate_without_trailing_axis():
    _fails_with("00.gated_nonlinearity", lambda s, v: torch.sigmoid(s) * v, "raised RuntimeError",
                r"gate\[\.\.\., None\]")


def test_gate_relu_on_vectors():
    _fails_with("00.gated_nonlinearity", lambda s, v: torch.relu(v),
                r"not equivariant under rotation: course_lib.symmetry error \d\.\d\de[+-]\d\d",
                "not equivariant under reflection", "does not depend on the scalars")


def test_gate_identity():
    _fails_with("00.gated_nonlinearity", lambda s, v: v, "equals the input vectors")


def test_gate_norm_nonlinearity():
    text = _fails_with("00.gated_nonlinearity", lambda s, v: torch.sigmoid(v.norm(dim=-1, keepdim=True)) * v,
                       "norm nonlinearity")
    assert "not equivariant" not in text  # a norm nonlinearity is equivariant: only the gate is wrong


def test_gate_relu_gate():
    _fails_with("00.gated_nonlinearity", lambda s, v: torch.relu(s)[..., None] * v, "use the sigmoid")


def test_gate_in_place():
    def in_place(s, v):
        v *= torch.sigmoid(s)[..., None]
        return v

    _fails_with("00.gated_nonlinearity", in_place, "modified its inputs in place")


# ---------------------------------------------------------------- the notebook's own cells


def _notebook():
    if not NOTEBOOK.is_file():
        pytest.skip("notebooks/00_symmetry_primer.py not present")
    return assign.read_source(NOTEBOOK)


@pytest.mark.parametrize("student", [False, True])
def test_notebook_exercise_cells(student):
    """Each solution cell, run after the imports cell only, passes its checker; its student stub is
    reported as 'not implemented yet' (the check cell prints, it does not raise)."""
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
        target = assign.check_target(nb, exercise_id)
        res = check(exercise_id, eval(target, namespace), verbose=False)
        if student:
            assert not res.passed and "not implemented yet" in res.error, str(res)
        else:
            assert res.passed, str(res)


def test_checkers_leave_the_global_rng_alone():
    """A check cell must not change what later notebook cells draw (same in solution and student runs)."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for exercise_id, fn in EXERCISES.items():
        check(exercise_id, fn, verbose=False)
    assert torch.equal(torch.rand(3), expected)
