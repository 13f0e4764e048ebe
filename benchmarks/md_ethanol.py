"""Molecular dynamics of ethanol with the learned potentials against GFN2-xTB (notebooks 08 and 09).

    python benchmarks/md_ethanol.py nve          # energy conservation, ~10 min on 1 shared thread
    python benchmarks/md_ethanol.py nvt          # observables at 500 K vs the xTB reference, ~30 min
    python benchmarks/md_ethanol.py stability    # time to an unphysical structure at 500 and 1000 K, ~30 min
    python benchmarks/md_ethanol.py sweep        # stability of the 15 models of painn_ethanol.py at 1000 K (09 §8)
    python benchmarks/md_ethanol.py nve --quick --out /tmp/m   # pipeline check (CI)
    python benchmarks/md_ethanol.py nve --device cuda          # the learned models on the GPU (xTB stays on the CPU)

Each part writes ``md_ethanol_<part>.json`` into ``--out`` (default ``benchmarks/results/``) with the
command, the thread count and the load average, so the parts can run in separate processes.

Models: GFN2-xTB (``course_lib.simulate.molecules.xtb_calculator``, the reference) and the shipped
checkpoints ``results/schnet_ethanol.pt`` (``schnet_molecules.py final``; default ``SchNet()``),
``results/nequip_curve_l0.pt`` and ``nequip_curve_l1.pt`` (``nequip_learning_curve.py``: 16 features, 3
layers, its largest training set), through :class:`course_lib.ase_calculator.ModelCalculator` in float64.
``--schnet`` / ``--nequip-l0`` / ``--nequip-l1`` point to other checkpoints. ``--device`` (``cpu``, the default and
the committed results, or ``cuda``) is where the learned models are evaluated (positions and forces cross to and
from the device at every step; wall times include that); xTB always runs on the CPU. The device is recorded in
``machine``.

Protocol (the data's own, ``course_lib.simulate.molecules``): start from the first test frame of the xTB
ethanol data, Maxwell-Boltzmann velocities at 500 K (zero momentum and angular momentum,
:func:`course_lib.md.thermalize`), timestep 0.5 fs, Langevin friction 0.01 / fs.

- ``nve``: velocity Verlet for ``--nve-ps`` ps at dt = 0.25, 0.5 and 1 fs for every method. Reported:
  the drift (slope of a straight-line fit of the total energy against time, eV/ps for the molecule,
  :func:`course_lib.md.energy_drift_per_ps`), the fluctuation (standard deviation of the total energy
  around that line, meV) and max |E_tot(t) - E_tot(0)|.
- ``nvt``: Langevin at 500 K for the learned models, ``--replicas`` independent molecules at once (50 A
  apart: further than any cutoff and than they diffuse, so they do not interact; checked and reported as
  ``min_replica_distance_A``; one model call evaluates them all), ``--equil-ps`` of equilibration, then
  ``--nvt-ps`` ps of sampling per replica, one frame every 20 steps (10 fs, as the data). The reference is
  the xTB data set itself (one 10 ps Langevin trajectory with the same protocol, 1000 frames). Observables
  (:mod:`course_lib.observables`): all interatomic distances (h(r)), the C-O bond length and the H-O-C-C
  dihedral. Distances between distributions: Wasserstein-1 (circular for the dihedral) and the
  Jensen-Shannon distance of the histograms; the *noise floor* is the same distance between the first and
  the second half of the xTB trajectory (two 5 ps samples of the same method).
- ``stability``: Langevin for up to a time limit per replica, at the temperatures and limits of
  ``--stab-runs`` (default 500 K for 10 ps, the training temperature, and 1000 K for 5 ps, a stress test that
  drives the molecule beyond its training data), ``--replicas`` replicas with different initial velocities,
  and one xTB replica as the reference. A replica *fails* at the first step with a bond (of the intact
  molecule) stretched beyond 2 x the sum of the covalent radii or NaN/inf (:class:`course_lib.md.MDGuard`);
  the failed replica is removed and the others continue. Reported per model: the failure times, the number
  of replicas that reached the limit, and the test force MAE recorded in the checkpoint (the claim of Fu et
  al., "Forces are not enough", TMLR 2023, and of the NequIP paper: at a *similar* force error, equivariant
  models are more stable; the shipped models do not have similar force errors, see notebook 08).
- ``sweep``: the same stability runs (:func:`stability_run`) for every checkpoint in ``--sweep-dir`` (default
  ``results/painn_ethanol_ckpt/``: SchNet, PaiNN, NequIP l_max 0/1/2 x 3 seeds, ``painn_ethanol.py
  --save-checkpoint``), at one temperature and limit (``--sweep-run``, default 1000 K for 0.5 ps), ``--replicas``
  replicas with the same initial velocities for every model (seeds ``--seed`` + r), and ``--xtb-replicas``
  xTB runs of one molecule each with the velocities of replicas 0, 1, ... (the reference in the same harness).
  Per checkpoint: its test force MAE and the replicas' failure times (``null`` = intact at the limit, i.e.
  censored) with :func:`course_lib.stats.survival` (fraction intact, restricted mean time, median). Written
  after every checkpoint; an interrupted call resumes (same protocol, same checkpoint hash).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet

from course_lib import observables as O
from course_lib.ase_calculator import ModelCalculator
from course_lib.datasets import load_molecules
from course_lib.md import energy_drift_per_ps, run_md, run_until_unstable, thermalize
from course_lib.stats import survival
from course_lib.train import load_model
from course_lib.utils import DEVICE_HELP, check_device, device_info

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
HOW_TO_MAKE = {
    "schnet": "python benchmarks/schnet_molecules.py final --molecules ethanol",
    "nequip_l0": "python benchmarks/nequip_learning_curve.py --lmax 0",
    "nequip_l1": "python benchmarks/nequip_learning_curve.py --lmax 1",
}
TEMPERATURE = 500.0
DT_FS = 0.5
FRICTION = 0.01  # 1/fs
SPACING = 50.0  # A between replicas
#: Ethanol in the course's data: C0 (methyl), C1, O2, H3 (hydroxyl), H4-H5 (on C1), H6-H8 (on C0).
CO_BOND = (1, 2)
HOCC_DIHEDRAL = (3, 2, 1, 0)
#: Histogram bins of the observables (A, A, degrees).
EDGES = {"distances": np.linspace(0.8, 4.0, 81), "co_bond": np.linspace(1.2, 1.7, 51),
         "dihedral": np.linspace(-180.0, 180.0, 37)}


def machine(device="cpu") -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "load_average_start": os.getloadavg(), **device_info(device)}


def start_atoms() -> Atoms:
    g = load_molecules("ethanol", "test", dtype=torch.float64)[0]
    return Atoms(numbers=g.z.numpy(), positions=g.pos.numpy())


def reference_positions() -> np.ndarray:
    """The xTB ethanol trajectory (all 1000 frames, in time order): [1000, 9, 3]."""
    return np.stack([g.pos.numpy() for g in load_molecules("ethanol", "all", dtype=torch.float64)])


def calculators(args, names) -> dict:
    """name -> (calculator factory, checkpoint metrics)."""
    out = {}
    for name in names:
        if name == "xtb":
            from course_lib.simulate.molecules import xtb_calculator

            out[name] = (xtb_calculator, {})
            continue
        model, payload = load_model(getattr(args, name), how_to_make=HOW_TO_MAKE[name])
        out[name] = ((lambda m=model: ModelCalculator(m, device=args.device)), dict(payload.get("metrics", {})))
    return out


def replicas(atoms: Atoms, k: int, seed: int, temperature: float = TEMPERATURE) -> Atoms:
    """``k`` copies of ``atoms`` 50 A apart along x, each with its own Maxwell-Boltzmann velocities
    (seed ``seed + r`` for replica r)."""
    parts = []
    for r in range(k):
        a = atoms.copy()
        a.positions += [SPACING * r, 0.0, 0.0]
        thermalize(a, temperature, seed=seed + r)
        parts.append(a)
    out = parts[0].copy()
    for a in parts[1:]:
        out += a
    return out


def _replica_blocks(positions: np.ndarray, n: int) -> np.ndarray:
    """[..., K * n, 3] -> [..., K, n, 3]."""
    return positions.reshape(*positions.shape[:-2], -1, n, 3)


def min_replica_distance(positions: np.ndarray, n: int) -> float:
    """Smallest distance between atoms of different replicas over frames [F, K n, 3]."""
    blocks = _replica_blocks(positions, n)
    k = blocks.shape[-3]
    best = np.inf
    for a in range(k):
        for b in range(a + 1, k):
            d = np.linalg.norm(blocks[:, a, :, None] - blocks[:, b, None, :], axis=-1)
            best = min(best, float(d.min()))
    return best


# ----------------------------------------------------------------------------------------- NVE


def part_nve(args) -> dict:
    names = (["xtb"] if not args.no_xtb else []) + ["schnet", "nequip_l0", "nequip_l1"]
    calcs = calculators(args, names)
    rows = []
    for name, (make, _) in calcs.items():
        for dt in (0.25, 0.5, 1.0):
            atoms = start_atoms()
            atoms.calc = make()
            thermalize(atoms, TEMPERATURE, seed=args.seed)
            steps = int(round(args.nve_ps * 1000 / dt))
            t0, c0 = time.perf_counter(), time.process_time()
            row = {"method": name, "dt_fs": dt, "steps": steps}
            try:
                rec = run_md(VelocityVerlet(atoms, timestep=dt * units.fs), steps, stride=max(1, steps // 50))
            except Exception as err:  # an unstable run is a result too
                row.update({"failed": str(err)})
                rows.append(row)
                print(f"NVE {name} dt={dt}: {err}", flush=True)
                continue
            t, e = rec.times, rec.total
            fit = np.polyfit(t, e, 1)
            row.update({
                "drift_eV_per_ps": energy_drift_per_ps(t, e),
                "fluctuation_meV": 1000 * float(np.std(e - np.polyval(fit, t))),
                "max_energy_error_meV": 1000 * rec.max_energy_error(per_atom=False),
                "mean_temperature_K": float(rec.temperature.mean()),
                "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                "times_fs": t[:: max(1, len(t) // 400)].tolist(),
                "total_energy_eV": (e - e[0])[:: max(1, len(t) // 400)].tolist(),
            })
            rows.append(row)
            print(f"NVE {name:9s} dt={dt:4.2f} fs x {steps}: drift {row['drift_eV_per_ps']:+.2e} eV/ps, fluctuation "
                  f"{row['fluctuation_meV']:.2f} meV, max |dE| {row['max_energy_error_meV']:.2f} meV, "
                  f"<T> {row['mean_temperature_K']:.0f} K ({row['cpu_s']:.0f} s CPU)", flush=True)
    return {"nve_ps": args.nve_ps, "temperature_start_K": TEMPERATURE, "rows": rows,
            "metrics": {k: v[1] for k, v in calcs.items()}}


# ----------------------------------------------------------------------------------------- NVT


def observables(positions: np.ndarray) -> dict[str, np.ndarray]:
    """Samples of the three observables from frames [F, 9, 3]."""
    return {"distances": O.pair_distances(positions).ravel(), "co_bond": O.bond_lengths(positions, *CO_BOND),
            "dihedral": O.dihedral_angles(positions, *HOCC_DIHEDRAL)}


def compare(ref: dict, other: dict) -> dict:
    return {k: O.compare_samples(ref[k], other[k], EDGES[k], periodic=360.0 if k == "dihedral" else None)
            for k in ref}


def histograms(samples: dict) -> dict:
    return {k: O.histogram(v, EDGES[k]).tolist() for k, v in samples.items()}


def part_nvt(args) -> dict:
    ref_pos = reference_positions()
    half = len(ref_pos) // 2
    ref = observables(ref_pos)
    out = {"temperature_K": TEMPERATURE, "dt_fs": DT_FS, "friction_per_fs": FRICTION, "replicas": args.replicas,
           "equil_ps": args.equil_ps, "sample_ps_per_replica": args.nvt_ps, "frame_every_steps": 20,
           "edges": {k: v.tolist() for k, v in EDGES.items()},
           "reference": {"what": "the xTB ethanol data set (all 1000 frames, 10 ps, the same Langevin protocol)",
                         "frames": len(ref_pos), "histograms": histograms(ref),
                         "noise_floor": compare(observables(ref_pos[:half]), observables(ref_pos[half:])),
                         "co_bond_mean_A": float(ref["co_bond"].mean())},
           "models": {}}
    print("noise floor (xTB first vs second half):", out["reference"]["noise_floor"], flush=True)
    n = 9
    for name, (make, metrics) in calculators(args, ["schnet", "nequip_l0", "nequip_l1"]).items():
        base = start_atoms()
        bonds1 = O.find_bonds(base.numbers, base.positions)
        bonds = [(a + m * n, b + m * n) for m in range(args.replicas) for a, b in bonds1]
        atoms = replicas(base, args.replicas, seed=args.seed)
        atoms.calc = make()
        dyn = Langevin(atoms, DT_FS * units.fs, temperature_K=TEMPERATURE, friction=FRICTION / units.fs, fixcm=False,
                       rng=np.random.RandomState(args.seed))
        t0, c0 = time.perf_counter(), time.process_time()
        row = {"metrics": metrics}
        phase = "equilibration"
        try:
            run_md(dyn, int(round(args.equil_ps * 1000 / DT_FS)), stride=1000, max_energy_change=None, bonds=bonds)
            phase = "sampling"
            rec = run_md(dyn, int(round(args.nvt_ps * 1000 / DT_FS)), stride=20, max_energy_change=None, bonds=bonds)
        except Exception as err:  # keep what was sampled before an instability (never equilibration frames)
            row.update(failed=str(err), failed_in=phase)
            rec = getattr(err, "record", None) if phase == "sampling" else None
            print(f"NVT {name}: {err} (during {phase})", flush=True)
        if rec is not None and len(rec.positions) > 1:
            frames = _replica_blocks(rec.positions, n)  # [F, K, 9, 3]
            samples = observables(frames.transpose(1, 0, 2, 3).reshape(-1, n, 3))
            k2 = args.replicas // 2
            first = observables(frames[:, :k2].transpose(1, 0, 2, 3).reshape(-1, n, 3))
            second = observables(frames[:, k2:].transpose(1, 0, 2, 3).reshape(-1, n, 3))
            row.update({"frames_per_replica": len(frames), "vs_reference": compare(ref, samples),
                        "self_split": compare(first, second) if k2 else None, "histograms": histograms(samples),
                        "co_bond_mean_A": float(samples["co_bond"].mean()),
                        "mean_temperature_K": float(rec.temperature.mean()),
                        "min_replica_distance_A": min_replica_distance(rec.positions, n)})
        row.update({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0})
        out["models"][name] = row
        if "vs_reference" in row:
            v = row["vs_reference"]
            print(f"NVT {name:9s}: W1 distances {v['distances']['w1']:.4f} A, C-O {v['co_bond']['w1']:.4f} A, "
                  f"dihedral {v['dihedral']['w1']:.1f} deg; JS {v['distances']['js']:.3f} / {v['co_bond']['js']:.3f} "
                  f"/ {v['dihedral']['js']:.3f}; <T> {row['mean_temperature_K']:.0f} K ({row['cpu_s']:.0f} s CPU)",
                  flush=True)
    return out


# ----------------------------------------------------------------------------------- stability


def _failed_replicas(positions: np.ndarray, n: int, bonds, factor: float) -> list[int]:
    """Indices (within the current system) of the replicas with a broken bond or NaN/inf positions."""
    from ase.data import covalent_radii

    blocks = _replica_blocks(positions, n)
    z = start_atoms().numbers
    i, j = np.array(bonds).T
    ref = covalent_radii[z[i]] + covalent_radii[z[j]]
    bad = []
    for m, x in enumerate(blocks):
        ratio = np.linalg.norm(x[j] - x[i], axis=-1) / ref
        if not np.all(np.isfinite(x)) or ratio.max() > factor:
            bad.append(m)
    return bad


def stability_run(make, k: int, temperature: float, limit_ps: float, seed: int, factor: float = 2.0) -> dict:
    """Langevin of ``k`` replicas until each fails or ``limit_ps``; failed replicas are removed, the rest go on."""
    base = start_atoms()
    n = len(base)
    bonds1 = O.find_bonds(base.numbers, base.positions)
    atoms = replicas(base, k, seed=seed, temperature=temperature)
    alive = list(range(k))
    fail_time = {r: None for r in range(k)}
    reasons = {}
    t_done, restart, steps_total = 0.0, 0, 0
    limit_fs = 1000.0 * limit_ps
    while alive and t_done < limit_fs - 1e-9:
        atoms.calc = make()
        dyn = Langevin(atoms, DT_FS * units.fs, temperature_K=temperature, friction=FRICTION / units.fs, fixcm=False,
                       rng=np.random.RandomState(1000 * seed + restart))
        bonds = [(a + m * n, b + m * n) for m in range(len(alive)) for a, b in bonds1]
        res = run_until_unstable(dyn, int(round((limit_fs - t_done) / DT_FS)), stride=1000, bonds=bonds,
                                 max_bond_factor=factor)
        steps_total += res.steps * len(alive)
        t_done += res.time
        if res.stable:
            break
        bad = _failed_replicas(atoms.positions, n, bonds1, factor) or list(range(len(alive)))
        for m in bad:
            fail_time[alive[m]] = t_done
            reasons[alive[m]] = res.reason
        keep = [m for m in range(len(alive)) if m not in bad]
        if keep:
            sub = atoms[[m * n + a for m in keep for a in range(n)]]
            sub.set_momenta(atoms.get_momenta()[[m * n + a for m in keep for a in range(n)]])
            atoms = sub
        alive = [alive[m] for m in keep]
        restart += 1
    times = [fail_time[r] for r in range(k)]
    return {"failure_time_fs": times, "reasons": {str(r): v for r, v in reasons.items()},
            "stable_replicas": sum(t is None for t in times), "replica_steps": steps_total}


def part_stability(args) -> dict:
    """One block per (temperature, limit) of ``--stab-runs``: the models' replicas and one xTB replica."""
    out = {"replicas": args.replicas, "max_bond_factor": 2.0, "runs": []}
    names = (["xtb"] if not args.no_xtb else []) + ["schnet", "nequip_l0", "nequip_l1"]
    calcs = calculators(args, names)
    for temperature, limit_ps in args.stab_runs:
        block = {"temperature_K": temperature, "limit_ps": limit_ps, "models": {}}
        for name, (make, metrics) in calcs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            row = stability_run(make, args.replicas if name != "xtb" else 1, temperature, limit_ps, args.seed)
            row.update({"metrics": metrics, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0})
            block["models"][name] = row
            ft = [f"{t / 1000:.2f}" if t is not None else "-" for t in row["failure_time_fs"]]
            print(f"stability {name:9s} at {temperature:.0f} K: {row['stable_replicas']}/{len(ft)} stable for "
                  f"{limit_ps} ps; failure times (ps) {ft}; force MAE "
                  f"{metrics.get('force_mae_meV_A', float('nan')):.1f} meV/A ({row['cpu_s']:.0f} s CPU)", flush=True)
        out["runs"].append(block)
    return out


def _finite_or_none(d: dict) -> dict:
    """``nan`` -> ``None`` (strict JSON)."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}


def _sweep_row(name, make, metrics, k, temperature, limit_ps, seed, extra) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    row = stability_run(make, k, temperature, limit_ps, seed)
    row.update({**extra, "force_mae_meV_A": metrics.get("force_mae_meV_A"),
                "survival_fs": _finite_or_none(survival(row["failure_time_fs"], 1000.0 * limit_ps)),
                "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0})
    ft = [f"{t / 1000:.2f}" if t is not None else "-" for t in row["failure_time_fs"]]
    print(f"sweep {name:14s} at {temperature:.0f} K: {row['stable_replicas']}/{k} intact for {limit_ps} ps; "
          f"failure times (ps) {ft}; force MAE {row['force_mae_meV_A'] or float('nan'):.1f} meV/A "
          f"({row['cpu_s']:.0f} s CPU)", flush=True)
    return row


def part_sweep(args, save=None) -> dict:
    """Stability of every checkpoint of ``--sweep-dir`` at one temperature, with xTB replicas as the reference.

    ``save(body)`` is called after every checkpoint (the partial result); rows of an earlier call with the
    same protocol and the same checkpoint hash are kept (resume).
    """
    # seed by seed (<model>_s<seed>.pt): an interrupted sweep has every model at the first seeds
    paths = sorted(Path(args.sweep_dir).glob("*.pt"), key=lambda p: (p.stem.rpartition("_s")[2], p.stem))
    if not paths:
        raise FileNotFoundError(f"no checkpoints (*.pt) in {args.sweep_dir}; make them with `python "
                                "benchmarks/painn_ethanol.py --models painn,nequip_l1,schnet,nequip_l0,nequip_l2 "
                                "--save-checkpoint`")
    paths = paths[:2] if args.quick else paths
    (temperature, limit_ps), = args.sweep_run
    body = {"temperature_K": temperature, "limit_ps": limit_ps, "replicas": args.replicas,
            "xtb_replicas": args.xtb_replicas, "max_bond_factor": 2.0, "dt_fs": DT_FS, "friction_per_fs": FRICTION,
            "sweep_dir": _rel(args.sweep_dir), "models": {}, "xtb": None}
    old = Path(args.out) / "md_ethanol_sweep.json"
    if old.exists() and not args.quick:
        prev = json.loads(old.read_text()).get("sweep", {})
        if all(prev.get(k) == body[k] for k in ("temperature_K", "limit_ps", "replicas", "xtb_replicas")) and \
                json.loads(old.read_text()).get("seed") == args.seed:
            body["models"], body["xtb"] = prev.get("models", {}), prev.get("xtb")
    for path in paths:
        digest = _sha256(path)
        if body["models"].get(path.stem, {}).get("sha256") == digest:
            continue
        model, payload = load_model(path)
        metrics = dict(payload.get("metrics", {}))
        extra = {"checkpoint": _rel(path), "sha256": digest, "model": metrics.get("model", path.stem),
                 "model_seed": metrics.get("seed")}
        make = (lambda m=model: ModelCalculator(m, device=args.device))
        body["models"][path.stem] = _sweep_row(path.stem, make, metrics, args.replicas, temperature, limit_ps,
                                               args.seed, extra)
        if save:
            save(body)
    if args.xtb_replicas and body["xtb"] is None:
        from course_lib.simulate.molecules import xtb_calculator

        rows = [stability_run(xtb_calculator, 1, temperature, limit_ps, args.seed + r)
                for r in range(args.xtb_replicas)]
        times = [r["failure_time_fs"][0] for r in rows]
        body["xtb"] = {"failure_time_fs": times, "stable_replicas": sum(t is None for t in times),
                       "reasons": [r["reasons"].get("0") for r in rows],
                       "survival_fs": _finite_or_none(survival(times, 1000.0 * limit_ps))}
        print(f"sweep xtb: {body['xtb']['stable_replicas']}/{args.xtb_replicas} intact for {limit_ps} ps", flush=True)
    return body


def _sha256(path) -> str:
    from course_lib.data import sha256_file

    return sha256_file(Path(path))


def _rel(path) -> str:
    """A checkpoint path relative to the repository when it lies inside it, else its file name."""
    try:
        return str(Path(path).resolve().relative_to(HERE.parent))
    except ValueError:
        return Path(path).name


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("nve", "nvt", "stability", "sweep"))
    p.add_argument("--quick", action="store_true", help="tiny runs (pipeline check)")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schnet", default=str(RESULTS / "schnet_ethanol.pt"))
    p.add_argument("--nequip-l0", dest="nequip_l0", default=str(RESULTS / "nequip_curve_l0.pt"))
    p.add_argument("--nequip-l1", dest="nequip_l1", default=str(RESULTS / "nequip_curve_l1.pt"))
    p.add_argument("--no-xtb", action="store_true", help="skip GFN2-xTB (NVE and stability parts)")
    p.add_argument("--nve-ps", type=float, default=None, help="NVE length (default 1 ps, quick 0.01)")
    p.add_argument("--replicas", type=int, default=None, help="independent molecules per run (default 8, quick 2)")
    p.add_argument("--equil-ps", type=float, default=None, help="NVT equilibration (default 1 ps, quick 0.005)")
    p.add_argument("--nvt-ps", type=float, default=None, help="NVT sampling per replica (default 2.5 ps, quick 0.02)")
    p.add_argument("--stab-runs", default=None,
                   help="TEMPERATURE:PS,... stability runs (default 500:10,1000:5; quick 500:0.02)")
    p.add_argument("--sweep-dir", default=str(RESULTS / "painn_ethanol_ckpt"), help="checkpoints of the sweep part")
    p.add_argument("--sweep-run", default=None,
                   help="TEMPERATURE:PS of the sweep part (default 1000:0.5, quick 1000:0.02)")
    p.add_argument("--xtb-replicas", type=int, default=None,
                   help="xTB runs (one molecule each) in the sweep part (default = --replicas, quick 1; 0: none)")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    args = p.parse_args(argv)
    args.device = str(check_device(args.device))  # fails fast, before any run
    torch.set_num_threads(args.threads)
    q = args.quick
    args.nve_ps = args.nve_ps or (0.01 if q else 1.0)
    args.replicas = args.replicas or (2 if q else 8)
    args.equil_ps = args.equil_ps if args.equil_ps is not None else (0.005 if q else 1.0)
    args.nvt_ps = args.nvt_ps or (0.02 if q else 2.5)
    runs = args.stab_runs or ("500:0.02" if q else "500:10,1000:5")
    args.stab_runs = [(float(t), float(ps)) for t, ps in (r.split(":") for r in runs.split(","))]
    sweep = args.sweep_run or ("1000:0.02" if q else "1000:0.5")
    args.sweep_run = [(float(t), float(ps)) for t, ps in (r.split(":") for r in sweep.split(","))]
    if args.xtb_replicas is None:
        args.xtb_replicas = 0 if args.no_xtb else (1 if q else args.replicas)
    res = {"command": " ".join(["python", "benchmarks/md_ethanol.py", *(argv if argv is not None else sys.argv[1:])]),
           "machine": machine(args.device), "seed": args.seed}
    if args.part != "sweep":  # the sweep's checkpoints are listed per row, with their hashes
        res["checkpoints"] = {k: {"path": _rel(getattr(args, k)), "sha256": _sha256(getattr(args, k))}
                              for k in ("schnet", "nequip_l0", "nequip_l1")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"md_ethanol_{args.part}.json"
    if args.part == "sweep":
        res["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def save(body):
        res["machine"]["load_average_end"] = os.getloadavg()
        path.write_text(json.dumps({**res, args.part: body}, indent=1) + "\n")

    t0 = time.perf_counter()
    if args.part == "sweep":
        res["sweep"] = part_sweep(args, save)
    else:
        res[args.part] = {"nve": part_nve, "nvt": part_nvt, "stability": part_stability}[args.part](args)
    res["total_wall_s"] = time.perf_counter() - t0
    save(res[args.part])
    return res


if __name__ == "__main__":
    main()
