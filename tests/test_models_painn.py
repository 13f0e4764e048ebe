"""PaiNN: the message and update blocks one by one (equivariance of the vector features, invariance of the
scalars), then the whole model with the coverage of NequIP's tests (symmetries in float32 and float64, forces =
finite differences, periodic boxes, batching, mirror images, input checks, energy statistics, a few training
steps on ethanol, checkpoints, the ASE calculator)."""

import copy
import functools

import pytest
import torch
from torch_geometric.data import Batch

from course_lib import symmetry as S
from course_lib.data import make_graph
from course_lib.datasets import load_molecules
from course_lib.models import energy_and_forces
from course_lib.models.painn import PaiNN, PaiNNMessage, PaiNNUpdate
from course_lib.models.radial import bessel_basis, cosine_cutoff
from course_lib.neighbors import radius_graph

SPECIES = torch.tensor([1, 6, 7, 8])


def _molecule(n=6, seed=0, dtype=torch.float64, side=3.0):
    """A random 'molecule': n atoms of H/C/N/O in a cube of side ``side`` (Angstrom); generic, so chiral."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, 3, generator=g, dtype=torch.float64) * side
    z = SPECIES[torch.randint(0, len(SPECIES), (n,), generator=g)]
    return make_graph(pos.to(dtype), dtype=dtype, z=z)


def _batch(dtype=torch.float64):
    return Batch.from_data_list([_molecule(n, seed=n, dtype=dtype) for n in (3, 6, 9)])


@functools.cache
def _models():
    torch.manual_seed(7)
    m = PaiNN(hidden=16, num_layers=3).eval()
    with torch.no_grad():
        m.shift.uniform_(-2.0, 2.0)
        m.scale.uniform_(0.5, 1.5)
    return {torch.float32: m, torch.float64: copy.deepcopy(m).double()}


def _model(dtype=torch.float64):
    return _models()[dtype]


# -- blocks ------------------------------------------------------------------------------------------------


def _block_inputs(R=None, seed=0, F=5, K=6, cutoff=4.0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(7, 3, generator=g, dtype=torch.float64) * 3.0
    s = torch.randn(7, F, generator=g, dtype=torch.float64)
    v = torch.randn(7, 3, F, generator=g, dtype=torch.float64)
    if R is not None:
        pos, v = pos @ R.T, torch.einsum("ab,nbf->naf", R, v)
    edge_index, edge_vec = radius_graph(pos, cutoff)
    r = edge_vec.norm(dim=-1)
    return s, v, bessel_basis(r, cutoff, K), cosine_cutoff(r, cutoff), edge_vec / r[:, None], edge_index


@pytest.mark.parametrize("det", [1, -1])
def test_message_and_update_blocks_are_equivariant(det):
    torch.manual_seed(0)
    message, update = PaiNNMessage(5, 6).double(), PaiNNUpdate(5).double()
    R = S.random_orthogonal(3, det=det, generator=3)
    ds, dv = message(*_block_inputs())
    ds_R, dv_R = message(*_block_inputs(R=R))
    assert torch.allclose(ds_R, ds, atol=1e-12)                                   # scalars: invariant
    assert torch.allclose(dv_R, torch.einsum("ab,nbf->naf", R, dv), atol=1e-12)   # vectors: rotate with R
    s, v = _block_inputs()[:2]
    us, uv = update(s, v)
    us_R, uv_R = update(s, torch.einsum("ab,nbf->naf", R, v))
    assert torch.allclose(us_R, us, atol=1e-12)
    assert torch.allclose(uv_R, torch.einsum("ab,nbf->naf", R, uv), atol=1e-12)
    assert dv.abs().max() > 0.1 and uv.abs().max() > 0.1  # not trivially zero


def test_update_block_formula():
    """Delta v = a_vv o U v, Delta s = a_ss + a_sv o <U v, V v>, with a = MLP([s, |V v|])."""
    torch.manual_seed(1)
    update = PaiNNUpdate(4).double()
    s, v = _block_inputs(F=4)[:2]
    Uv = torch.einsum("gf,naf->nag", update.U.weight, v)
    Vv = torch.einsum("gf,naf->nag", update.V.weight, v)
    a = update.a(torch.cat([s, Vv.norm(dim=1)], -1))
    ds, dv = update(s, v)
    assert torch.allclose(dv, a[:, None, :4] * Uv, atol=1e-10)
    assert torch.allclose(ds, a[:, 8:] + a[:, 4:8] * (Uv * Vv).sum(1), atol=1e-10)


def test_message_block_formula_on_two_atoms():
    """Two atoms: Delta v_0 = v_1 o phi_vv(s_1) o W_vv(r) + phi_vs(s_1) o W_vs(r) * r_01 / |r_01|."""
    torch.manual_seed(2)
    F, K, rc = 3, 4, 4.0
    message = PaiNNMessage(F, K).double()
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 0.5]], dtype=torch.float64)
    s = torch.randn(2, F, dtype=torch.float64)
    v = torch.randn(2, 3, F, dtype=torch.float64)
    edge_index, edge_vec = radius_graph(pos, rc)
    r = edge_vec.norm(dim=-1)
    ds, dv = message(s, v, bessel_basis(r, rc, K), cosine_cutoff(r, rc), edge_vec / r[:, None], edge_index)
    d = pos[1] - pos[0]
    x = message.phi(s[1]) * message.W(bessel_basis(d.norm()[None], rc, K))[0] * cosine_cutoff(d.norm(), rc)
    assert torch.allclose(ds[0], x[:F], atol=1e-12)
    assert torch.allclose(dv[0], v[1] * x[F:2 * F] + x[2 * F:] * (d / d.norm())[:, None], atol=1e-12)


# -- the whole model ---------------------------------------------------------------------------------------


def test_default_construction():
    m = PaiNN()
    assert m.config == {"hidden": 32, "num_layers": 3, "cutoff": 4.0, "num_basis": 20, "species": (1, 6, 7, 8),
                        "readout_hidden": 16}
    assert len(m.messages) == len(m.updates) == 3
    b = _batch(torch.float32)
    E, F = energy_and_forces(m, b)
    assert E.shape == (3,) and F.shape == b.pos.shape and torch.isfinite(F).all()
    s, v = m.atomic_features(b)
    assert s.shape == (b.num_nodes, 32) and v.shape == (b.num_nodes, 3, 32)


def test_symmetries_float64_and_float32():
    for dtype in (torch.float64, torch.float32):
        model = _model(dtype)
        b = _batch(dtype)
        for name, T in S.standard_transforms(b, generator=1).items():
            e_err = S.equivariance_error(model, b, T)
            f_err = S.equivariance_error(functools.partial(energy_and_forces, model), b, T,
                                         output=("invariant", "vector"))
            print(f"{dtype}: {name} energy error {e_err:.1e}, forces {f_err:.1e}")
            tol = 1e-12 if dtype == torch.float64 else S.default_tolerance(dtype)
            assert e_err < tol and f_err < tol


def test_vector_features_are_equivariant():
    model = _model()
    g = _molecule(7, seed=5)
    s, v = model.atomic_features(g)
    for det in (1, -1):
        R = S.random_orthogonal(3, det=det, generator=det + 5)
        h = g.clone()
        h.pos = g.pos @ R.T
        s_R, v_R = model.atomic_features(h)
        assert torch.allclose(s_R, s, atol=1e-12)
        assert torch.allclose(v_R, torch.einsum("ab,nbf->naf", R, v), atol=1e-12)
    assert v.abs().max() > 1e-3


def test_symmetries_in_a_periodic_box():
    """In a box the model sees periodic images (minimum image): the box's symmetries hold, and the energy
    differs from open space when the images are within the cutoff."""
    model = _model()
    graphs = [_molecule(8, seed=11, side=8.5), _molecule(5, seed=12, side=8.5)]
    open_space = graphs[0].clone()
    for g in graphs:
        g.box = torch.full((1, 3), 8.5, dtype=torch.float64)
    g, b = graphs[0], Batch.from_data_list(graphs)
    for name, T in S.standard_transforms(b, generator=2).items():
        e_err = S.equivariance_error(model, b, T)
        f_err = S.equivariance_error(functools.partial(energy_and_forces, model), b, T, output=("invariant", "vector"))
        print(f"box: {name} energy error {e_err:.1e}, forces {f_err:.1e}")
        assert e_err < 1e-12 and f_err < 1e-12
    with torch.no_grad():
        assert (model(g) - model(open_space)).abs().item() > 1e-6


def test_forces_match_finite_differences():
    model = _model()
    g = _molecule(n=6, seed=3)
    _, F = energy_and_forces(model, g)
    h = 1e-5
    for i, k in [(0, 0), (2, 1), (5, 2), (3, 0)]:
        gp, gm = g.clone(), g.clone()
        gp.pos, gm.pos = g.pos.clone(), g.pos.clone()
        gp.pos[i, k] += h
        gm.pos[i, k] -= h
        with torch.no_grad():
            fd = -(model(gp) - model(gm)) / (2 * h)
        assert float(F[i, k]) == pytest.approx(float(fd), abs=1e-7)


def test_forces_are_finite_when_the_vectors_cancel():
    """A linear symmetric molecule: the bond vectors at the centre cancel (v = 0 there): |V v| keeps a finite
    gradient thanks to the eps under the square root."""
    g = make_graph(torch.tensor([[-1.2, 0.0, 0.0], [0.0, 0.0, 0.0], [1.2, 0.0, 0.0]], dtype=torch.float64),
                   dtype=torch.float64, z=torch.tensor([8, 6, 8]))
    _, F = energy_and_forces(_model(), g)
    assert torch.isfinite(F).all()
    assert F[:, 1:].abs().max() < 1e-10 and torch.allclose(F[0], -F[2], atol=1e-10)


def test_no_interaction_across_molecules_in_a_batch():
    model = _model()
    a, b = _molecule(5, seed=1), _molecule(7, seed=2)
    E_ab, F_ab = energy_and_forces(model, Batch.from_data_list([a, b]))
    (E_a, F_a), (E_b, F_b) = energy_and_forces(model, a), energy_and_forces(model, b)
    assert torch.allclose(E_ab, torch.cat([E_a, E_b]), atol=1e-12)
    assert torch.allclose(F_ab, torch.cat([F_a, F_b]), atol=1e-12)


def test_mirror_images_have_the_same_energy():
    """PaiNN is O(3) invariant: a chiral molecule and its mirror image get the same energy."""
    mol = _molecule(6, seed=4)
    mirror = mol.clone()
    mirror.pos = mol.pos * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        assert (_model()(mol) - _model()(mirror)).abs().item() < 1e-12


def test_bad_inputs_are_named():
    for cutoff in (0.0, -2.0):
        with pytest.raises(ValueError, match="cutoff"):
            PaiNN(cutoff=cutoff)
    with pytest.raises(ValueError, match="species"):
        PaiNN(species=(1, 6, 6))
    with pytest.raises(ValueError, match="num_layers"):
        PaiNN(num_layers=0)
    model = _model(torch.float32)
    g = _molecule(dtype=torch.float32)
    for bad in (9, 0, 200, -1):
        h = g.clone()
        h.z = g.z.clone()
        h.z[2] = bad
        with pytest.raises(ValueError, match=r"species=\.\.\. including them"):
            model(h)
    f = g.clone()
    f.z = g.z.float()
    with pytest.raises(ValueError, match="'z'"):
        model(f)
    flat = g.clone()
    flat.pos = g.pos[:, :2]
    with pytest.raises(ValueError, match="'pos'"):
        model(flat)
    nan = g.clone()
    nan.pos = g.pos.clone()
    nan.pos[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(nan)


def test_fit_energy_scale():
    ref = {1: -13.6, 6: -1029.8, 7: -1485.3, 8: -2041.6}
    graphs = [_molecule(n, seed=100 + n) for n in range(3, 15)]
    g = torch.Generator().manual_seed(0)
    for m in graphs:
        m.energy = torch.tensor([sum(ref[int(z)] for z in m.z)], dtype=torch.float64)
        m.energy += 0.01 * torch.randn(1, generator=g, dtype=torch.float64)
        m.forces = 0.5 * torch.randn(m.num_nodes, 3, generator=g, dtype=torch.float64)
    model = PaiNN(hidden=8, num_layers=1)
    stats = model.fit_energy_scale(graphs)
    for k, z in enumerate(model.species):
        assert stats.shift[k].item() == pytest.approx(ref[z], abs=0.05)
    rms = torch.cat([m.forces.reshape(-1) for m in graphs]).pow(2).mean().sqrt().item()
    assert stats.scale == pytest.approx(rms) and stats.avg_num_neighbors is None
    assert model.trained_species == (1, 6, 7, 8)
    with pytest.raises(ValueError, match="at least one graph"):
        model.fit_energy_scale([])


def test_a_few_training_steps_on_ethanol_reduce_the_loss():
    torch.manual_seed(0)
    graphs = load_molecules("ethanol", "train")[:40]
    model = PaiNN(hidden=16, num_layers=2)
    model.fit_energy_scale(graphs)
    batch = Batch.from_data_list(graphs[:8])
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    losses = []
    for _ in range(15):
        opt.zero_grad()
        E, F = energy_and_forces(model, batch, create_graph=True)
        loss = ((E - batch.energy) ** 2).mean() + ((F - batch.forces) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(f"energy + force loss: {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert losses[-1] < 0.5 * losses[0]


def test_untrained_species_are_refused_and_checkpoints_round_trip(tmp_path):
    from course_lib.train import load_checkpoint, load_model, save_checkpoint

    g = torch.Generator().manual_seed(0)
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.1, 0.0, 0.0], [0.0, 1.2, 0.1]], dtype=torch.float64)
    water_like = [make_graph(pos + 0.05 * torch.randn(3, 3, generator=g, dtype=torch.float64), dtype=torch.float64,
                             z=torch.tensor([8, 1, 1]), energy=torch.randn(1, dtype=torch.float64),
                             forces=torch.randn(3, 3, dtype=torch.float64)) for _ in range(3)]
    model = PaiNN(hidden=4, num_layers=1).double()
    assert model.trained_species is None
    model.fit_energy_scale(water_like)
    assert model.trained_species == (1, 8)
    batch = Batch.from_data_list(water_like)
    E = model(batch)
    nitrogen = make_graph(pos, dtype=torch.float64, z=torch.tensor([7, 1, 1]))
    with pytest.raises(ValueError, match=r"\[7\].*not in its training data"):
        model(Batch.from_data_list([nitrogen]))
    save_checkpoint(tmp_path / "m.pt", model, config=model.config)
    again = PaiNN(hidden=4, num_layers=1).double()
    load_checkpoint(tmp_path / "m.pt", again)
    assert again.trained_species == (1, 8)
    assert torch.allclose(again(batch), E, atol=1e-12)
    rebuilt, _ = load_model(tmp_path / "m.pt")  # class and config from the checkpoint
    assert isinstance(rebuilt, PaiNN) and torch.allclose(rebuilt.double()(batch), E, atol=1e-5)


def test_ase_calculator_runs_painn():
    ase = pytest.importorskip("ase")
    from course_lib.ase_calculator import ModelCalculator

    model = _model()
    mol = _molecule(5, seed=9)
    atoms = ase.Atoms(numbers=mol.z.numpy(), positions=mol.pos.numpy())
    atoms.calc = ModelCalculator(model)
    E, F = energy_and_forces(model, mol)
    assert atoms.get_potential_energy() == pytest.approx(E.item(), abs=1e-5)
    assert abs(atoms.get_forces() - F.detach().numpy()).max() < 1e-5
