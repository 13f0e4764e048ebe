"""NequIP: the blocks one by one (radial basis, envelope, spherical harmonics, convolution, gate), then the
whole model (symmetries in float32 and float64 for l_max = 0, 1, 2 with and without parity, forces,
batching, chirality, input checks, energy statistics, a few training steps on ethanol)."""

import copy
import functools
import math

import pytest
import torch
from e3nn import o3
from torch_geometric.data import Batch

from course_lib import symmetry as S
from course_lib.data import make_graph
from course_lib.datasets import load_molecules
from course_lib.irreps import wigner_D
from course_lib.models import NequIP, energy_and_forces
from course_lib.models.nequip import (
    ConvolutionBlock,
    GateNonlinearity,
    InteractionBlock,
    SphericalHarmonicEdgeAttrs,
    default_hidden_irreps,
)
from course_lib.models.radial import BesselRBF, bessel_basis, polynomial_envelope
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
def _models(l_max, parity):
    """One set of weights per (l_max, parity), as a float32 model and a float64 copy."""
    torch.manual_seed(l_max + 10 * parity)
    m = NequIP(l_max=l_max, parity=parity).eval()
    with torch.no_grad():
        m.shift.uniform_(-2.0, 2.0)  # non-trivial per-species offsets and scales
        m.scale.uniform_(0.5, 1.5)
    m.avg_num_neighbors = 4.0
    return {torch.float32: m, torch.float64: copy.deepcopy(m).double()}


def _model(l_max=1, parity=True, dtype=torch.float64):
    return _models(l_max, parity)[dtype]


def _rand_rotation(det, seed):
    return S.random_orthogonal(3, det=det, generator=seed)


def _D(irreps, R):
    """Wigner-D matrix of ``irreps`` for ``R``, float64 (course_lib.irreps; e3nn alone works in the default dtype)."""
    return wigner_D(irreps, R)


# -- radial basis and envelope -----------------------------------------------------------------------------


def test_bessel_basis_formula():
    r = torch.linspace(0.1, 3.9, 40, dtype=torch.float64)
    rc = 4.0
    B = bessel_basis(r, rc, 8)
    for n in (1, 3, 8):
        expected = 2.0 / rc * torch.sin(n * math.pi * r / rc) / r
        assert torch.allclose(B[:, n - 1], expected, atol=1e-14)
    # BesselRBF (as used in NequIP) = Bessel basis x polynomial envelope; trainable frequencies start at
    # n pi / r_c (stored in float32 by a float32 model, hence the tolerance)
    expected = B * polynomial_envelope(r, rc, 6)[:, None]
    assert torch.allclose(BesselRBF(8, rc, p=6, trainable=False)(r), expected, atol=1e-14)
    assert torch.allclose(BesselRBF(8, rc, p=6, trainable=True).double()(r), expected, atol=1e-6)
    assert sum(p.numel() for p in BesselRBF(8, rc, trainable=True).parameters()) == 8
    assert sum(p.numel() for p in BesselRBF(8, rc, trainable=False).parameters()) == 0


@pytest.mark.parametrize("p", [2, 6])
def test_polynomial_envelope_values_and_derivatives(p):
    rc = 4.0
    u = polynomial_envelope
    assert float(u(torch.tensor([0.0], dtype=torch.float64), rc, p)) == 1.0
    assert float(u(torch.tensor([rc], dtype=torch.float64), rc, p)) == 0.0
    assert torch.all(u(torch.tensor([4.5, 10.0]), rc, p) == 0.0)
    x = torch.linspace(0.0, rc, 101, dtype=torch.float64)
    assert torch.all(u(x, rc, p)[:-1] > 0) and torch.all(torch.diff(u(x, rc, p)) <= 0)  # 1 -> 0, monotone
    # value, first and second derivative vanish as r -> r_c from below (smooth energies and forces)
    r = torch.tensor([rc * (1 - 1e-6)], dtype=torch.float64, requires_grad=True)
    val = u(r, rc, p)
    (d1,) = torch.autograd.grad(val.sum(), r, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), r)
    print(f"p={p}: u = {val.item():.1e}, u' = {d1.item():.1e}, u'' = {d2.item():.1e} at r_c (1 - 1e-6)")
    assert abs(val.item()) < 1e-9 and abs(d1.item()) < 1e-6 and abs(d2.item()) < 1e-3


@pytest.mark.parametrize("p", [2, 6, 9])
def test_polynomial_envelope_is_exactly_twice_differentiable_at_the_cutoff(p):
    # u, u', u'' vanish at x = 1 for every p; the third derivative does not: -p(p+1)(p+2) (-336 for p = 6)
    # (docstrings once claimed p - 1 vanishing derivatives; this pins what the formula gives)
    x = torch.tensor([1.0 - 1e-7], dtype=torch.float64, requires_grad=True)
    u = polynomial_envelope(x, 1.0, p)
    derivs = [u]
    for _ in range(3):
        (d,) = torch.autograd.grad(derivs[-1].sum(), x, create_graph=True)
        derivs.append(d)
    values = [float(d) for d in derivs]
    assert all(abs(v) < 1e-3 for v in values[:3]), values
    assert values[3] == pytest.approx(-p * (p + 1) * (p + 2), rel=1e-4), values


# -- spherical harmonics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("l_max", [0, 1, 2, 3])
def test_spherical_harmonics_equivariant_under_O3(l_max):
    sh = SphericalHarmonicEdgeAttrs(l_max, parity=True)
    assert sh.irreps_out == o3.Irreps.spherical_harmonics(l_max)
    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    Y = sh(x)
    assert Y.shape == (30, (l_max + 1) ** 2)
    # component normalisation: sum_m Y^l_m(x)^2 = 2l + 1 for every direction; only the direction counts
    for l in range(l_max + 1):
        assert torch.allclose(Y[:, l * l:(l + 1) ** 2].pow(2).sum(1), torch.full((30,), 2.0 * l + 1).double(),
                              atol=1e-12)
    assert torch.allclose(sh(3.7 * x), Y, atol=1e-12)
    for det in (1, -1):
        R = _rand_rotation(det, seed=l_max)
        D = _D(sh.irreps_out, R)
        err = (sh(x @ R.T) - Y @ D.T).abs().max().item()
        print(f"l_max={l_max}, det {det:+d}: |Y(Rx) - D(R) Y(x)| = {err:.1e}")
        assert err < 1e-12


def test_spherical_harmonics_so3_labels_break_reflections():
    """parity=False labels Y^1 as even (1e): right for rotations, wrong for reflections."""
    sh = SphericalHarmonicEdgeAttrs(2, parity=False)
    assert sh.irreps_out == o3.Irreps("1x0e+1x1e+1x2e")
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    R = _rand_rotation(1, seed=3)
    assert torch.allclose(sh(x @ R.T), sh(x) @ _D(sh.irreps_out, R).T, atol=1e-12)
    M = _rand_rotation(-1, seed=3)
    err = (sh(x @ M.T) - sh(x) @ _D(sh.irreps_out, M).T).abs().max().item()
    assert err > 0.1


# -- convolution, gate, interaction block -----------------------------------------------------------------


def _graph_inputs(irreps_in, l_max, parity, R=None, seed=0):
    """Random features [N, irreps_in], positions and edges; with ``R``, the rotated copy (D_in x, R r)."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(7, 3, generator=g, dtype=torch.float64) * 3.0
    x = torch.randn(7, irreps_in.dim, generator=g, dtype=torch.float64)
    rbf_fn = BesselRBF(8, 4.0).double()
    sh_fn = SphericalHarmonicEdgeAttrs(l_max, parity)
    if R is not None:
        pos, x = pos @ R.T, x @ _D(irreps_in, R).T
    edge_index, edge_vec = radius_graph(pos, 4.0)
    return x, sh_fn(edge_vec), rbf_fn(edge_vec.norm(dim=-1)), edge_index


@pytest.mark.parametrize("l_max, parity", [(1, True), (2, True), (2, False)])
@pytest.mark.parametrize("fused", [True, False])
def test_convolution_block_equivariant(l_max, parity, fused):
    torch.set_default_dtype(torch.float64)  # e3nn stores the Clebsch-Gordan coefficients in the default dtype
    try:
        irreps_in = default_hidden_irreps(4, l_max, parity)
        conv = ConvolutionBlock(irreps_in, o3.Irreps.spherical_harmonics(l_max, -1 if parity else 1), irreps_in,
                                fused=fused)
    finally:
        torch.set_default_dtype(torch.float32)
    assert conv.fused == fused
    conv.avg_num_neighbors.fill_(3.0)
    dets = (1, -1) if parity else (1,)
    for det in dets:
        R = _rand_rotation(det, seed=5)
        out = conv(*_graph_inputs(irreps_in, l_max, parity))
        out_R = conv(*_graph_inputs(irreps_in, l_max, parity, R=R))
        err = (out_R - out @ _D(conv.irreps_out, R).T).abs().max().item()
        print(f"conv {irreps_in} (fused={fused}), det {det:+d}: error {err:.1e} (|out| ~ {out.abs().max():.1f})")
        assert err < 1e-12


def test_fused_tensor_product_equals_e3nn():
    torch.set_default_dtype(torch.float64)
    try:
        for l_max, parity in [(0, True), (1, True), (2, True), (2, False)]:
            irreps_sh = o3.Irreps.spherical_harmonics(l_max, -1 if parity else 1)
            for irreps_in in (o3.Irreps("5x0e"), default_hidden_irreps(5, l_max, parity)):
                conv = ConvolutionBlock(irreps_in, irreps_sh, default_hidden_irreps(5, l_max, parity))
                assert conv.fused
                g = torch.Generator().manual_seed(l_max)
                x = torch.randn(11, irreps_in.dim, generator=g)
                sh = o3.spherical_harmonics(irreps_sh, torch.randn(11, 3, generator=g), True, normalization="component")
                w = torch.randn(11, conv.tp.weight_numel, generator=g)
                assert torch.allclose(conv.tensor_product(x, sh, w), conv.tp(x, sh, w), atol=1e-13)
        # unequal multiplicities: the e3nn tensor product is used
        assert not ConvolutionBlock("4x0e+2x1o", "1x0e+1x1o", "4x0e+2x1o").fused
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("parity", [True, False])
def test_gate_equivariant(parity):
    irreps_sh = o3.Irreps.spherical_harmonics(2, -1 if parity else 1)
    hidden = default_hidden_irreps(3, 2, parity)
    gate = GateNonlinearity(hidden, hidden, irreps_sh).double()
    assert gate.irreps_out == hidden
    assert gate.irreps_in == o3.Irreps("9x0e") + hidden[1:]  # 3 scalars, one gate per l > 0 channel (3 + 3)
    y = torch.randn(10, gate.irreps_in.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for det in ((1, -1) if parity else (1,)):
        R = _rand_rotation(det, seed=7)
        err = (gate(y @ _D(gate.irreps_in, R).T) - gate(y) @ _D(gate.irreps_out, R).T)
        print(f"gate {hidden}, det {det:+d}: error {err.abs().max():.1e}")
        assert err.abs().max() < 1e-12
    # the first block, fed with scalars only, cannot make 1e from 0e x 1o: those irreps are dropped
    g0 = GateNonlinearity("4x0e+4x0o+4x1o+4x1e", "4x0e", "1x0e+1x1o")
    assert g0.irreps_out == o3.Irreps("4x0e+4x1o")
    # the formula: [s, g, v] -> [c1 SiLU(s), c2 sigmoid(g) v], where e3nn rescales each activation by the
    # constant c that gives it unit second moment for a standard normal input: E[(c f(z))^2] = 1
    g1 = GateNonlinearity("1x0e+1x1o", "1x0e+1x1o", "1x0e+1x1o").double()
    y = torch.tensor([[0.3, -0.7, 1.0, 2.0, 3.0]], dtype=torch.float64)
    out = g1(y)[0]
    z = torch.linspace(-12, 12, 200001, dtype=torch.float64)
    normal = torch.exp(-z**2 / 2) / math.sqrt(2 * math.pi)

    def c(f):
        return 1 / torch.trapezoid(f(z) ** 2 * normal, z).sqrt()

    silu, sigmoid = torch.nn.functional.silu, torch.sigmoid
    assert out[0].item() == pytest.approx((c(silu) * silu(y[0, 0])).item(), rel=2e-3)
    assert torch.allclose(out[1:], c(sigmoid) * sigmoid(y[0, 1]) * y[0, 2:], rtol=2e-3)


def test_interaction_block_equivariant_and_residual():
    torch.set_default_dtype(torch.float64)
    try:
        irreps_sh = o3.Irreps.spherical_harmonics(1)
        hidden = default_hidden_irreps(4, 1, True)
        first = InteractionBlock("4x0e", hidden, irreps_sh, "3x0e")
        block = InteractionBlock(hidden, hidden, irreps_sh, "3x0e")
    finally:
        torch.set_default_dtype(torch.float32)
    assert not first.resnet and block.resnet and block.irreps_out == hidden
    a = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1, 2, 0]), 3).double()
    R = _rand_rotation(-1, seed=11)
    x, sh, rbf, edge_index = _graph_inputs(hidden, 1, True)
    out = block(x, a, sh, rbf, edge_index)
    x_R, sh_R, rbf_R, edge_index_R = _graph_inputs(hidden, 1, True, R=R)
    out_R = block(x_R, a, sh_R, rbf_R, edge_index_R)
    assert (out_R - out @ _D(hidden, R).T).abs().max() < 1e-12
    # a block that changes the irreps has no residual; one that keeps them adds its input
    assert torch.allclose(block(x, a, sh, rbf, edge_index) - x,
                          block.nonlinearity(block.linear_2(block.conv(block.linear_1(x), sh, rbf, edge_index))
                                             + block.self_connection(x, a)))


# -- the whole model ---------------------------------------------------------------------------------------


def test_default_construction():
    m = NequIP()
    assert m.config["l_max"] == 1 and m.config["parity"] is True and m.config["hidden"] == 32
    assert m.config["num_layers"] == 3 and m.config["cutoff"] == 4.0 and m.config["num_basis"] == 8
    assert m.config["p"] == 6 and m.config["radial_hidden"] == (64, 64) and m.species == (1, 6, 7, 8)
    assert m.irreps_hidden == o3.Irreps("32x0e+32x1o")
    assert [layer.resnet for layer in m.layers] == [False, True, True]
    assert [str(layer.irreps_out) for layer in m.layers] == ["32x0e+32x1o"] * 3
    assert m.avg_num_neighbors == 1.0
    b = _batch(torch.float32)
    E, F = energy_and_forces(m, b)
    assert E.shape == (3,) and F.shape == b.pos.shape and torch.isfinite(F).all()
    assert default_hidden_irreps(32, 2, parity=True) == o3.Irreps("32x0e+32x1o+32x2e")
    assert default_hidden_irreps(32, 2, parity=False) == o3.Irreps("32x0e+32x1e+32x2e")
    assert default_hidden_irreps(32, 0) == o3.Irreps("32x0e")


@pytest.mark.parametrize("parity", [True, False])
@pytest.mark.parametrize("l_max", [0, 1, 2])
def test_symmetries_float64_and_float32(l_max, parity):
    for dtype in (torch.float64, torch.float32):
        model = _model(l_max, parity, dtype)
        b = _batch(dtype)
        for name, T in S.standard_transforms(b, generator=l_max).items():
            expect_broken = name == "reflection" and not parity and l_max > 0
            if expect_broken:  # the SO(3) variant: pseudo-scalars enter the energy
                err = S.equivariance_error(model, b, T)
                print(f"l_max={l_max}, parity={parity}, {dtype}: {name} energy error {err:.1e} (broken, SO(3) only)")
                print(S.assert_not_equivariant(model, b, T, min_error=1e-4))
                continue
            e_err = S.equivariance_error(model, b, T)
            f_err = S.equivariance_error(functools.partial(energy_and_forces, model), b, T,
                                         output=("invariant", "vector"))
            print(f"l_max={l_max}, parity={parity}, {dtype}: {name} energy error {e_err:.1e}, forces {f_err:.1e}")
            tol = 1e-12 if dtype == torch.float64 else S.default_tolerance(dtype)
            assert e_err < tol and f_err < tol


def test_forces_match_finite_differences():
    model = _model(2, True, torch.float64)
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


def test_no_interaction_across_molecules_in_a_batch():
    """Two molecules on top of each other in one batch: each gets the energy and forces it has alone."""
    model = _model(1, True, torch.float64)
    a, b = _molecule(5, seed=1), _molecule(7, seed=2)  # both in the same 3 A cube
    E_ab, F_ab = energy_and_forces(model, Batch.from_data_list([a, b]))
    (E_a, F_a), (E_b, F_b) = energy_and_forces(model, a), energy_and_forces(model, b)
    assert torch.allclose(E_ab, torch.cat([E_a, E_b]), atol=1e-12)
    assert torch.allclose(F_ab, torch.cat([F_a, F_b]), atol=1e-12)


def test_mirror_images_have_the_same_energy_only_with_parity():
    """A chiral molecule and its mirror image: equal energies for the O(3) model (l_max = 1 and 2), not for
    the SO(3) variant, whose 'scalars' include pseudo-scalars such as (a x b) . c."""
    mol = _molecule(6, seed=4)
    mirror = mol.clone()
    mirror.pos = mol.pos * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    for l_max in (1, 2):
        with torch.no_grad():
            o3_model, so3_model = _model(l_max, True), _model(l_max, False)
            d_o3 = (o3_model(mol) - o3_model(mirror)).abs().item()
            d_so3 = (so3_model(mol) - so3_model(mirror)).abs().item()
        print(f"l_max={l_max}: |E(mol) - E(mirror)| = {d_o3:.1e} (parity=True), {d_so3:.1e} (parity=False)")
        assert d_o3 < 1e-12 and d_so3 > 1e-4


def test_fused_and_e3nn_tensor_products_give_the_same_model():
    model = _model(2, True, torch.float32)
    b = _batch(torch.float32)
    E1, F1 = energy_and_forces(model, b)
    try:
        for layer in model.layers:
            layer.conv.fused = False
        E2, F2 = energy_and_forces(model, b)
    finally:
        for layer in model.layers:
            layer.conv.fused = True
    assert torch.allclose(E1, E2, atol=1e-4) and torch.allclose(F1, F2, atol=1e-4)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="not a valid irreps"):
        NequIP(hidden_irreps="32x0e+banana")
    with pytest.raises(ValueError, match="no even scalars"):
        NequIP(hidden_irreps="32x1o")
    with pytest.raises(ValueError, match="l_max"):
        NequIP(l_max=-1)
    for cutoff in (0.0, -2.0):
        with pytest.raises(ValueError, match="cutoff"):
            NequIP(cutoff=cutoff)
    with pytest.raises(ValueError, match="species"):
        NequIP(species=(1, 6, 6))
    with pytest.raises(ValueError, match="gate"):
        NequIP(gate="relu")
    model = _model(0, True, torch.float32)
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
    with pytest.raises(ValueError, match="avg_num_neighbors"):
        model.avg_num_neighbors = 0.0


def test_fit_energy_scale():
    ref = {1: -13.6, 6: -1029.8, 7: -1485.3, 8: -2041.6}
    graphs = [_molecule(n, seed=100 + n) for n in range(3, 15)]
    g = torch.Generator().manual_seed(0)
    for m in graphs:
        m.energy = torch.tensor([sum(ref[int(z)] for z in m.z)], dtype=torch.float64)
        m.energy += 0.01 * torch.randn(1, generator=g, dtype=torch.float64)
        m.forces = 0.5 * torch.randn(m.num_nodes, 3, generator=g, dtype=torch.float64)
    model = NequIP(l_max=0, num_layers=1)
    stats = model.fit_energy_scale(graphs)
    for k, z in enumerate(model.species):
        assert stats.shift[k].item() == pytest.approx(ref[z], abs=0.05)
    rms = torch.cat([m.forces.reshape(-1) for m in graphs]).pow(2).mean().sqrt().item()
    assert stats.scale == pytest.approx(rms)
    assert torch.allclose(model.scale, torch.full((4,), rms, dtype=torch.float32))
    n_edges = sum(radius_graph(m.pos, 4.0)[0].shape[1] for m in graphs)
    assert stats.avg_num_neighbors == pytest.approx(n_edges / sum(m.num_nodes for m in graphs))
    assert model.avg_num_neighbors == pytest.approx(stats.avg_num_neighbors, rel=1e-6)
    assert all(float(layer.conv.avg_num_neighbors) == pytest.approx(model.avg_num_neighbors) for layer in model.layers)


def test_a_few_training_steps_on_ethanol_reduce_the_loss():
    torch.manual_seed(0)
    graphs = load_molecules("ethanol", "train")[:40]
    model = NequIP(l_max=1, hidden=16, num_layers=2)
    model.fit_energy_scale(graphs)
    batch = Batch.from_data_list(graphs[:8])
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)

    def loss_fn():
        E, F = energy_and_forces(model, batch, create_graph=True)
        return ((E - batch.energy) ** 2).mean() + ((F - batch.forces) ** 2).mean()

    model.train()
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(f"energy + force loss: {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert losses[-1] < 0.5 * losses[0]


def test_untrained_species_are_refused_and_old_checkpoints_load(tmp_path):
    from torch_geometric.data import Batch

    from course_lib.data import make_graph
    from course_lib.train import load_checkpoint, save_checkpoint

    g = torch.Generator().manual_seed(0)
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.1, 0.0, 0.0], [0.0, 1.2, 0.1]], dtype=torch.float64)
    water_like = [make_graph(pos + 0.05 * torch.randn(3, 3, generator=g, dtype=torch.float64), dtype=torch.float64,
                             z=torch.tensor([8, 1, 1]), energy=torch.randn(1, dtype=torch.float64),
                             forces=torch.randn(3, 3, dtype=torch.float64)) for _ in range(3)]
    model = NequIP(hidden=4, num_layers=1).double()
    assert model.trained_species is None
    model.fit_energy_scale(water_like)
    assert model.trained_species == (1, 8)
    model(Batch.from_data_list(water_like))  # trained species: fine
    nitrogen = make_graph(pos, dtype=torch.float64, z=torch.tensor([7, 1, 1]))
    with pytest.raises(ValueError, match=r"\[7\].*not in its training data"):
        model(Batch.from_data_list([nitrogen]))
    # a checkpoint without the record (written before it existed) loads as "unknown": no check
    state = {k: v for k, v in model.state_dict().items() if k != "trained_mask"}
    fresh = NequIP(hidden=4, num_layers=1).double()
    fresh.load_state_dict(state)
    assert fresh.trained_species is None
    fresh(Batch.from_data_list([nitrogen]))
    save_checkpoint(tmp_path / "m.pt", model, config=model.config)
    again = NequIP(hidden=4, num_layers=1).double()
    load_checkpoint(tmp_path / "m.pt", again)
    assert again.trained_species == (1, 8)
