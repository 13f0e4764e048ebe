"""Physics and symmetry tests of the 2D particle simulator (course_lib.simulate.particles2d)."""

import math

import numpy as np
import pytest
import torch

from course_lib.simulate import particles2d as p2d

L = p2d.BOX
POT = p2d.DEFAULT_POTENTIAL


def _state(seed=0, sizes=(24,), T=1.0, steps=300, charges="random"):
    """Thermalised systems (short Langevin run from random non-overlapping positions)."""
    rng = np.random.default_rng(seed)
    st = p2d.random_state(rng, list(sizes), L, T, charges=charges)
    return p2d.langevin(st, p2d.DT_LANGEVIN, steps, T, rng)


def _crystal(seed=0, n_mobile=(8,), T=1.0, steps=300):
    rng = np.random.default_rng(seed)
    st = p2d.crystal_state(rng, list(n_mobile), L, T)
    return p2d.langevin(st, p2d.DT_LANGEVIN, steps, T, rng)


def _periodic_diff(a, b, box=L):
    d = np.asarray(a) - np.asarray(b)
    return np.abs(d - box * np.round(d / box)).max()


def _short_nve(st, frames=5, steps=40):
    return p2d.run_nve(st, frames, steps, p2d.DT)


# --------------------------------------------------------------------------- forces


def _torch_reference_energy(pos, charge, box):
    """Independent torch implementation of the documented formula, one unpadded system, all pairs."""
    A, lam, B, sig, rc, n = POT.A, POT.lam, POT.B, POT.sigma, POT.cutoff, POT.n

    def u(r, qq):
        return qq * A * torch.exp(-r / lam) / r + B * (sig / r) ** n

    def du(r, qq):
        return -qq * A * torch.exp(-r / lam) * (1 / r**2 + 1 / (lam * r)) - n * B * sig**n / r ** (n + 1)

    e = pos.new_zeros(())
    rc_t = torch.tensor(rc, dtype=pos.dtype)
    for i in range(len(pos)):
        for j in range(i + 1, len(pos)):
            d = pos[i] - pos[j]
            if box is not None:
                d = d - box * torch.round(d / box)
            r = torch.sqrt((d * d).sum())
            if r < rc:
                qq = charge[i] * charge[j]
                e = e + u(r, qq) - u(rc_t, qq) - (r - rc) * du(rc_t, qq)
    return e


@pytest.mark.parametrize("box", [L, None])
def test_energy_matches_independent_torch_formula(box):
    st = _state(1, (12,))
    if box is None:  # open boundaries: a cluster that is not wrapped
        st.pos[0] = st.pos[0] * 0.5
    pos = torch.tensor(st.pos[0])
    e_ref = float(_torch_reference_energy(pos, torch.tensor(st.charge[0]), box))
    e = float(p2d.energy(st.pos[0], st.charge[0], box))
    print(f"energy {e:.12f} reference {e_ref:.12f}")
    assert abs(e - e_ref) < 1e-10 * max(1.0, abs(e_ref))


def test_forces_match_autograd_batched_with_padding_and_crystal():
    for st in (_state(2, (5, 13, 24)), _crystal(3, (4, 11))):
        pos = torch.tensor(st.pos, requires_grad=True)
        e = p2d.energy(pos, torch.tensor(st.charge), st.box, mask=torch.tensor(st.mask))
        (grad,) = torch.autograd.grad(e.sum(), pos)
        f = st.forces()
        err = np.abs(-grad.numpy() - f).max() / np.abs(f).max()
        print(f"max relative |F_analytic - F_autograd| = {err:.2e}")
        assert err < 1e-12
        assert np.all(f[~st.mask] == 0)
        assert np.allclose(e.detach().numpy(), st.potential_energy(), rtol=1e-13, atol=1e-13)


def test_forces_match_central_finite_differences():
    st = _state(4, (16,))
    pos, q = st.pos[0], st.charge[0]
    f = p2d.forces(pos, q, L)
    h = 1e-5
    err = 0.0
    for i in range(16):
        for k in range(2):
            p1, p2 = pos.copy(), pos.copy()
            p1[i, k] += h
            p2[i, k] -= h
            fd = -(p2d.energy(p1, q, L) - p2d.energy(p2, q, L)) / (2 * h)
            err = max(err, abs(fd - f[i, k]) / max(1.0, abs(f[i, k])))
    print(f"max relative finite-difference error = {err:.2e}")
    assert err < 1e-6


def test_per_particle_energy_sums_to_total():
    st = _state(5, (7, 20))
    e_i = st.potential_energy(per_particle=True)
    assert e_i.shape == (2, 20)
    assert np.allclose(e_i.sum(1), st.potential_energy(), atol=1e-12)
    assert np.all(e_i[~st.mask] == 0)


def test_energy_and_force_continuous_at_cutoff():
    rc = POT.cutoff
    for qq in (-1.0, 0.0, 1.0):
        eps = 1e-7
        r = np.array([rc - eps, rc, rc + eps])
        u, du = POT.energy(r, qq), POT.dudr(r, qq)
        print(f"qq={qq:+.0f}: u(rc-eps)={u[0]:.2e} u'(rc-eps)={du[0]:.2e}")
        assert abs(u[0]) < 1e-12 and abs(du[0]) < 1e-7
        assert u[1] == 0 and u[2] == 0 and du[1] == 0 and du[2] == 0
    # two particles straddling the cutoff across the periodic boundary
    q = np.array([1.0, -1.0])
    for r in (rc - 1e-9, rc + 1e-9):
        pos = np.array([[0.2, 5.0], [0.2 - r + L, 5.0]])
        e, f = p2d.energy_and_forces(pos, q, L)
        assert abs(e) < 1e-12 and np.abs(f).max() < 1e-8


# --------------------------------------------------------------------------- conservation laws


def test_energy_drift_at_shipped_timestep():
    """40 frames at the shipped dt and frame spacing, at the hottest temperature of the datasets, for
    free systems of 4-24 particles and crystal systems (one padded batch: the crystal atoms are fixed)."""
    rng = np.random.default_rng(6)
    free = p2d.random_state(rng, [4, 9, 14, 19, 24, 24], L, 1.0)
    cryst = p2d.crystal_state(rng, [4, 12], L, 1.0)
    parts = [free.unpad(s) for s in range(6)] + [cryst.unpad(s) for s in range(2)]
    st = p2d.make_state(*[[p[k] for p in parts] for k in ("pos", "charge")], L,
                        vel=[p["vel"] for p in parts], fixed=[p["fixed"] for p in parts])
    st = p2d.langevin(st, p2d.DT_LANGEVIN, 300, 1.0, rng)
    tr = p2d.run_nve(st, 40, p2d.STEPS_PER_FRAME, p2d.DT)
    print(f"relative energy drift over 40 frames: max {tr.drift.max():.2e}, per system {np.round(tr.drift, 7)}")
    assert tr.drift.max() <= 1e-4


def test_total_momentum_conserved_without_crystal():
    st = _state(8, (6, 24))
    st.vel -= st.vel.sum(1, keepdims=True) / st.mask.sum(1)[:, None, None] * st.mask[..., None]
    tr = p2d.run_nve(st, 10, 100, p2d.DT)
    P = np.einsum("stnk->stk", tr.vel * st.mask[:, None, :, None])
    err = np.abs(P - P[:, :1]).max()
    print(f"max |P(t) - P(0)| = {err:.2e}")
    assert err < 1e-12


def test_maxwell_boltzmann_and_langevin_temperature():
    rng = np.random.default_rng(9)
    st = p2d.random_state(rng, [24] * 16, L, 0.8)
    assert np.abs(st.momentum()).max() < 1e-12
    st = p2d.langevin(st, p2d.DT_LANGEVIN, 600, 0.8, rng)
    T = st.kinetic_energy().sum() / (2 * 0.5 * st.mask.sum())  # K = N T in 2D
    print(f"Langevin kinetic temperature {T:.3f} (target 0.8)")
    assert abs(T - 0.8) < 0.1


def test_positions_stay_wrapped():
    tr = _short_nve(_state(10, (24,), T=1.0), frames=10, steps=100)
    assert tr.pos.min() >= 0 and tr.pos.max() < L
    assert np.all(p2d.wrap(np.array([-1e-17, 10.0, 3.0]), L) == np.array([0.0, 0.0, 3.0]))


# --------------------------------------------------------------------------- symmetries of the simulator


def test_permutation_equivariance():
    st = _state(11, (15,))
    perm = np.random.default_rng(0).permutation(15)
    sp = st.copy()
    for k in ("pos", "vel", "charge", "mass", "mask", "fixed"):
        getattr(sp, k)[:] = getattr(st, k)[:, perm]
    de = abs(sp.potential_energy()[0] - st.potential_energy()[0])
    df = np.abs(sp.forces() - st.forces()[:, perm]).max()
    a, b = _short_nve(st), _short_nve(sp)
    dt_ = _periodic_diff(b.pos, a.pos[:, :, perm])
    print(f"permutation: |dE| = {de:.1e}, |dF| = {df:.1e}, trajectory error = {dt_:.1e}")
    assert de < 1e-12 and df < 1e-12 and dt_ < 1e-9


def test_periodic_translation_invariance():
    st = _state(12, (18,))
    shift = np.array([3.7312, -8.1])
    sp = st.copy()
    sp.pos = p2d.wrap(st.pos + shift, L)
    de = abs(sp.potential_energy()[0] - st.potential_energy()[0])
    df = np.abs(sp.forces() - st.forces()).max()
    a, b = _short_nve(st), _short_nve(sp)
    dt_ = _periodic_diff(b.pos, a.pos + shift)
    print(f"translation: |dE| = {de:.1e}, |dF| = {df:.1e}, trajectory error = {dt_:.1e}")
    assert de < 1e-10 and df < 1e-9 and dt_ < 1e-8


def _square_group():
    """The 8 symmetries of the square as 2x2 integer matrices (rotations, then reflections)."""
    rot = [np.array([[round(math.cos(k * math.pi / 2)), -round(math.sin(k * math.pi / 2))],
                     [round(math.sin(k * math.pi / 2)), round(math.cos(k * math.pi / 2))]]) for k in range(4)]
    flip = np.array([[1, 0], [0, -1]])
    return rot + [r @ flip for r in rot]


@pytest.mark.parametrize("g", range(8))
def test_square_point_group_equivariance(g):
    R = _square_group()[g].astype(float)
    st = _state(13, (20,))
    sp = st.copy()
    sp.pos = p2d.wrap(st.pos @ R.T, L)
    sp.vel = st.vel @ R.T
    de = abs(sp.potential_energy()[0] - st.potential_energy()[0])
    df = np.abs(sp.forces() - st.forces() @ R.T).max()
    a, b = _short_nve(st), _short_nve(sp)
    dt_ = _periodic_diff(b.pos, a.pos @ R.T)
    print(f"square symmetry {g}: |dE| = {de:.1e}, |dF| = {df:.1e}, trajectory error = {dt_:.1e}")
    assert de < 1e-10 and df < 1e-9 and dt_ < 1e-8


def _rotation(deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s], [s, c]])


def test_generic_rotation_is_not_a_symmetry_of_the_periodic_box():
    """Rotating a dense periodic configuration by 30 degrees and wrapping it changes which images are
    nearest (the rotated tiling does not match at the box edges), so the energy changes. We pick the
    first thermal configuration whose rotated copy has no overlapping particles, so the change is not
    just a core overlap."""
    R = _rotation(30.0)
    centre = np.array([L / 2, L / 2])
    for seed in range(20):
        st = _state(seed, (24,), T=0.7)
        rotated = p2d.wrap((st.pos[0] - centre) @ R.T + centre, L)
        try:
            p2d.check_overlap(rotated, L, POT.sigma)
            break
        except ValueError:
            continue
    e0 = st.potential_energy()[0]
    e1 = p2d.energy(rotated, st.charge[0], L)
    print(f"periodic box, rotation by 30 degrees: E = {e0:.4f} -> {e1:.4f}, |dE| = {abs(e1 - e0):.3f}")
    assert abs(e1 - e0) > 0.1


def test_generic_rotation_is_a_symmetry_of_an_open_cluster():
    rng = np.random.default_rng(15)
    pos = p2d.random_positions(rng, 12, 4.0, POT.sigma) + 3.0  # a cluster in the plane, no box
    q = p2d.random_charges(rng, 12)
    R = _rotation(30.0)
    centre = np.array([1.3, -0.4])
    rot = (pos - centre) @ R.T + centre
    e0, f0 = p2d.energy_and_forces(pos, q, None)
    e1, f1 = p2d.energy_and_forces(rot, q, None)
    print(f"open cluster, rotation by 30 degrees: |dE| = {abs(e1 - e0):.1e}, |dF| = {np.abs(f1 - f0 @ R.T).max():.1e}")
    assert abs(e1 - e0) < 1e-10 and np.abs(f1 - f0 @ R.T).max() < 1e-9
    st = p2d.make_state([pos], [q], None, vel=[rng.normal(size=(12, 2))])
    sr = p2d.make_state([rot], [q], None, vel=[st.vel[0] @ R.T])
    a, b = _short_nve(st), _short_nve(sr)
    err = np.abs((a.pos - centre) @ R.T + centre - b.pos).max()
    print(f"open cluster trajectory error = {err:.1e}")
    assert err < 1e-8


# --------------------------------------------------------------------------- crystal mode


def _move_mobile(st, fn):
    """Apply ``fn`` (positions -> positions, velocities -> velocities) to the mobile particles only."""
    sp = st.copy()
    m = st.mobile[0]
    p, v = fn(st.pos[0, m], st.vel[0, m])
    sp.pos[0, m] = p2d.wrap(p, L)
    sp.vel[0, m] = v
    return sp


def test_crystal_atoms_never_move():
    st = _crystal(16, (6, 10))
    fixed = st.fixed
    assert fixed.sum() == 32 and np.all(st.vel[fixed] == 0)
    tr = _short_nve(st)
    lat = p2d.crystal_lattice()[0]
    for s in range(2):
        assert np.all(tr.pos[s][:, :16] == lat) and np.all(tr.vel[s][:, :16] == 0)


def test_crystal_lattice_symmetries_keep_dynamics_equivariant():
    st = _crystal(17, (10,))
    a = L / 4
    site = p2d.crystal_lattice()[0][5]  # a lattice site
    ops = {f"translation ({i}a, {j}a)": (np.eye(2), np.array([i * a, j * a])) for i, j in ((1, 0), (0, 1), (3, 2))}
    for k, R in enumerate(_square_group()):
        ops[f"point-group element {k} about a site"] = (R.astype(float), site - R @ site)
    m = st.mobile[0]
    e0 = st.potential_energy()[0]
    ref = _short_nve(st)
    for name, (R, t) in ops.items():
        sp = _move_mobile(st, lambda p, v, R=R, t=t: (p @ R.T + t, v @ R.T))
        de = abs(sp.potential_energy()[0] - e0)
        tr = _short_nve(sp)
        err = _periodic_diff(tr.pos[0][:, m], ref.pos[0][:, m] @ R.T + t)
        print(f"crystal, {name}: |dE| = {de:.1e}, trajectory error = {err:.1e}")
        assert de < 1e-10 and err < 1e-8


def test_half_spacing_shift_is_not_a_crystal_symmetry():
    shift = np.array([L / 8, 0.0])  # half a lattice spacing, mobile particles only
    for seed in range(18, 40):  # a configuration whose shifted copy does not overlap a crystal atom
        st = _crystal(seed, (10,))
        sp = _move_mobile(st, lambda p, v: (p + shift, v))
        try:
            p2d.check_overlap(sp.pos, L, 0.5 * POT.sigma)
            break
        except ValueError:
            continue
    de = abs(sp.potential_energy()[0] - st.potential_energy()[0])
    m = st.mobile[0]
    err = _periodic_diff(_short_nve(sp).pos[0][-1, m], _short_nve(st).pos[0][-1, m] + shift)
    print(f"crystal, half-spacing shift of the mobile particles: |dE| = {de:.3f}, trajectory difference = {err:.3f}")
    assert de > 0.05 and err > 1e-3


# --------------------------------------------------------------------------- bad input


def test_cutoff_too_large_for_box():
    with pytest.raises(ValueError, match="smaller cutoff or larger box"):
        p2d.energy(np.zeros((2, 2)) + [[0, 0], [1, 1]], np.ones(2), 5.9)
    with pytest.raises(ValueError, match="smaller cutoff or larger box"):
        p2d.random_state(np.random.default_rng(0), [4], box=6.0)


def test_overlapping_particles_rejected():
    with pytest.raises(ValueError, match="closer than the core distance"):
        p2d.make_state([np.array([[1.0, 1.0], [1.2, 1.0], [5.0, 5.0]])], [np.ones(3)], L)
    with pytest.raises(ValueError, match="too dense"):
        p2d.random_positions(np.random.default_rng(0), 400, L, 0.6)


def test_too_large_timestep_raises():
    st = _state(19, (24,), T=1.0, steps=100)
    with pytest.raises(ValueError, match="smaller dt"):
        p2d.run_nve(st, 20, 20, dt=0.02)


def test_charge_modes():
    rng = np.random.default_rng(0)
    assert set(p2d.random_charges(rng, 50)) == {-1.0, 1.0}
    assert p2d.random_charges(rng, 10, "balanced").sum() == 0
    assert np.all(p2d.random_charges(rng, 5, "neutral") == 0)
    st = _state(20, (10,), charges="neutral")  # purely repulsive cores
    assert st.potential_energy()[0] >= 0
    with pytest.raises(ValueError, match="unknown charge mode"):
        p2d.random_charges(rng, 3, "positive")
