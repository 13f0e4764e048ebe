"""Symmetry, crystal, rollout and loss checks of the EGNN next-step model and the dynamics baselines."""

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data

from course_lib import symmetry as S
from course_lib.graph import scatter_sum
from course_lib.models.baselines import AbsoluteCoordinateGNN, Ballistic
from course_lib.models.blocks import mlp
from course_lib.models.egnn import (
    EGNN,
    EGNNLayer,
    RolloutError,
    fully_connected_edges,
    next_step_loss,
    rollout,
    rollout_loss,
    step_as_data,
)
from course_lib.neighbors import minimum_image, wrap_positions

L = 10.0
STEPS = 5
PERIODIC = ["permutation", "periodic translation", "box rotation 90", "box reflection"]
OPEN = ["permutation", "translation", "rotation", "reflection"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _state(n=12, seed=0, box=L, n_crystal=0, dtype=torch.float64):
    """A synthetic state of the trajectory data: pos, vel, charge, box, fixed (+ traj fields of length 1).

    The first ``n_crystal`` nodes are crystal atoms on a square lattice (fixed, vel = 0).
    """
    g = torch.Generator().manual_seed(seed)
    side = box if box else 4.0
    pos = torch.rand(n, 2, generator=g, dtype=dtype) * side
    charge = (torch.randint(0, 2, (n,), generator=g) * 2 - 1).to(dtype)
    vel = 0.5 * torch.randn(n, 2, generator=g, dtype=dtype)
    fixed = torch.zeros(n, dtype=torch.bool)
    if n_crystal:
        k = int(n_crystal**0.5 + 0.999)
        grid = torch.stack(torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij"), -1).reshape(-1, 2)
        pos[:n_crystal] = (grid[:n_crystal].to(dtype) + 0.5) * side / k
        charge[:n_crystal] = torch.tensor([1.0, -1.0], dtype=dtype).repeat(n_crystal)[:n_crystal]
        fixed[:n_crystal] = True
        vel[fixed] = 0.0
    data = Data(pos=pos, vel=vel, charge=charge, fixed=fixed)
    if box:
        data.box = torch.tensor([[box, box]], dtype=dtype)
    return data


def _batch(box=L, sizes=(5, 12, 20), n_crystal=0, dtype=torch.float64):
    return Batch.from_data_list([_state(n, seed=n, box=box, n_crystal=n_crystal, dtype=dtype) for n in sizes])


@pytest.fixture(scope="module")
def egnn64():
    torch.manual_seed(0)
    return EGNN().double().eval()


def _check_step_and_rollout(model, data, T, name):
    """assert_equivariant for one step (Data output, field by field) and for a whole rollout."""
    step = lambda x: step_as_data(model, x)
    roll = lambda x: rollout(model, x, STEPS)
    kinds = ("position", "vector")
    e1 = S.equivariance_error(step, data, T)
    e2 = S.equivariance_error(roll, data, T, output=kinds)
    print(S.assert_equivariant(step, data, T, tol=1e-9, name=f"{name} (one step)"), f"| err {e1:.1e}")
    print(S.assert_equivariant(roll, data, T, output=kinds, tol=1e-9, name=f"{name} ({STEPS}-step rollout)"),
          f"| err {e2:.1e}")


# --------------------------------------------------------------------------------------------
# Symmetries of the EGNN
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PERIODIC)
def test_egnn_periodic_symmetries(egnn64, name):
    b = _batch()
    _check_step_and_rollout(egnn64, b, S.standard_transforms(b, generator=0)[name], name)


@pytest.mark.parametrize("cutoff", [3.0, None], ids=["radius", "fully-connected"])
@pytest.mark.parametrize("name", OPEN)
def test_egnn_open_space_is_E2_equivariant(name, cutoff):
    torch.manual_seed(1)
    model = EGNN(cutoff=cutoff).double().eval()
    b = _batch(box=None)
    _check_step_and_rollout(model, b, S.standard_transforms(b, generator=1)[name], f"{name}, cutoff={cutoff}")


@pytest.mark.parametrize("name", PERIODIC)
def test_egnn_with_crystal_still_equivariant(egnn64, name):
    """Crystal and particles transformed together: the model commutes with the symmetry."""
    b = _batch(sizes=(10, 16), n_crystal=4)
    _check_step_and_rollout(egnn64, b, S.standard_transforms(b, generator=2)[name], f"{name} with crystal")


def test_egnn_fully_connected_in_a_box(egnn64):
    torch.manual_seed(2)
    model = EGNN(cutoff=None, num_layers=2).double().eval()
    b = _batch(sizes=(6, 9))
    for name, T in S.standard_transforms(b, generator=3).items():
        _check_step_and_rollout(model, b, T, f"{name}, fully connected, periodic")


# --------------------------------------------------------------------------------------------
# Crystal atoms
# --------------------------------------------------------------------------------------------


def test_fixed_atoms_never_move(egnn64):
    b = _batch(sizes=(10, 16), n_crystal=4)
    traj_pos, traj_vel = rollout(egnn64, b, STEPS)
    fixed = b.fixed
    assert torch.equal(traj_pos[fixed], b.pos[fixed][:, None].expand(-1, STEPS + 1, -1))
    assert (traj_vel[fixed] == 0).all()
    moved = minimum_image(traj_pos[~fixed, -1] - b.pos[~fixed], L).norm(dim=-1)
    assert moved.min() > 0  # the particles do move


def test_fixed_atoms_move_without_the_constraint():
    torch.manual_seed(0)
    model = EGNN(use_fixed=False).double().eval()
    b = _batch(sizes=(10, 16), n_crystal=4)
    traj_pos, traj_vel = rollout(model, b, STEPS)
    drift = minimum_image(traj_pos[b.fixed, -1] - b.pos[b.fixed], L).norm(dim=-1)
    print(f"use_fixed=False: crystal atoms drift by up to {float(drift.max()):.1e} in {STEPS} steps")
    assert drift.max() > 1e-6 and (traj_vel[b.fixed, -1] != 0).any()


# --------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------


def test_absolute_coordinate_gnn_breaks_the_box_symmetries():
    torch.manual_seed(0)
    model = AbsoluteCoordinateGNN().double().eval()
    b = _batch()
    Ts = S.standard_transforms(b, generator=4)
    step = lambda x: step_as_data(model, x)
    print(S.assert_equivariant(step, b, Ts["permutation"], name="AbsoluteCoordinateGNN permutation"))
    for name in ("periodic translation", "box rotation 90", "box reflection"):
        print(f"AbsoluteCoordinateGNN {name}: err {S.equivariance_error(step, b, Ts[name]):.2e}")
        print(S.assert_not_equivariant(step, b, Ts[name], name=f"AbsoluteCoordinateGNN {name}"))
    traj_pos, traj_vel = rollout(model, b, STEPS)
    assert traj_pos.shape == traj_vel.shape == (b.num_nodes, STEPS + 1, 2)


def test_ballistic_is_exactly_equivariant_and_free_flight():
    model = Ballistic(dt=0.5)
    b = _batch(sizes=(10, 16), n_crystal=4)
    for name, T in S.standard_transforms(b, generator=5).items():
        _check_step_and_rollout(model, b, T, f"Ballistic {name}")
    pos, vel = model(b)
    mobile = ~b.fixed
    expected = wrap_positions(b.pos + 0.5 * b.vel, b.box, b.batch)
    assert torch.allclose(pos[mobile], expected[mobile]) and torch.equal(vel, b.vel)
    assert torch.equal(pos[b.fixed], b.pos[b.fixed])


def test_untrained_egnn_starts_at_free_flight(egnn64):
    """The design choice of the velocity head: phi_v ~ 1 and phi_x ~ 0 at initialisation."""
    b = _batch()
    with torch.no_grad():
        pos, vel = egnn64(b)
    pos_b, vel_b = Ballistic()(b)
    dpos = minimum_image(pos - pos_b, L).abs().max()
    print(f"untrained EGNN vs ballistic: |dpos| {float(dpos):.1e}, |dvel| {float((vel - vel_b).abs().max()):.1e}")
    assert dpos < 0.05 and (vel - vel_b).abs().max() < 0.05
    assert ((pos >= 0) & (pos < L)).all()  # wrapped into the box


# --------------------------------------------------------------------------------------------
# Rollouts: shapes and errors
# --------------------------------------------------------------------------------------------


class _NaNAtStep(nn.Module):
    """Free flight, except that call number ``bad`` returns NaN positions."""

    def __init__(self, bad: int):
        super().__init__()
        self.bad, self.calls, self.inner = bad, 0, Ballistic()

    def forward(self, data):
        self.calls += 1
        pos, vel = self.inner(data)
        return (pos * float("nan") if self.calls == self.bad else pos), vel


def test_rollout_shapes_and_gradients(egnn64):
    b = _batch(sizes=(5, 7))
    traj_pos, traj_vel = rollout(egnn64, b, 3)
    assert traj_pos.shape == (12, 4, 2) and traj_vel.shape == (12, 4, 2)
    assert torch.equal(traj_pos[:, 0], b.pos) and torch.equal(traj_vel[:, 0], b.vel)
    assert not traj_pos.requires_grad
    traj_pos, _ = rollout(egnn64, b, 3, keep_grad=True)
    assert traj_pos.requires_grad


def test_rollout_errors(egnn64):
    b = _batch(sizes=(5, 7))
    with pytest.raises(ValueError, match="steps"):
        rollout(egnn64, b, 0)
    with pytest.raises(ValueError, match="steps"):
        rollout(egnn64, b, -2)
    bad_box = b.clone()
    bad_box.box = b.box[:1]
    with pytest.raises(ValueError, match="'box' has 1 rows but the batch has 2 graphs"):
        rollout(egnn64, bad_box, 3)
    shared_box = b.clone()
    shared_box.box = b.box[0]  # a single [d] box is shared by every graph
    assert torch.equal(rollout(egnn64, shared_box, 2)[0], rollout(egnn64, b, 2)[0])
    with pytest.raises(RolloutError, match="step 3") as info:
        rollout(_NaNAtStep(3), b, 10)
    assert isinstance(info.value, ValueError)
    print(info.value)


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def test_next_step_loss_is_periodic_aware_and_mobile_only(egnn64):
    b = _batch(sizes=(10, 16), n_crystal=4)
    pos, vel = egnn64(b)
    b.target_pos, b.target_vel = pos.clone(), vel.clone()
    assert float(next_step_loss(egnn64, b)) == 0.0
    shifted = b.clone()
    shifted.target_pos = pos + torch.tensor([L, -L], dtype=pos.dtype)  # the same point, one image away
    assert float(next_step_loss(egnn64, shifted)) == pytest.approx(0.0, abs=1e-20)
    crystal_off = b.clone()
    crystal_off.target_pos[b.fixed] += 1.0  # errors on crystal atoms do not count ...
    assert float(next_step_loss(egnn64, crystal_off)) == 0.0
    assert float(next_step_loss(egnn64, crystal_off, mobile_only=False)) > 0  # ... unless asked
    wrong = b.clone()
    wrong.target_pos = pos + 0.1
    wrong.target_vel = vel - 0.2
    assert float(next_step_loss(egnn64, wrong, vel_weight=0.5)) == pytest.approx(0.01 + 0.5 * 0.04)


def test_rollout_loss(egnn64):
    b = _batch(sizes=(10, 16), n_crystal=4)
    traj_pos, traj_vel = rollout(egnn64, b, 6)
    b.traj_pos, b.traj_vel = traj_pos, traj_vel
    with torch.no_grad():
        assert float(rollout_loss(egnn64, b, k=3, start=2)) == pytest.approx(0.0, abs=1e-20)
    b.traj_pos = traj_pos + 0.1
    loss = rollout_loss(egnn64, b, k=3)
    loss.backward()
    grads = [p.grad for p in egnn64.parameters() if p.grad is not None]
    egnn64.zero_grad(set_to_none=True)
    assert loss > 0 and grads and all(torch.isfinite(g).all() for g in grads)
    with pytest.raises(ValueError, match="start"):
        rollout_loss(egnn64, b, k=6, start=1)


def test_egnn_overfits_a_tiny_dataset():
    """8 graphs with a hidden pair force and friction; 100 Adam steps must cut the loss 10x."""
    dt, dtype = 0.5, torch.float32
    box = torch.tensor([L, L], dtype=dtype)
    g = torch.Generator().manual_seed(0)
    graphs = []
    for _ in range(8):
        n = int(torch.randint(6, 11, (), generator=g))
        pos = torch.rand(n, 2, generator=g, dtype=dtype) * L
        q = (torch.randint(0, 2, (n,), generator=g) * 2 - 1).to(dtype)
        vel = 0.5 * torch.randn(n, 2, generator=g, dtype=dtype)
        x_ij = minimum_image(pos[:, None] - pos[None], box)
        r2 = (x_ij**2).sum(-1)
        w = torch.where(r2 < 9.0, (r2 + 0.5) ** -1.5, torch.zeros_like(r2)).fill_diagonal_(0.0)
        acc = ((q[:, None] * q[None] * w)[..., None] * x_ij).sum(1)
        target_vel = 0.8 * vel + dt * acc
        target_pos = wrap_positions(pos + dt * target_vel, box)
        graphs.append(Data(pos=pos, vel=vel, charge=q, box=box[None], target_pos=target_pos, target_vel=target_vel))
    b = Batch.from_data_list(graphs)
    torch.manual_seed(0)
    model = EGNN(hidden=32, num_layers=2, dt=dt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = next_step_loss(model, b)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    print(f"overfit: loss {losses[0]:.2e} -> {losses[-1]:.2e} ({losses[0] / losses[-1]:.0f}x)")
    assert losses[-1] < losses[0] / 10


# --------------------------------------------------------------------------------------------
# Why multiply x_ij by a scalar: a numerical counter-example
# --------------------------------------------------------------------------------------------


def test_edge_vectors_inside_an_mlp_break_equivariance():
    """A "normal" MPNN with the edge vector x_ij as an edge feature is not rotation equivariant, even when
    its output is a sum of x_ij times a learned weight, unless that weight sees invariants only (EGNN)."""
    torch.manual_seed(0)
    H = 16
    data = _state(n=7, seed=3, box=None)
    edge_index = fully_connected_edges(torch.zeros(7, dtype=torch.long))
    normal_mlp = mlp(4, H, 2).double()  # MLP(q_i, q_j, x_ij) -> a 2-vector message in the fixed axes
    phi_e_vec = mlp(4, H, H).double()  # message that sees x_ij itself
    phi_e = mlp(3, H, H).double()  # message that sees |x_ij|^2 only (EGNN)
    phi_x = mlp(H, H, 1).double()

    def parts(x):
        j, i = edge_index
        x_ij = x.pos[i] - x.pos[j]
        return i, x_ij, x.charge[i, None], x.charge[j, None]

    def normal(x):
        i, x_ij, qi, qj = parts(x)
        return scatter_sum(normal_mlp(torch.cat([qi, qj, x_ij], -1)), i, x.num_nodes)

    def scalar_of_non_invariant(x):
        i, x_ij, qi, qj = parts(x)
        return scatter_sum(x_ij * phi_x(phi_e_vec(torch.cat([qi, qj, x_ij], -1))), i, x.num_nodes)

    def egnn_update(x):
        i, x_ij, qi, qj = parts(x)
        d2 = (x_ij**2).sum(-1, keepdim=True)
        return scatter_sum(x_ij * phi_x(phi_e(torch.cat([qi, qj, d2], -1))), i, x.num_nodes)

    for T in (S.rotation(2, generator=0), S.reflection(2, generator=0)):
        errs = {f.__name__: S.equivariance_error(f, data, T, output="vector")
                for f in (normal, scalar_of_non_invariant, egnn_update)}
        print(T.name, {k: f"{v:.1e}" for k, v in errs.items()})
        assert errs["normal"] > 1e-3 and errs["scalar_of_non_invariant"] > 1e-3
        assert errs["egnn_update"] < 1e-12


# --------------------------------------------------------------------------------------------
# Construction and helpers
# --------------------------------------------------------------------------------------------


def test_construction_config_and_float32():
    model = EGNN()
    assert model.config == {"hidden": 64, "num_layers": 4, "cutoff": 3.0, "dt": 1.0,
                            "node_features": ("charge", "speed"), "edge_features": ("charge_product",),
                            "use_fixed": True, "coord_range": 1.0}
    b = _batch(dtype=torch.float32)
    pos, vel = model(b)
    assert pos.dtype == vel.dtype == torch.float32 and pos.shape == vel.shape == (37, 2)
    bare = EGNN(node_features=(), edge_features=(), hidden=8, num_layers=1)
    assert bare(b)[0].shape == (37, 2)
    with pytest.raises(ValueError, match="unknown node feature"):
        EGNN(node_features=("mass",))
    with pytest.raises(ValueError, match="'vel'"):
        model(Data(pos=b.pos, charge=b.charge))


def test_float32_within_default_tolerance():
    torch.manual_seed(0)
    model = EGNN().eval()
    b = _batch(dtype=torch.float32)
    for name, T in S.standard_transforms(b, generator=6).items():
        err = S.equivariance_error(lambda x: step_as_data(model, x), b, T)
        print(f"float32 {name}: err {err:.1e}")
        assert err < S.default_tolerance(torch.float32)


def test_layer_without_velocity_is_equivariant():
    """The plain EGNN layer (x_i <- x_i + C sum_j x_ij phi_x(m_ij)) on a fully connected open graph."""
    torch.manual_seed(0)
    layer = EGNNLayer(hidden=16, edge_dim=1, velocity=False).double()
    embed = nn.Linear(1, 16).double()
    b = _batch(box=None, sizes=(4, 9))
    edge_index = fully_connected_edges(b.batch)

    def fn(x):
        a = (x.charge[edge_index[0]] * x.charge[edge_index[1]])[:, None]
        h, pos, v = layer(embed(x.charge[:, None]), x.pos, None, edge_index, a, None, x.batch)
        assert v is None
        return h, pos

    for name, T in S.standard_transforms(b, generator=7).items():
        print(S.assert_equivariant(fn, b, T, output=("scalar", "position"), tol=1e-9, name=f"EGNNLayer {name}"))


def test_fully_connected_edges():
    batch = torch.tensor([0, 0, 0, 1, 1, 2])
    j, i = fully_connected_edges(batch)
    assert len(i) == 3 * 2 + 2 * 1 + 0
    assert (i != j).all() and (batch[i] == batch[j]).all()
    assert len(set(zip(i.tolist(), j.tolist()))) == len(i)
