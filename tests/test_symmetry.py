"""Tests of the symmetry-check API (course_lib.symmetry)."""

import math

import pytest
import torch
from torch_geometric.data import Batch, Data

from course_lib import symmetry as S
from course_lib.models import energy_and_forces


def _cloud(n=7, d=3, seed=0, box=None, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, d, generator=g, dtype=dtype) * (4.0 if box is None else box)
    data = Data(pos=pos, vel=torch.randn(n, d, generator=g, dtype=dtype),
                charge=torch.randint(0, 2, (n,), generator=g).to(dtype) * 2 - 1)
    if box is not None:
        data.box = torch.full((1, d), float(box), dtype=dtype)
    return data


def _pair_energy(data):
    """A smooth invariant pair energy (minimum image when there is a box); [num_graphs]."""
    pos = data.pos
    batch = data.batch if getattr(data, "batch", None) is not None else torch.zeros(len(pos), dtype=torch.long)
    diff = pos[None, :, :] - pos[:, None, :]
    box = getattr(data, "box", None)
    if box is not None:
        L = box[batch][:, None, :]
        diff = diff - L * torch.round(diff / L)
    same = batch[:, None] == batch[None, :]
    off = ~torch.eye(len(pos), dtype=torch.bool)
    r2 = (diff**2).sum(-1)
    e_pair = torch.where(same & off, torch.exp(-r2) * (1 + data.charge[:, None] * data.charge[None, :]), 0.0)
    e_atom = 0.5 * e_pair.sum(1)
    return torch.zeros(int(batch.max()) + 1, dtype=pos.dtype).index_add(0, batch, e_atom)


class PairModel(torch.nn.Module):
    def forward(self, data):
        return _pair_energy(data)


# ---------------------------------------------------------------- group elements


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("det", [1, -1])
def test_random_orthogonal(d, det):
    for seed in range(5):
        R = S.random_orthogonal(d, det=det, generator=seed)
        assert torch.allclose(R @ R.T, torch.eye(d, dtype=torch.float64), atol=1e-12)
        assert round(float(torch.linalg.det(R))) == det


def test_random_orthogonal_none_gives_both_signs():
    dets = {round(float(torch.linalg.det(S.random_orthogonal(3, generator=s)))) for s in range(20)}
    assert dets == {1, -1}


def test_groups_satisfy_axioms():
    assert len(S.lattice_point_group(2)) == 8
    assert len(S.lattice_point_group(3)) == 48
    for els in (S.lattice_point_group(2), S.cyclic_group(4), S.dihedral_group(3), S.cyclic_group(2)):
        assert all(S.check_group_axioms(els).values())
    # D4 (the square) is the lattice point group in 2D: same set of matrices
    d4 = S.dihedral_group(4)
    for m in S.lattice_point_group(2):
        assert any(torch.allclose(m, x, atol=1e-12) for x in d4)
    # not a group: two rotations by 90 degrees only
    assert not S.check_group_axioms(S.cyclic_group(4)[:2])["closure"]


def test_rotation_matrices_and_reflection():
    R = S.rotation_matrix_2d(math.pi / 2)
    e_x, e_y = torch.eye(2, dtype=torch.float64)
    assert torch.allclose(R @ e_x, e_y)
    R3 = S.rotation_matrix_3d([0, 0, 1], math.pi / 2)
    assert torch.allclose(R3[:2, :2], R)
    M = S.reflection_matrix([1.0, 0.0, 0.0])
    assert round(float(torch.linalg.det(M))) == -1
    P = S.permutation_matrix([2, 0, 1])
    x = torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64)
    assert torch.equal(P @ x, x[[2, 0, 1]])


# ---------------------------------------------------------------- transforms


def test_transform_fields_by_kind():
    data = _cloud()
    data.forces = torch.randn_like(data.pos)
    data.energy = torch.tensor([1.5], dtype=torch.float64)
    T = S.rotation(3, generator=1).then(S.translation(3, generator=2))
    out = T(data)
    assert torch.allclose(out.pos, data.pos @ T.R.T + T.t)
    assert torch.allclose(out.vel, data.vel @ T.R.T)  # vectors are not translated
    assert torch.allclose(out.forces, data.forces @ T.R.T)
    assert torch.equal(out.charge, data.charge)
    assert torch.equal(out.energy, data.energy)
    assert out.pos.dtype == data.pos.dtype


def test_permutation_relabels_edges_consistently():
    data = _cloud(n=6)
    data.edge_index = torch.tensor([[0, 1, 2, 5], [1, 0, 3, 4]])
    T = S.permutation(data, generator=3)
    out = T(data)
    # an edge (j -> i) of the original joins the same two particles after relabelling
    for (j, i), (j2, i2) in zip(data.edge_index.T.tolist(), out.edge_index.T.tolist()):
        assert torch.equal(out.pos[j2], data.pos[j]) and torch.equal(out.pos[i2], data.pos[i])


def test_permutation_stays_within_graphs():
    batch = Batch.from_data_list([_cloud(n=4, seed=1), _cloud(n=5, seed=2)])
    T = S.permutation(batch, generator=0)
    assert torch.equal(batch.batch[T.perm], batch.batch)


def test_composition_matches_sequential_application():
    data = _cloud()
    A, B = S.reflection(3, generator=4), S.translation(3, generator=5)
    both = A.then(B)(data)
    seq = B(A(data))
    assert torch.allclose(both.pos, seq.pos, atol=1e-12)


def test_unknown_node_field_is_an_error():
    data = _cloud()
    data.spin = torch.randn(data.num_nodes, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="field_kinds"):
        S.rotation(3)(data)
    out = S.rotation(3)(data, field_kinds={"spin": "pseudovector"})
    assert out.spin.shape == data.spin.shape


def test_periodic_translation_wraps_into_box():
    data = _cloud(d=2, box=5.0)
    out = S.periodic_translation(data.box, generator=0)(data)
    assert (out.pos >= 0).all() and (out.pos < 5.0).all()
    assert S.box_symmetry(2, "rot90").is_box_symmetry(data.box)
    assert not S.rotation(2, R=S.rotation_matrix_2d(0.3)).is_box_symmetry(data.box)


def test_pseudovector_kind():
    """The cross product of two vectors is a pseudovector: it does not flip under inversion."""
    data = _cloud()
    data.forces = torch.randn_like(data.pos)
    fn = lambda d: torch.cross(d.vel, d.forces, dim=-1)
    for T in (S.reflection(3, generator=0), S.inversion(3), S.rotation(3, generator=1)):
        assert S.equivariance_error(fn, data, T, output="pseudovector") < 1e-12
    assert S.equivariance_error(fn, data, S.inversion(3), output="vector") > 1e-2


# ---------------------------------------------------------------- equivariance_error


@pytest.mark.parametrize("name", ["permutation", "translation", "rotation", "reflection"])
def test_invariant_energy_and_equivariant_forces_open(name):
    data = _cloud()
    T = S.standard_transforms(data, generator=0)[name]
    model = PairModel()
    err_e = S.equivariance_error(model, data, T)
    err_f = S.equivariance_error(lambda b: energy_and_forces(model, b), data, T, output=("invariant", "vector"))
    print(f"{name}: energy err {err_e:.2e}, forces err {err_f:.2e}")
    assert err_e < 1e-12 and err_f < 1e-12


@pytest.mark.parametrize("name", ["permutation", "periodic translation", "box rotation 90", "box reflection"])
def test_periodic_symmetries_exact(name):
    data = _cloud(n=9, d=2, box=4.0)
    T = S.standard_transforms(data, generator=1)[name]
    err = S.equivariance_error(PairModel(), data, T)
    print(f"{name}: err {err:.2e}")
    assert err < 1e-12


def test_generic_rotation_is_not_a_symmetry_of_the_periodic_box():
    data = _cloud(n=30, d=2, box=4.0, seed=3)
    T = S.rotation(2, R=S.rotation_matrix_2d(math.radians(30)))
    T.wrap = True
    err = S.equivariance_error(PairModel(), data, T)
    print(f"30-degree rotation in a periodic box: err {err:.2e}")
    assert err > 1e-3


def test_position_outputs_compared_with_minimum_image():
    data = _cloud(n=5, d=2, box=3.0)
    step = lambda d: d.pos + 0.1 * d.vel  # equivariant update, not wrapped
    T = S.periodic_translation(data.box, generator=0)
    assert S.equivariance_error(step, data, T, output="position") < 1e-12


def test_batches_and_per_graph_boxes():
    b = Batch.from_data_list([_cloud(n=4, d=2, box=3.0, seed=1), _cloud(n=6, d=2, box=5.0, seed=2)])
    for T in S.standard_transforms(b, generator=2).values():
        assert S.equivariance_error(PairModel(), b, T) < 1e-12


def test_non_invariant_function_detected_with_value():
    data = _cloud()
    fn = lambda d: d.pos[:, :1].sum(0)  # depends on absolute coordinates
    err = S.equivariance_error(fn, data, S.translation(3, generator=0), output="invariant")
    assert err > 1e-2
    with pytest.raises(AssertionError, match=r"translation: symmetry broken: error .* > tolerance 1e-09"):
        S.assert_equivariant(fn, data, S.translation(3, generator=0), output="invariant")
    msg = S.assert_not_equivariant(fn, data, S.translation(3, generator=0), output="invariant")
    assert msg == "translation: broken as expected (err > 1e-03)"


def test_assert_equivariant_line_is_deterministic_and_dtype_aware():
    data32 = _cloud(dtype=torch.float32)
    msg = S.assert_equivariant(PairModel(), data32, S.rotation(3, generator=0), name="rotation")
    assert msg == "rotation: OK (err < 1e-04)"
    msg64 = S.assert_equivariant(PairModel(), _cloud(), S.rotation(3, generator=0), name="rotation")
    assert msg64 == "rotation: OK (err < 1e-09)"
    assert S.default_tolerance(torch.float32) > S.default_tolerance(torch.float64)


def test_nan_output_fails():
    data = _cloud()
    fn = lambda d: torch.full((1,), float("nan"), dtype=torch.float64)
    with pytest.raises(AssertionError):
        S.assert_equivariant(fn, data, S.rotation(3))


def test_tuple_output_needs_kinds():
    data = _cloud()
    with pytest.raises(ValueError, match="one kind per output"):
        S.equivariance_error(lambda d: (d.pos, d.vel), data, S.rotation(3))


def test_data_output_uses_field_kinds():
    data = _cloud()
    step = lambda d: Data(pos=d.pos + 0.1 * d.vel, vel=d.vel * 0.9, charge=d.charge)
    for T in S.standard_transforms(data, generator=0).values():
        assert S.equivariance_error(step, data, T) < 1e-12


# ---------------------------------------------------------------- find_symmetry_breaking


class _VecNet(torch.nn.Module):
    """Per-node vector output: sum_j phi(|x_ij|) x_ij, then an optional ReLU on the vectors."""

    def __init__(self, break_it: bool):
        super().__init__()
        self.radial = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1))
        self.act = torch.nn.ReLU() if break_it else torch.nn.Identity()
        self.scale = torch.nn.Linear(1, 1)

    def forward(self, data):
        x = data.pos
        rij = x[:, None, :] - x[None, :, :]
        w = self.radial((rij**2).sum(-1, keepdim=True))
        v = (w * rij).sum(1)
        v = self.act(v)
        return v * self.scale(v.norm(dim=-1, keepdim=True))


def test_find_symmetry_breaking_names_the_relu():
    torch.manual_seed(0)
    data = _cloud(dtype=torch.float32)
    T = S.rotation(3, generator=0)
    assert S.find_symmetry_breaking(_VecNet(False), data, T) is None
    rep = S.find_symmetry_breaking(_VecNet(True), data, T)
    print(rep)
    assert rep is not None and rep.module == "act"
    assert "act" in str(rep)


def test_tolerance_follows_the_least_precise_computed_output():
    data = _cloud()  # float64
    data.charge = data.charge.float()  # a pass-through float32 field must not loosen the tolerance
    step = lambda d: Data(pos=d.pos + 0.1 * d.vel, vel=d.vel, charge=d.charge, frame_dt=torch.ones(1))
    rep = S.equivariance_error(step, data, S.rotation(3, generator=0), return_details=True)
    assert rep.dtype == torch.float64
    rep32 = S.equivariance_error(lambda d: d.pos.float(), data, S.rotation(3), output="position",
                                 return_details=True)
    assert rep32.dtype == torch.float32
