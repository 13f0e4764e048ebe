"""EnergyVerlet: an energy model integrated by velocity Verlet as a dynamics model (notebook 02's physics baseline).

What the construction promises (module docstring of ``course_lib.models.verlet``), each checked here: with the true
energy and the data's timestep it *is* the simulator; with any invariant energy (an untrained MPNN) the step is
equivariant under every symmetry of the box, conserves total momentum to round-off, and conserves its own total
energy with an O(dt^2) error; fixed atoms never move; bad arguments are refused.
"""

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from course_lib import symmetry as S
from course_lib.datasets import load_particles
from course_lib.models.baselines import AbsolutePositionGNN
from course_lib.models.egnn import rollout, step_as_data
from course_lib.models.mpnn import InvariantMPNN
from course_lib.models.verlet import EnergyVerlet, PairPotentialEnergy
from course_lib.neighbors import minimum_image
from course_lib.simulate import particles2d as p2d

pytestmark = pytest.mark.usefixtures("one_thread")


def _double(b):
    for k in ("pos", "vel", "charge", "box", "traj_pos", "traj_vel"):
        if getattr(b, k, None) is not None:
            setattr(b, k, getattr(b, k).double())
    return b


@pytest.fixture(scope="module")
def test_batch():
    b = _double(next(iter(DataLoader(load_particles("trajectories", "test")[:3], batch_size=3))))
    b.pos, b.vel = b.traj_pos[:, 0].clone(), b.traj_vel[:, 0].clone()
    return b


@pytest.fixture(scope="module")
def mpnn64():
    torch.manual_seed(0)
    return InvariantMPNN().double().eval()


def test_true_energy_at_the_data_timestep_reproduces_the_data(test_batch):
    p, v = EnergyVerlet(PairPotentialEnergy(), p2d.DT, p2d.STEPS_PER_FRAME)(test_batch)
    dp = minimum_image(p - test_batch.traj_pos[:, 1], test_batch.box[test_batch.batch]).abs().max()
    dv = (v - test_batch.traj_vel[:, 1]).abs().max()
    # the data are stored in float32: agreement to its rounding, not better
    assert dp < 1e-5 and dv < 1e-5, (float(dp), float(dv))
    # and a wrong timestep does not (the test can fail)
    p2, _ = EnergyVerlet(PairPotentialEnergy(), 2 * p2d.DT, p2d.STEPS_PER_FRAME)(test_batch)
    assert minimum_image(p2 - test_batch.traj_pos[:, 1], test_batch.box[test_batch.batch]).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["permutation", "periodic translation", "box rotation 90", "box reflection"])
def test_a_step_and_a_rollout_are_equivariant(mpnn64, test_batch, name):
    model = EnergyVerlet(mpnn64, dt=0.01, substeps=3)
    b = Batch.from_data_list([test_batch.get_example(i) for i in range(2)])
    T = S.standard_transforms(b, generator=0)[name]
    S.assert_equivariant(lambda x: step_as_data(model, x), b, T, tol=1e-9)
    S.assert_equivariant(lambda x: rollout(model, x, 3), b, T, output=("position", "vector"), tol=1e-9)


def test_total_momentum_is_conserved_to_round_off(mpnn64, test_batch):
    b = test_batch.clone()
    b.vel = b.vel + torch.tensor([0.3, -0.2], dtype=torch.float64)  # a nonzero total momentum to keep
    _, tv = rollout(EnergyVerlet(mpnn64, dt=0.01, substeps=5), b, 4)
    for g in range(3):
        P = tv[b.batch == g].sum(0)  # [T, 2]
        assert (P - P[0]).abs().max() < 1e-12, P


def test_an_energy_without_the_symmetry_gives_neither(test_batch):
    """The guarantees come from the energy's invariance, not from the integrator: an energy that reads absolute
    positions makes a step that is not equivariant and does not conserve momentum."""
    torch.manual_seed(0)
    model = EnergyVerlet(AbsolutePositionGNN().double().eval(), dt=0.01, substeps=3)
    b = Batch.from_data_list([test_batch.get_example(i) for i in range(2)])
    for name in ("periodic translation", "box rotation 90"):  # an untrained model's forces are small, and so is
        # the error (~1e-4 here), but it is 1e5 times the round-off that the invariant energy's step stays below
        S.assert_not_equivariant(lambda x: step_as_data(model, x), b, S.standard_transforms(b, generator=0)[name],
                                 min_error=1e-6)
    _, v = model(b)
    assert (v[b.batch == 0].sum(0) - b.vel[b.batch == 0].sum(0)).abs().max() > 1e-6


def _energy_error(model, b, dt, t_total=0.4):
    """max |E(t) + K(t) - E(0) - K(0)| of the learned energy over t_total, integrating with dt."""
    m = EnergyVerlet(model, dt=dt, substeps=1)
    state, err = b.clone(), 0.0
    with torch.no_grad():
        e0 = float(model(state).sum() + 0.5 * state.vel.pow(2).sum())
    for _ in range(round(t_total / dt)):
        state.pos, state.vel = m(state)
        with torch.no_grad():
            err = max(err, abs(float(model(state).sum() + 0.5 * state.vel.pow(2).sum()) - e0))
    return err


def test_learned_energy_is_conserved_to_second_order(mpnn64, test_batch):
    b = Batch.from_data_list([test_batch.get_example(0)])
    e1, e2 = _energy_error(mpnn64, b, 0.02), _energy_error(mpnn64, b, 0.01)
    assert 0 < e2 < e1 and 3.0 < e1 / e2 < 5.0, (e1, e2)  # halving dt divides the error by ~4


def test_fixed_atoms_never_move(mpnn64, test_batch):
    b = Batch.from_data_list([test_batch.get_example(0)])
    b.fixed = torch.zeros(b.num_nodes, dtype=torch.bool)
    b.fixed[:3] = True
    b.vel[:3] = 0.0
    p, v = EnergyVerlet(mpnn64, dt=0.01, substeps=4)(b)
    assert torch.equal(p[:3], b.pos[:3]) and torch.equal(v[:3], torch.zeros_like(v[:3]))
    assert not torch.allclose(p[3:], b.pos[3:])


@pytest.mark.parametrize("kwargs", [{"dt": 0.0, "substeps": 1}, {"dt": 0.01, "substeps": 0},
                                    {"dt": 0.01, "substeps": 1.5}, {"dt": 0.01, "substeps": 1, "mass": -1.0}])
def test_bad_arguments_are_refused(mpnn64, kwargs):
    with pytest.raises(ValueError, match="EnergyVerlet"):
        EnergyVerlet(mpnn64, **kwargs)


def test_pair_potential_energy_needs_a_box(test_batch):
    b = Batch.from_data_list([test_batch.get_example(0)])
    del b.box
    with pytest.raises(ValueError, match="box"):
        PairPotentialEnergy()(b)
