"""The N-body benchmark models (course_lib.models.nbody): which symmetries each one has, and which it has not.

EGNN, Radial Field and the paper's linear model x + t v are E(3) x permutation equivariant (asserted in
float64 with course_lib.symmetry); the GNN and the general linear layer on [x, v] are permutation
equivariant only (their rotation/translation errors are printed and asserted to be large).
"""

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data

from course_lib import symmetry as S
from course_lib.graph import count_parameters
from course_lib.models.egnn import EGNNLayer
from course_lib.models.nbody import (
    NBODY_MODELS,
    EGNNDynamics,
    GNNDynamics,
    LinearDynamics,
    RadialField,
)

E3 = ["permutation", "translation", "rotation", "reflection"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _system(n=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(n, 3, generator=g, dtype=dtype)
    v = torch.randn(n, 3, generator=g, dtype=dtype)
    vel = 0.5 * v / v.norm(dim=-1, keepdim=True)
    charge = (torch.randint(0, 2, (n,), generator=g) * 2 - 1).to(dtype)
    return Data(pos=pos, vel=vel, charge=charge)


def _batch(sizes=(5, 5, 4, 6), dtype=torch.float64):
    return Batch.from_data_list([_system(n, seed=k, dtype=dtype) for k, n in enumerate(sizes)])


def _scramble_(model: nn.Module, std: float = 0.05, seed: int = 0) -> nn.Module:
    """Random weights everywhere: the interactions are no longer ~0 as at initialisation (phi_x starts tiny)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _equivariant_models():
    torch.manual_seed(0)
    return {
        "EGNNDynamics": _scramble_(EGNNDynamics().double()),
        "EGNNDynamics(carry_velocity)": _scramble_(EGNNDynamics(carry_velocity=True).double(), seed=1),
        "EGNNDynamics(paper's updates)": _scramble_(EGNNDynamics(coord_range=None, bounded_velocity=False,
                                                                 mean_aggregation=True).double(), std=0.3, seed=3),
        "RadialField": _scramble_(RadialField().double(), seed=2),
        "LinearDynamics(motion)": LinearDynamics().double(),
    }


@pytest.mark.parametrize("name", E3)
@pytest.mark.parametrize("model_name", list(_equivariant_models()))
def test_e3_and_permutation_equivariant_models(model_name, name):
    model = _equivariant_models()[model_name].eval()
    b = _batch()
    T = S.standard_transforms(b, generator=0)[name]
    err = S.equivariance_error(model, b, T, output="position")
    print(S.assert_equivariant(model, b, T, output="position", tol=1e-9, name=f"{model_name} | {name}"),
          f"| err {err:.1e}")


def test_the_equivariance_checks_are_not_trivial():
    """The scrambled models really use the interactions (their output is far from free flight)."""
    b = _batch()
    for name, model in _equivariant_models().items():
        if name.startswith("Linear"):
            continue
        with torch.no_grad():
            dev = (model(b) - (b.pos + b.vel)).abs().max()
        print(f"{name}: max |pred - (x + v)| = {float(dev):.2f}")
        assert dev > 0.1


@pytest.mark.parametrize("model_name", ["GNNDynamics", "LinearDynamics(general)"])
def test_non_equivariant_models_are_permutation_equivariant_only(model_name):
    torch.manual_seed(0)
    model = (GNNDynamics() if model_name == "GNNDynamics" else LinearDynamics(mode="general")).double().eval()
    b = _batch()
    Ts = S.standard_transforms(b, generator=1)
    print(S.assert_equivariant(model, b, Ts["permutation"], output="position", tol=1e-9,
                               name=f"{model_name} | permutation"))
    for name in ("translation", "rotation", "reflection"):
        err = S.equivariance_error(model, b, Ts[name], output="position")
        print(f"{model_name} | {name}: err {err:.2e}")
        print(S.assert_not_equivariant(model, b, Ts[name], output="position", name=f"{model_name} | {name}"))


def test_egnn_feeds_the_input_velocity_to_every_layer():
    """Paper eq. 7: v^{l+1} = phi_v(h^l) v^0 + C sum_j x_ij phi_x(m_ij), with the *input* velocity v^0."""
    b = _batch()
    for carry in (False, True):
        torch.manual_seed(0)
        model = _scramble_(EGNNDynamics(carry_velocity=carry).double())
        seen = []

        def record(module, args, seen=seen):
            seen.append(args[2].clone())

        hooks = [layer.register_forward_pre_hook(record) for layer in model.layers]
        with torch.no_grad():
            model(b)
        for h in hooks:
            h.remove()
        v0 = b.vel / len(model.layers)  # dt / L * vel
        assert len(seen) == 4 and torch.equal(seen[0], v0)
        same = [torch.allclose(v, v0) for v in seen[1:]]
        assert all(same) if not carry else not any(same)


def test_egnn_one_layer_by_hand():
    """EGNNDynamics(num_layers=1) is h0 = Linear(|v|), a = [q_i q_j, |x_ij|^2], x' = x + phi_v v0 + C sum x_ij phi_x."""
    torch.manual_seed(0)
    model = _scramble_(EGNNDynamics(num_layers=1).double())
    data = _system(5, seed=3)
    layer: EGNNLayer = model.layers[0]
    x, q = data.pos, data.charge
    h = model.embed(data.vel.norm(dim=-1, keepdim=True))
    x_ij = x[:, None] - x[None]  # [i, j, 3]
    d2 = (x_ij**2).sum(-1, keepdim=True)
    a = torch.cat([(q[:, None] * q[None])[..., None], d2], dim=-1)
    m = layer.phi_e(torch.cat([h[:, None].expand(5, 5, -1), h[None].expand(5, 5, -1), d2, a], dim=-1))
    off = ~torch.eye(5, dtype=torch.bool)[..., None]
    dx = (x_ij * layer.coord_weight(m) * off).sum(1) / 5  # C = 1/(1 + 4) = 1/M
    expected = x + layer.velocity_scale(h) * data.vel + dx
    with torch.no_grad():
        assert torch.allclose(model(data), expected, atol=1e-12)


def test_egnn_one_layer_by_hand_paper_updates():
    """The paper's updates: phi_x = MLP (unbounded), phi_v = 1 + MLP (unbounded), C = 1/(M - 1)."""
    torch.manual_seed(0)
    model = _scramble_(EGNNDynamics(num_layers=1, coord_range=None, bounded_velocity=False,
                                    mean_aggregation=True).double(), std=0.3)
    data = _system(5, seed=3)
    layer: EGNNLayer = model.layers[0]
    x, q = data.pos, data.charge
    h = model.embed(data.vel.norm(dim=-1, keepdim=True))
    x_ij = x[:, None] - x[None]  # [i, j, 3]
    d2 = (x_ij**2).sum(-1, keepdim=True)
    a = torch.cat([(q[:, None] * q[None])[..., None], d2], dim=-1)
    m = layer.phi_e(torch.cat([h[:, None].expand(5, 5, -1), h[None].expand(5, 5, -1), d2, a], dim=-1))
    off = ~torch.eye(5, dtype=torch.bool)[..., None]
    dx = (x_ij * layer.phi_x(m) * off).sum(1) / 4  # C = 1/(M - 1)
    expected = x + (1.0 + layer.phi_v(h)) * data.vel + dx
    with torch.no_grad():
        assert torch.allclose(model(data), expected, atol=1e-12)
        assert (layer.phi_x(m).abs() > 1.0).any() or (layer.phi_v(h).abs() > 1.0).any(), "not testing unboundedness"


def test_untrained_egnn_is_free_flight():
    torch.manual_seed(0)
    model = EGNNDynamics().double()
    b = _batch()
    with torch.no_grad():
        dev = (model(b) - (b.pos + b.vel)).abs().max()
    assert dev < 1e-2


def test_radial_field_layer_by_hand():
    torch.manual_seed(0)
    model = _scramble_(RadialField(num_layers=1).double())
    data = _system(4, seed=5)
    layer = model.layers[0]
    x, v, q = data.pos, data.vel, data.charge
    out = []
    for i in range(4):
        s = torch.zeros(3, dtype=torch.float64)
        for j in range(4):
            if j != i:
                xij = x[i] - x[j]
                inp = torch.stack([xij.norm(), q[i] * q[j], (xij**2).sum()])
                s = s + layer.phi_rf(inp) * xij
        out.append(x[i] + s / 3 + layer.phi_v(v[i].norm().reshape(1)) * v[i])
    with torch.no_grad():
        assert torch.allclose(model(data), torch.stack(out), atol=1e-12)


@pytest.mark.parametrize("name", list(NBODY_MODELS))
def test_batch_equals_graph_by_graph_and_float32(name):
    """No messages between systems; defaults constructible; float32 in, float32 out [N, 3]."""
    cls = NBODY_MODELS[name][0]
    torch.manual_seed(0)
    model = cls().eval()
    graphs = [_system(n, seed=k, dtype=torch.float32) for k, n in enumerate((5, 3, 5))]
    b = Batch.from_data_list(graphs)
    with torch.no_grad():
        out = model(b)
        parts = [model(g) for g in graphs]
    assert out.shape == (13, 3) and out.dtype == torch.float32
    assert torch.allclose(out, torch.cat(parts), atol=1e-5)
    assert count_parameters(model) > 0


def test_paper_sizes_and_learning_rates():
    assert [NBODY_MODELS[k][1] for k in ("egnn", "gnn", "rf")] == [5e-4, 1e-3, 2e-4]
    assert EGNNDynamics().config == {"hidden": 64, "num_layers": 4, "dt": 1.0, "coord_range": 10.0,
                                     "carry_velocity": False, "bounded_velocity": True, "mean_aggregation": False}
    assert len(EGNNDynamics().layers) == len(GNNDynamics().layers) == len(RadialField().layers) == 4
    assert GNNDynamics().embed.out_features == 64


def test_linear_closed_form():
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(50, 5, 3, generator=g), torch.randn(50, 5, 3, generator=g)
    motion = LinearDynamics()
    fitted = motion.fit_closed_form(x, v, x + 0.68 * v)
    assert fitted["t"] == pytest.approx(0.68, abs=1e-6)
    W = torch.randn(3, 6, generator=g)
    y = torch.cat([x, v], -1) @ W.T + torch.tensor([0.1, -0.2, 0.3])
    general = LinearDynamics(mode="general")
    general.fit_closed_form(x, v, y)
    assert torch.allclose(general.linear.weight, W, atol=1e-4)
    data = Data(pos=x[0], vel=v[0], charge=torch.ones(5))
    assert torch.allclose(general(data), y[0], atol=1e-4)


def test_input_errors():
    with pytest.raises(ValueError, match="mode"):
        LinearDynamics(mode="quadratic")
    with pytest.raises(ValueError, match="'vel'"):
        EGNNDynamics()(Data(pos=torch.zeros(5, 3), charge=torch.ones(5)))
    with pytest.raises(ValueError, match="'charge'"):
        GNNDynamics()(Data(pos=torch.zeros(5, 3), vel=torch.zeros(5, 3)))
