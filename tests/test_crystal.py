"""course_lib.crystal: crystal symmetries and rollout metrics."""

import math

import pytest
import torch
from torch_geometric.data import Batch, Data

from course_lib import crystal as C
from course_lib import symmetry as S


def _crystal_graph(n_mobile=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    sites = C.lattice_sites().float()
    mob = torch.rand(n_mobile, 2, generator=g) * 10
    pos = torch.cat([sites, mob])
    fixed = torch.cat([torch.ones(16, dtype=torch.bool), torch.zeros(n_mobile, dtype=torch.bool)])
    return Data(pos=pos, vel=torch.randn(len(pos), 2, generator=g) * ~fixed[:, None], fixed=fixed,
                charge=torch.ones(len(pos)), box=torch.tensor([[10.0, 10.0]]))


def test_lattice_sites():
    s = C.lattice_sites()
    assert s.shape == (16, 2) and float(s.min()) == 1.25 and float(s.max()) == 8.75


def test_crystal_symmetries_map_the_crystal_onto_itself():
    g = _crystal_graph()
    site = C.lattice_sites()[5]
    good = [C.lattice_translation(1, 0), C.lattice_translation(2, -3)]
    good += [C.lattice_point_operation(R, site) for R in S.lattice_point_group(2)]
    good += [S.box_symmetry(2, "rot90"), S.box_symmetry(2, "mirror")]  # about the box corner: a plaquette centre
    for T in good:
        assert C.crystal_maps_onto_itself(g, T), T
    bad = [S.Transform("half shift", t=torch.tensor([1.25, 0.0], dtype=torch.float64)),
           C.lattice_point_operation(S.rotation_matrix_2d(math.pi / 2).round(), [2.5, 1.25]),
           C.lattice_point_operation(S.rotation_matrix_2d(0.3), site)]
    for T in bad:
        assert not C.crystal_maps_onto_itself(g, T), T


def test_rollout_position_errors_minimum_image_and_mask():
    true = torch.zeros(3, 4, 2)
    pred = torch.zeros(3, 4, 2)
    pred[0, :, 0] = 9.9  # 0.1 away through the boundary
    pred[2] = 5.0  # masked out
    err = C.rollout_position_errors(pred, true, torch.tensor([[10.0, 10.0]]), mask=torch.tensor([True, True, False]))
    assert torch.allclose(err, torch.full((4,), 0.01 / 2), atol=1e-5)


def test_total_momentum_batch_and_mask():
    b = Batch.from_data_list([_crystal_graph(3, 0), _crystal_graph(4, 1)])
    p = C.total_momentum(b.vel, b.batch, ~b.fixed)
    assert p.shape == (2, 2)
    assert torch.allclose(p[1], b.vel[b.batch == 1].sum(0))
    traj = torch.stack([b.vel, 2 * b.vel], dim=1)
    assert torch.allclose(C.total_momentum(traj, b.batch)[:, 1], 2 * p)


def test_speed_distance():
    v = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    assert C.speed_distance(v, v) == 0.0
    assert C.speed_distance(2 * v, v) == pytest.approx(float(v.norm(dim=-1).mean()), rel=1e-5)


def test_mobile_only_keeps_the_crystal():
    g = _crystal_graph()
    T = C.mobile_only(S.Transform("shift", t=torch.tensor([1.25, 0.0], dtype=torch.float64)))
    h = T(g)
    assert torch.equal(h.pos[:16], g.pos[:16])
    assert torch.allclose(h.pos[16:], (g.pos[16:] + torch.tensor([1.25, 0.0])) % 10)
    assert not C.crystal_maps_onto_itself(g, S.Transform("shift", t=torch.tensor([1.25, 0.0], dtype=torch.float64)))
    with pytest.raises(ValueError, match="permutation"):
        C.mobile_only(S.permutation(g))


def test_crystal_maps_onto_itself_on_a_batch():
    b = Batch.from_data_list([_crystal_graph(3, 0), _crystal_graph(5, 1)])
    assert C.crystal_maps_onto_itself(b, C.lattice_translation(1, 2))
    assert not C.crystal_maps_onto_itself(b, S.Transform("half", t=torch.tensor([0.0, 1.25], dtype=torch.float64)))
