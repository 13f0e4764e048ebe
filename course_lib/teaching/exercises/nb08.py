"""Checkers of notebook 08: molecular dynamics with the learned potentials.

Exercises:

- ``08.velocity_verlet_step``: one step of the velocity-Verlet integrator (what ASE's ``VelocityVerlet``
  does), with one force call per step.
- ``08.distance_histogram``: ``h(r)``, the mean number of atom pairs per frame and per unit length at
  distance r, from a trajectory.
- ``08.md_setup``: a design exercise: ``md_setup() -> dict`` with the timestep and the thermostat of MD with the
  shipped SchNet potential of ethanol. Graded by running short hidden MD: NVE (velocity Verlet at the chosen
  timestep) must stay stable (a prerequisite), keep the energy error below :data:`MD_ENERGY_BAR_MEV` meV per
  atom and stay within a budget of force calls; NVT (the chosen thermostat) must stay stable, and its coupling
  time must lie in :data:`MD_COUPLING_FS` (strong enough to thermalise a short run, weak enough not to
  overdamp the vibrations). Force calls, not CPU seconds, measure the cost, so the verdict does not depend
  on the machine's load.

No reference solution is here: the expected outputs (of the correct solution and of the known mistakes)
come from the checker's ``expected`` provider (:mod:`course_lib.teaching.exercises.stored`).
"""

from __future__ import annotations

import functools

import numpy as np

from course_lib.teaching.checks import exercise
from course_lib.teaching.exercises.common import call_student, close_arrays, shape_of, type_name
from course_lib.teaching.exercises.stored import provider

__all__ = ["check_velocity_verlet_step", "check_distance_histogram", "check_md_setup", "MD_ENERGY_BAR_MEV",
           "MD_COUPLING_FS", "MD_THERMOSTATS"]

_POSITION_MISTAKES = {
    "pos: no acceleration": "the position update misses the acceleration term + dt^2/2 * F/m",
    "pos: no 1/2": "the acceleration term of the position update is dt^2/2 * F/m: you forgot the factor 1/2",
    "pos: no mass": "divide the forces by the masses (a = F/m, with masses[:, None] so that each atom's row is "
                    "divided by its own mass)",
    "pos: times mass": "the acceleration is F / m, not F * m",
    "pos: new velocity": "the positions must move with the *old* velocity plus the acceleration term "
                         "(x + dt v + dt^2/2 a), not with the updated velocity",
}
_VELOCITY_MISTAKES = {
    "vel: old forces only": "the velocity update uses only the old forces (an Euler step): average the old and "
                            "the new acceleration, v + dt/2 (F_old + F_new)/m",
    "vel: new forces only": "the velocity update uses only the new forces: average the old and the new "
                            "acceleration, v + dt/2 (F_old + F_new)/m",
    "vel: no 1/2": "the velocity update needs dt/2 (F_old + F_new)/m: you forgot the 1/2",
    "vel: no mass": "divide the forces by the masses in the velocity update too",
}
_HISTOGRAM_MISTAKES = {
    "pairs twice": "every pair is counted twice (i, j) and (j, i): count each pair once, i < j "
                   "(np.triu_indices(N, k=1))",
    "all entries": "you counted all N x N entries of the distance matrix: that counts each pair twice and adds the "
                   "N zero self-distances i = j; use the pairs i < j only",
    "self pairs": "the N zero distances of each atom to itself (i = j) are counted: use the pairs i < j only",
    "no frames": "divide by the number of frames: h(r) is a mean per frame",
    "no width": "divide each bin by its width: h(r) is a density per unit length (the bins here have different "
                "widths)",
    "first width": "divide each bin by its own width (the bins here have different widths), not by the width of "
                   "the first bin",
    "mean width": "divide each bin by its own width (the bins here have different widths), not by the mean bin "
                  "width",
    "normalised": "h(r) is not normalised to 1: it counts pairs, so sum(h * width) is the mean number of pairs per "
                  "frame in the range (do not use density=True)",
    "probability": "h(r) is not a probability per bin: divide the pair counts by the number of frames and by the "
                   "bin widths",
    "per distance": "h(r) is not a probability per bin: divide the pair counts by the number of frames and by the "
                    "bin widths (not by the number of distances)",
}


# ------------------------------------------------------------------------- helpers


class _CountingForces:
    """A smooth anharmonic force field (springs between neighbours in a chain plus a quartic well),
    counting its calls."""

    #: in the grader this object stays with the checker and the student's code calls it from its process
    #: (the count must be the checker's own)
    __grader_callback__ = True

    def __init__(self, n: int, d: int, seed: int):
        g = np.random.default_rng(seed)
        self.k = 1.0 + g.random(n - 1)
        self.r0 = 1.0 + 0.2 * g.random(n - 1)
        self.calls = 0

    def energy(self, x):
        b = np.linalg.norm(x[1:] - x[:-1], axis=-1)
        return float(0.5 * np.sum(self.k * (b - self.r0) ** 2) + 0.05 * np.sum(x ** 4))

    def __call__(self, x):
        self.calls += 1
        x = np.asarray(x, dtype=np.float64)
        dx = x[1:] - x[:-1]
        b = np.linalg.norm(dx, axis=-1, keepdims=True)
        f_bond = -(self.k[:, None] * (b - self.r0[:, None])) * dx / b  # force on atom i+1 from bond (i, i+1)
        f = -0.2 * x ** 3
        f[1:] += f_bond
        f[:-1] -= f_bond
        return f


def _state(seed: int, n: int, d: int):
    g = np.random.default_rng(seed)
    steps = 1.0 + 0.1 * g.standard_normal((n - 1, d))
    pos = np.cumsum(np.concatenate([np.zeros((1, d)), steps]), axis=0) / np.sqrt(d)
    vel = 0.5 * g.standard_normal((n, d))
    masses = 1.0 + 3.0 * g.random(n)
    return pos, vel, masses


# ------------------------------------------------------------------------- checkers


def _first(out, candidates: dict, texts: dict, default: str) -> str:
    return next((texts[k] for k, v in candidates.items() if close_arrays(out, v, atol=1e-10, rtol=1e-9)), default)


@exercise("08.velocity_verlet_step", "one velocity-Verlet step")
def check_velocity_verlet_step(fn, fb, seed: int = 0, n: int = 5, d: int = 3, dt: float = 0.05, expected=None):
    want = provider(expected)
    pos, vel, masses = _state(seed, n, d)
    field = _CountingForces(n, d, seed)
    forces = field(pos)
    inputs = (pos, vel, forces, masses, dt)
    ref_pos, ref_vel, ref_forces = (np.asarray(a) for a in want("08.velocity_verlet_step", "values", *inputs,
                                                                  _CountingForces(n, d, seed)))
    mistakes = {name: np.asarray(want("08.velocity_verlet_step", name, *inputs, _CountingForces(n, d, seed)))
                for name in (*_POSITION_MISTAKES, *_VELOCITY_MISTAKES)}
    args = [a.copy() for a in (pos, vel, forces, masses)]
    field.calls = 0
    out = fn(*args, dt, field)
    fb.expect(isinstance(out, tuple) and len(out) == 3, f"return a tuple (new_pos, new_vel, new_forces), got "
              f"{type_name(out)}{'' if not isinstance(out, tuple) else f' of length {len(out)}'}", fatal=True)
    new_pos, new_vel, new_forces = out
    fb.expect(all(np.shape(o) == (n, d) for o in out),
              f"each output must have the shape of pos {(n, d)}; got {[shape_of(o, arrays=True) for o in out]}",
              fatal=True)
    fb.expect(all(np.array_equal(a, b) for a, b in zip(args, (pos, vel, forces, masses))),
              "your function changed its inputs in place (e.g. pos += ...): return new arrays instead")
    calls = field.calls
    fb.expect(calls == 1, f"force_fn was called {calls} times; velocity Verlet needs exactly one new force "
              "evaluation per step (the forces at the start are given: reuse them)")
    pos_ok = close_arrays(new_pos, ref_pos, atol=1e-10, rtol=1e-9)
    fb.expect(pos_ok, _first(new_pos, {k: mistakes[k] for k in _POSITION_MISTAKES}, _POSITION_MISTAKES,
                             "new_pos differs from x + dt v + dt^2/2 F/m"), ok="positions OK", values=True)
    fb.expect(close_arrays(new_forces, _CountingForces(n, d, seed)(new_pos), atol=1e-10, rtol=1e-9),
              "new_forces must be force_fn(new_pos), the forces at the *new* positions (they are the "
              "starting forces of the next step)")
    vel_ok = close_arrays(new_vel, ref_vel, atol=1e-10, rtol=1e-9)
    if vel_ok or pos_ok:  # with wrong positions the new forces differ: no diagnosis of the velocities
        fb.expect(vel_ok, _first(new_vel, {k: mistakes[k] for k in _VELOCITY_MISTAKES}, _VELOCITY_MISTAKES,
                                 "new_vel differs from v + dt/2 (F_old + F_new) / m"), ok="velocities OK", values=True)
    # physics: time reversibility and energy conservation over many steps (only if one step is right)
    if pos_ok and vel_ok:
        back = fn(ref_pos, -ref_vel, ref_forces, masses, dt, _CountingForces(n, d, seed))
        err = float(np.abs(back[0] - pos).max())
        fb.expect(err < 1e-10, f"not time-reversible: stepping back with -v does not return to the start "
                  f"(error {err:.1e})")
        x, v, f = pos.copy(), vel.copy(), forces.copy()
        e0 = field.energy(x) + 0.5 * np.sum(masses[:, None] * v ** 2)
        emax = 0.0
        for _ in range(200):
            x, v, f = fn(x, v, f, masses, dt, field)
            emax = max(emax, abs(field.energy(x) + 0.5 * np.sum(masses[:, None] * v ** 2) - e0))
        fb.expect(emax < 5e-3 * max(1.0, abs(e0)), f"the total energy drifts by {emax:.2e} in 200 steps: "
                  "a correct velocity-Verlet step conserves it to O(dt^2)")


@exercise("08.distance_histogram", "the distance histogram h(r) of a trajectory")
def check_distance_histogram(fn, fb, seed: int = 0, frames: int = 7, n: int = 6, d: int = 3, expected=None):
    want = provider(expected)
    g = np.random.default_rng(seed)
    positions = 2.0 * g.standard_normal((frames, n, d))
    edges = np.concatenate([[0.0], np.cumsum(0.3 + 0.4 * g.random(12))])  # uneven bins starting at r = 0
    ref = np.asarray(want("08.distance_histogram", "values", positions, edges))
    one_ref = np.asarray(want("08.distance_histogram", "values", positions[:1], edges))
    mistakes = {name: np.asarray(want("08.distance_histogram", name, positions, edges)) for name in _HISTOGRAM_MISTAKES}
    h = fn(positions.copy(), edges.copy())
    fb.expect(np.shape(h) == ref.shape, f"h has shape {shape_of(h, arrays=True)}; expected {ref.shape}: one value "
              f"per bin (len(edges) - 1 = {len(edges) - 1})", fatal=True)
    fb.expect(close_arrays(h, ref, atol=1e-10, rtol=1e-9),
              _first(h, mistakes, _HISTOGRAM_MISTAKES, "h differs from (pair counts per bin) / (frames x bin width), "
                     "pairs i < j"), ok="matches the expected values", values=True)
    # the same trajectory in another orientation and atom order: h(r) only sees distances
    R, _ = np.linalg.qr(g.standard_normal((d, d)))
    moved = positions[:, g.permutation(n)] @ R.T + g.standard_normal(d)
    fb.expect(close_arrays(fn(moved, edges), ref, atol=1e-10, rtol=1e-9), "rotating, translating or relabelling the "
              "atoms changed your h(r): it must depend on the interatomic distances only")
    one = fn(positions[:1], edges)
    fb.expect(close_arrays(one, one_ref, atol=1e-10, rtol=1e-9), "a single frame ([1, N, d]) gives a wrong h(r)",
              values=True)


# --------------------------------------------------------------------------------------------
# 08.md_setup (design)
# --------------------------------------------------------------------------------------------

#: the bar of the NVE run: max |E_tot(t) - E_tot(0)| per atom, in meV
MD_ENERGY_BAR_MEV = 4.0
#: the allowed coupling time of the thermostat (1 / friction for Langevin, taut for Bussi), fs
MD_COUPLING_FS = (20.0, 500.0)
#: the thermostats a design may choose (both sample the canonical ensemble)
MD_THERMOSTATS = {"langevin": "friction_per_fs", "bussi": "taut_fs"}
_SHIPPED = ("benchmarks/results/schnet_ethanol.pt", "python benchmarks/schnet_molecules.py final")


@functools.cache
def _md_potential():
    """The shipped SchNet of ethanol in float64 and the ethanol test frames (loaded once per process)."""
    import torch

    from course_lib.datasets import load_molecules
    from course_lib.train import load_shipped_model

    model, _ = load_shipped_model(_SHIPPED[0], how_to_make=_SHIPPED[1])
    return model.double().eval(), load_molecules("ethanol", "test", dtype=torch.float64)


def _md_atoms(frame: int, seed: int):
    from ase import Atoms

    from course_lib.ase_calculator import ModelCalculator
    from course_lib.md import thermalize

    model, frames = _md_potential()
    start = frames[frame]
    atoms = Atoms(numbers=start.z.numpy(), positions=start.pos.numpy())
    atoms.calc = ModelCalculator(model)
    return thermalize(atoms, 500.0, seed=seed)


def _md_read_setup(fb, setup) -> tuple[float, str, float]:
    """The timestep, the thermostat and its coupling time from the student's dict (fatal checks)."""
    fb.expect(isinstance(setup, dict), f"md_setup() must return a dict, got {type_name(setup)}", fatal=True)
    dt = setup.get("timestep_fs")
    fb.expect(isinstance(dt, (int, float)) and not isinstance(dt, bool) and np.isfinite(dt) and dt > 0,
              f"'timestep_fs' must be a positive number (fs), got {dt!r}", fatal=True)
    thermostat = setup.get("thermostat")
    fb.expect(thermostat in MD_THERMOSTATS, f"'thermostat' must be one of {sorted(MD_THERMOSTATS)}, got "
              f"{thermostat!r} (Berendsen rescaling is not offered: it does not sample the canonical ensemble)",
              fatal=True)
    key = MD_THERMOSTATS[thermostat]
    value = setup.get(key)
    fb.expect(isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value > 0,
              f"the {thermostat} thermostat needs '{key}', a positive number, got {value!r}", fatal=True)
    coupling = 1.0 / value if thermostat == "langevin" else float(value)
    return float(dt), thermostat, coupling


def _md_run(dyn, steps: int, max_energy_change):
    """(record, None) or (None, the guard's reason)."""
    from course_lib.md import MDInstability, run_md

    try:
        return run_md(dyn, steps, stride=10, max_energy_change=max_energy_change), None
    except MDInstability as err:
        return None, str(err)


def _md_nve(fb, dt: float, length_fs: float, budget: int, frame: int, seed: int) -> list[str]:
    from ase import units
    from ase.md.verlet import VelocityVerlet

    steps = int(np.ceil(length_fs / dt - 1e-9))
    within = steps <= budget
    fb.expect(within, f"too slow: {length_fs:g} fs of NVE at dt = {dt:g} fs take {steps} force calls, over the budget "
              f"of {budget} (dt >= {length_fs / budget:.2f} fs); the NVE run was not done", ok=f"NVE: {steps} force "
              f"calls (budget {budget})", values=True)
    if not within:
        return []
    atoms = _md_atoms(frame, seed)
    rec, failure = _md_run(VelocityVerlet(atoms, timestep=dt * units.fs), steps, max_energy_change=1.0)
    fb.expect(failure is None, f"NVE at dt = {dt:g} fs is not stable: {failure}", ok=f"NVE at dt = {dt:g} fs stable")
    if failure is not None:
        return [f"stability of NVE at dt = {dt:g} fs: {failure.split(':')[0]}"]
    err = 1000 * float(np.abs(rec.total - rec.total[0]).max()) / len(atoms)
    fb.expect(err <= MD_ENERGY_BAR_MEV, f"the NVE energy error is {err:.1f} meV per atom over {length_fs:g} fs, above "
              f"the bar of {MD_ENERGY_BAR_MEV:g} meV per atom: the timestep is too large for the O-H and C-H "
              "stretches (the error of velocity Verlet grows like dt^2)", ok=f"NVE energy error {err:.1f} meV per "
              f"atom (bar {MD_ENERGY_BAR_MEV:g})", values=True)
    return []


def _md_nvt(fb, dt: float, thermostat: str, coupling: float, length_fs: float, budget: int, frame: int,
            seed: int) -> list[str]:
    from ase import units

    low, high = MD_COUPLING_FS
    ok = low <= coupling <= high
    why = ("too weak: a short run does not reach the target temperature (it needs several coupling times)"
           if coupling > high else "too strong: the thermostat overdamps the molecule's vibrations (the O-H stretch "
           "has a period of about 10 fs), so the dynamics, spectra and diffusion are no longer those of the potential")
    fb.expect(ok, f"the {thermostat} coupling time is {coupling:g} fs, outside [{low:g}, {high:g}] fs: {why}",
              ok=f"{thermostat} coupling time {coupling:g} fs", values=True)
    atoms = _md_atoms(frame, seed)
    if thermostat == "langevin":
        from ase.md.langevin import Langevin

        dyn = Langevin(atoms, timestep=dt * units.fs, temperature_K=500.0, friction=1.0 / (coupling * units.fs),
                       fixcm=False, rng=np.random.default_rng(seed))
    else:
        from ase.md.bussi import Bussi

        dyn = Bussi(atoms, timestep=dt * units.fs, temperature_K=500.0, taut=coupling * units.fs,
                    rng=np.random.default_rng(seed))
    steps = int(np.ceil(length_fs / dt - 1e-9))
    _, failure = _md_run(dyn, min(steps, budget), max_energy_change=None)
    fb.expect(failure is None, f"NVT ({thermostat}) at dt = {dt:g} fs is not stable: {failure}",
              ok=f"NVT ({thermostat}) stable")
    return [] if failure is None else [f"stability of NVT at dt = {dt:g} fs: {failure.split(':')[0]}"]


@exercise("08.md_setup", "design: a stable and affordable MD setup for the learned potential")
def check_md_setup(fn, fb, seed: int = 0, frame: int = 0, length_fs: float = 300.0, budget: int = 400,
                   expected=None):
    """A design exercise graded by running MD with the shipped SchNet of ethanol (500 K start). Stability of the
    NVE and NVT runs is a prerequisite (a run that blows up scores 0 for the case, the feedback says when and
    why); the energy error of NVE, the budget of force calls and the thermostat's coupling time are the bars."""
    import warnings

    setup = call_student(fb, fn, (), "md_setup()")
    dt, thermostat, coupling = _md_read_setup(fb, setup)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        broken = _md_nve(fb, dt, length_fs, budget, frame, seed)
        broken += _md_nvt(fb, dt, thermostat, coupling, length_fs, budget, frame, seed + 1)
    fb.expect(not broken, f"the setup breaks a required property ({'; '.join(broken)}): an MD run that falls apart "
              "measures nothing, and this case scores 0", fatal=True, ok="stable in NVE and NVT")
