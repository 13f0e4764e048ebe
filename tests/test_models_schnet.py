"""SchNet: symmetries, forces, agreement with PyG's SchNet, input checks and extensivity."""

import math

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.nn.models import SchNet as PyGSchNet

from course_lib import symmetry as S
from course_lib.data import make_graph
from course_lib.models import energy_and_forces
from course_lib.models.schnet import SchNet, ssp
from course_lib.neighbors import radius_graph

SPECIES = torch.tensor([1, 6, 7, 8, 9])


def _molecule(n=8, seed=0, dtype=torch.float64, side=4.0, box=None):
    """A random 'molecule': n atoms of H/C/N/O/F in a cube of side ``side`` (Angstrom)."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, 3, generator=g, dtype=torch.float64) * side
    z = SPECIES[torch.randint(0, len(SPECIES), (n,), generator=g)]
    return make_graph(pos.to(dtype), dtype=dtype, z=z, box=box)


def _batch(dtype=torch.float64, box=None):
    return Batch.from_data_list([_molecule(n, seed=n, dtype=dtype, box=box) for n in (3, 7, 12)])


@pytest.fixture(scope="module")
def model64():
    torch.manual_seed(0)
    return SchNet().double().eval()


def test_shifted_softplus():
    x = torch.linspace(-30, 30, 61, dtype=torch.float64)
    assert torch.allclose(ssp(x), torch.log(0.5 * torch.exp(x) + 0.5), atol=1e-12)
    assert float(ssp(torch.zeros(()))) == 0.0


def test_default_construction_and_output_shape(model64):
    m = SchNet()
    assert m.config == {"hidden": 64, "filters": 64, "num_layers": 3, "num_basis": 50, "cutoff": 5.0,
                        "max_z": 100}
    b = _batch(dtype=torch.float32)
    assert m(b).shape == (3,)
    E, F = energy_and_forces(m, b)
    assert E.shape == (3,) and F.shape == b.pos.shape and torch.isfinite(F).all()


@pytest.mark.parametrize("name", ["permutation", "translation", "rotation", "reflection"])
def test_energy_invariant_forces_equivariant_float64(model64, name):
    b = _batch()
    T = S.standard_transforms(b, generator=0)[name]
    if name == "reflection":
        assert T.det == pytest.approx(-1.0)
    print(S.assert_equivariant(model64, b, T, name=name, tol=1e-9))
    print(S.assert_equivariant(lambda x: energy_and_forces(model64, x), b, T, output=("invariant", "vector"),
                               name=f"{name} (forces)", tol=1e-9))


def test_symmetries_float32():
    torch.manual_seed(0)
    model = SchNet().eval()
    b = _batch(dtype=torch.float32)
    tol = S.default_tolerance(torch.float32)
    for name, T in S.standard_transforms(b, generator=2).items():
        e_err = S.equivariance_error(model, b, T)
        f_err = S.equivariance_error(lambda x: energy_and_forces(model, x), b, T, output=("invariant", "vector"))
        print(f"float32 {name}: energy err {e_err:.1e}, forces err {f_err:.1e}")
        assert e_err < tol and f_err < tol


@pytest.mark.parametrize("name", ["permutation", "periodic translation"])
def test_periodic_box_is_passed_to_the_neighbour_list(model64, name):
    b = _batch(box=[12.0, 12.0, 12.0])
    T = S.standard_transforms(b, generator=4)[name]
    print(S.assert_equivariant(model64, b, T, name=name, tol=1e-9))


def test_forces_match_finite_differences(model64):
    g = _molecule(n=6, seed=3)
    _, F = energy_and_forces(model64, g)
    h = 1e-6
    for i, k in [(0, 0), (2, 1), (5, 2), (3, 0)]:
        gp, gm = g.clone(), g.clone()
        gp.pos = g.pos.clone()
        gm.pos = g.pos.clone()
        gp.pos[i, k] += h
        gm.pos[i, k] -= h
        with torch.no_grad():
            fd = -(model64(gp) - model64(gm)) / (2 * h)
        assert float(F[i, k]) == pytest.approx(float(fd), abs=1e-6)


# -- comparison with torch_geometric.nn.models.SchNet ------------------------------------------------


def _pyg(dtype=torch.float64, **kwargs):
    """PyG's SchNet at our default hyper-parameters, with our (pure PyTorch) radius graph."""
    cutoff = 5.0

    def interaction_graph(pos, batch):
        edge_index, edge_vec = radius_graph(pos, cutoff, batch=batch)
        return edge_index, edge_vec.norm(dim=-1)

    torch.manual_seed(1)
    return PyGSchNet(hidden_channels=64, num_filters=64, num_interactions=3, num_gaussians=50, cutoff=cutoff,
                     interaction_graph=interaction_graph, **kwargs).to(dtype).eval()


def _n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_same_parameter_count_and_shapes_as_pyg():
    ours, theirs = SchNet(), _pyg(torch.float32)
    assert _n_params(ours) == _n_params(theirs)
    assert ours.embedding.weight.shape == theirs.embedding.weight.shape
    for a, b in zip(ours.interactions, theirs.interactions):
        assert [p.shape for p in a.filter_net.parameters()] == [p.shape for p in b.mlp.parameters()]
        assert a.in2f.weight.shape == b.conv.lin1.weight.shape and a.in2f.bias is None and b.conv.lin1.bias is None
        assert a.f2out.weight.shape == b.conv.lin2.weight.shape
        assert a.dense.weight.shape == b.lin.weight.shape
    assert ours.readout[0].weight.shape == theirs.lin1.weight.shape
    assert ours.readout[2].weight.shape == theirs.lin2.weight.shape
    assert torch.allclose(ours.rbf.mu, theirs.distance_expansion.offset)
    assert ours.rbf.gamma == pytest.approx(-theirs.distance_expansion.coeff)


def _exact_ln2(pyg_model):
    """PyG's ShiftedSoftplus subtracts ln 2 rounded to float32; use the exact value (for float64)."""
    for mod in pyg_model.modules():
        if type(mod).__name__ == "ShiftedSoftplus":
            mod.shift = math.log(2.0)
    return pyg_model


@pytest.mark.parametrize("dtype, exact_ln2, tol", [(torch.float64, True, 1e-13), (torch.float64, False, 1e-6),
                                                   (torch.float32, False, 1e-5)])
def test_copied_pyg_weights_give_the_same_energies_and_forces(dtype, exact_ln2, tol):
    theirs = _pyg(dtype)
    if exact_ln2:
        _exact_ln2(theirs)
    ours = SchNet.from_pyg(theirs)
    b = Batch.from_data_list([_molecule(n, seed=10 + n, dtype=dtype) for n in (4, 9, 15, 20)])
    E_ours, F_ours = energy_and_forces(ours, b)
    pos = b.pos.detach().requires_grad_(True)
    E_theirs = theirs(b.z, pos, b.batch).squeeze(-1)
    (g,) = torch.autograd.grad(E_theirs.sum(), pos)
    dE = (E_ours - E_theirs).abs().max().item()
    dF = (F_ours + g).abs().max().item()
    scale = max(1.0, E_theirs.abs().max().item())
    print(f"{dtype}, exact ln 2 in PyG: {exact_ln2}: max |E_ours - E_pyg| = {dE:.2e} (|E| <= {scale:.2f}), "
          f"max |F_ours - F_pyg| = {dF:.2e}")
    assert dE < tol * scale and dF < tol * max(1.0, g.abs().max().item())


def test_copied_pyg_offsets_mean_std_atomref_scale():
    atomref = torch.randn(100, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 100
    theirs = _exact_ln2(_pyg(torch.float64, mean=-2.5, std=0.7, atomref=atomref))
    theirs.scale = 1.5
    ours = SchNet.from_pyg(theirs)
    b = _batch()
    with torch.no_grad():
        E_theirs = theirs(b.z, b.pos, b.batch).squeeze(-1)
        assert torch.allclose(ours(b), E_theirs, rtol=1e-12, atol=1e-9)
        assert ours.scale.item() == pytest.approx(1.05)


# -- inputs, energy offsets, extensivity -------------------------------------------------------------


def test_bad_inputs_are_named():
    m = SchNet()
    g = _molecule(dtype=torch.float32)
    no_z = g.clone()
    no_z.z = None
    with pytest.raises(ValueError, match="'z'"):
        m(no_z)
    for bad in (0, -3, 101):
        h = g.clone()
        h.z = g.z.clone()
        h.z[2] = bad
        with pytest.raises(ValueError, match=r"'z'.*max_z"):
            m(h)
    with pytest.raises(ValueError, match="max_z = 1..10"):
        SchNet(max_z=10)(make_graph(g.pos, z=torch.full((g.num_nodes,), 11)))
    f = g.clone()
    f.z = g.z.float()
    with pytest.raises(ValueError, match="'z'"):
        m(f)
    flat = g.clone()
    flat.pos = g.pos[:, :2]
    with pytest.raises(ValueError, match="'pos'"):
        m(flat)


def test_fit_energy_scale_recovers_per_species_offsets():
    ref = {1: -13.6, 6: -1029.8, 7: -1485.3, 8: -2041.6, 9: -2712.4}
    graphs = [_molecule(n, seed=100 + n) for n in range(3, 23)]
    g = torch.Generator().manual_seed(0)
    for m in graphs:
        m.energy = torch.tensor([sum(ref[int(z)] for z in m.z)], dtype=torch.float64)
        m.energy += 0.1 * torch.randn(1, generator=g, dtype=torch.float64)
    model = SchNet()
    fitted = model.fit_energy_scale(graphs)
    shift, scale = fitted.shift, fitted.scale
    for z, e in ref.items():
        assert shift[z - 1].item() == pytest.approx(e, abs=0.2)
    assert 1e-3 < scale < 1.0
    # species never seen get the mean energy per atom; the global fit uses one shift for all
    total = sum(m.energy.item() for m in graphs) / sum(m.num_nodes for m in graphs)
    assert shift[2].item() == pytest.approx(total, rel=1e-5)
    shift_g = model.fit_energy_scale(graphs, per_species=False).shift
    assert torch.allclose(shift_g, torch.full_like(shift_g, total))


def test_extensive_and_local(model64):
    """Two copies far apart have twice the energy of one (the per-atom shift is doubled too)."""
    one = _molecule(n=7, seed=4)
    model = SchNet().double().eval()
    model.load_state_dict(model64.state_dict())
    model.shift.uniform_(-100.0, 100.0)
    two = one.clone()
    two.pos = torch.cat([one.pos, one.pos + 100.0])
    two.z = torch.cat([one.z, one.z])
    with torch.no_grad():
        E1, E2 = float(model(one)), float(model(two))
        shift1 = float(model.shift[one.z - 1].sum())
    assert E2 == pytest.approx(2 * E1, rel=1e-12)
    assert E2 - 2 * shift1 == pytest.approx(2 * (E1 - shift1), rel=1e-10, abs=1e-10)
