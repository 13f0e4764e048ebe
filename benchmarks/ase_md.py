"""Speed and energy conservation of MD with the ASE calculator (course_lib.ase_calculator, course_lib.md).

    python benchmarks/ase_md.py                       # ~2 min on 1 thread, writes benchmarks/results/ase_md.json
    python benchmarks/ase_md.py --quick --out /tmp    # pipeline check, a few seconds
    python benchmarks/ase_md.py --device cuda --out /tmp/gpu   # the models on the GPU

Measures, on one CPU thread (``--device cpu``, the default and the committed results; ``--device cuda`` puts the
models on the GPU, timed with ``torch.cuda.synchronize()`` around each call, and is recorded in ``machine``):

- ``timing``: the time of one force call of SchNet (default size: hidden 64, 3 interactions, cutoff
  5 A) on ethanol (9 atoms) through ``ModelCalculator`` (positions changed before every call, so
  nothing is cached), float32 and float64, and of the bare ``energy_and_forces(model, graph)`` call on
  the same graph (the calculator's overhead is the difference). Median of ``--repeats`` calls after
  warm-up.
- ``nve_schnet``: NVE (ASE VelocityVerlet) of ethanol with a *random-but-smooth* SchNet (random
  initialisation, per-species energy shift fitted on 20 training frames, ``scale = 1`` so that forces
  are ~1 eV/A): 100 K Maxwell-Boltzmann start, ``--time-fs`` fs at dt = 0.25, 0.5, 1 fs, float64 and
  float32. Reported: max |E_tot(t) - E_tot(0)| per atom and the linear-fit drift (eV/ps/atom).
- ``nve_particles``: 2-D NVE of one particle system of the ``energy`` data set (15 charged particles,
  L = 10, reduced units) with the trained invariant MPNNs of notebook 01 and, for reference, with the exact
  pair potential of the simulator, at dt = 2 and 8 times ``particles2d.DT`` (0.001 and 0.004 tau); drift per
  tau per particle. Two MPNNs, trained alike (``energy_learning_curve.py --models mpnn --sizes 2400 --steps
  22500 --tag final``): ``mpnn_nocutoff`` (``results/energy_mpnn_final_nocutoff.pt``, the first version, whose
  messages ``phi_e(h_i, h_j, e_ij)`` do not vanish at the cutoff although the radial basis does, so its energy
  jumps when a pair crosses r_c and the NVE error does not shrink with dt) and ``mpnn``
  (``results/energy_mpnn_final.pt``, messages multiplied by the smooth cutoff weight: a continuous energy, so
  velocity Verlet's O(dt^2) error is back).

``--parts nve_particles`` (or any comma list of ``timing,nve_schnet,nve_particles``) reruns only those parts and
keeps the others of the existing ``ase_md.json`` (each part records its own command).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from torch import nn

from course_lib.ase_calculator import ModelCalculator, particles_to_atoms
from course_lib.datasets import load_molecules, load_particles
from course_lib.md import energy_drift_per_ps, run_md
from course_lib.models import energy_and_forces
from course_lib.models.mpnn import InvariantMPNN
from course_lib.models.schnet import SchNet
from course_lib.simulate import particles2d as p2d
from course_lib.train import load_checkpoint, upgrade_config
from course_lib.utils import DEVICE_HELP, check_device, device_info, synchronize

HERE = Path(__file__).resolve().parent


def _median_ms(fn, repeats: int, warmup: int = 10, device="cpu") -> tuple[float, float]:
    """(median wall-clock ms, median CPU ms of this process) per call; on a shared machine the CPU time is
    the less load-dependent number. On CUDA, synchronised before the start and before the stop."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        synchronize(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)


def _time_one(model, g, dtype, repeats: int, device="cpu") -> dict:
    """Per-call times of the calculator (positions jittered before each call) and of the bare model."""
    atoms = Atoms(numbers=g.z.numpy(), positions=g.pos.numpy())
    atoms.calc = ModelCalculator(model, device=device, dtype=dtype)
    rng = np.random.default_rng(0)

    def call():
        atoms.positions += 1e-4 * rng.standard_normal(atoms.positions.shape)
        atoms.get_forces()

    bare = atoms.calc.model
    graph = g.clone().apply(lambda t: t.to(dtype) if t.is_floating_point() else t).to(device)
    calc_wall, calc_cpu = _median_ms(call, repeats, device=device)
    bare_wall, bare_cpu = _median_ms(lambda: energy_and_forces(bare, graph, create_graph=False), repeats,
                                     device=device)
    return {"calculator_ms": calc_wall, "calculator_cpu_ms": calc_cpu, "bare_model_ms": bare_wall,
            "bare_model_cpu_ms": bare_cpu}


def timing(repeats: int, device="cpu") -> dict:
    g = load_molecules("ethanol", "train", dtype=torch.float64)[0]
    torch.manual_seed(0)
    model = SchNet().eval()
    model.fit_energy_scale(load_molecules("ethanol", "train")[:20])
    out = {"model": "SchNet()", "molecule": "ethanol", "atoms": int(g.num_nodes), "repeats": repeats}
    for dtype in (torch.float32, torch.float64):
        name = str(dtype).replace("torch.", "")
        t = out[name] = _time_one(model, g, dtype, repeats, device)
        print(f"SchNet on ethanol, {name}: calculator {t['calculator_ms']:.2f} ms/call "
              f"(CPU {t['calculator_cpu_ms']:.2f} ms), bare energy_and_forces {t['bare_model_ms']:.2f} ms "
              f"(CPU {t['bare_model_cpu_ms']:.2f} ms)", flush=True)
    return out


def _thermalize(atoms, temperature_K, seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))


def nve_schnet(time_fs: float, dts, device="cpu") -> list[dict]:
    frames = load_molecules("ethanol", "train", dtype=torch.float64)[:20]
    torch.manual_seed(0)
    model = SchNet()
    model.fit_energy_scale(frames)
    model.scale.fill_(1.0)
    model.eval()
    rows = []
    for dtype in (torch.float64, torch.float32):
        for dt in dts:
            atoms = Atoms(numbers=frames[0].z.numpy(), positions=frames[0].pos.numpy())
            atoms.calc = ModelCalculator(model, device=device, dtype=dtype)
            _thermalize(atoms, 100)
            steps = int(round(time_fs / dt))
            t0 = time.perf_counter()
            rec = run_md(VelocityVerlet(atoms, timestep=dt * units.fs), steps, stride=max(1, steps // 20),
                         max_bond_factor=None)
            row = {"dtype": str(dtype).replace("torch.", ""), "dt_fs": dt, "steps": steps,
                   "max_energy_error_eV_per_atom": rec.max_energy_error(),
                   "drift_eV_per_ps_per_atom": energy_drift_per_ps(rec.times, rec.total, rec.n_atoms),
                   "temperature_K_start_end": [float(rec.temperature[0]), float(rec.temperature[-1])],
                   "wall_s": time.perf_counter() - t0}
            rows.append(row)
            print(f"SchNet NVE {row['dtype']} dt={dt} fs x {steps}: max |dE| {row['max_energy_error_eV_per_atom']:.2e} "
                  f"eV/atom, drift {row['drift_eV_per_ps_per_atom']:+.2e} eV/ps/atom, "
                  f"T {row['temperature_K_start_end'][0]:.0f} -> {row['temperature_K_start_end'][1]:.0f} K "
                  f"({row['wall_s']:.1f} s)", flush=True)
    return rows


PARTS = ("timing", "nve_schnet", "nve_particles")


class ExactPairPotential(nn.Module):
    """The simulator's potential (particles2d.energy) as an energy model."""

    def forward(self, batch):
        return p2d.energy(batch.pos, batch.charge, float(batch.box[0, 0])).reshape(1)


PARTICLE_MODELS = {"mpnn_nocutoff": "energy_mpnn_final_nocutoff.pt", "mpnn": "energy_mpnn_final.pt"}


def _final_mpnn(filename: str) -> InvariantMPNN:
    ckpt = HERE / "results" / filename
    payload = torch.load(ckpt, weights_only=True, map_location="cpu")
    mpnn = InvariantMPNN(**upgrade_config(InvariantMPNN, payload["config"]))
    load_checkpoint(ckpt, mpnn)
    return mpnn.eval()


def nve_particles(time_tau: float, device="cpu") -> list[dict]:
    g = load_particles("energy", "test")[0]
    rows = []
    models = [(name, _final_mpnn(f)) for name, f in PARTICLE_MODELS.items()] + [("exact", ExactPairPotential().eval())]
    for name, model in models:
        for dt in (2 * p2d.DT, 8 * p2d.DT):
            atoms = particles_to_atoms(g.pos.double().numpy(), g.charge.double().numpy(), box=g.box.numpy(),
                                       vel=g.vel.double().numpy())
            atoms.calc = ModelCalculator(model, device=device, system="particles2d")
            steps = int(round(time_tau / dt))
            t0 = time.perf_counter()
            rec = run_md(VelocityVerlet(atoms, timestep=dt), steps, stride=max(1, steps // 20))
            row = {"model": name, "dt_tau": dt, "steps": steps, "particles": len(atoms),
                   "max_energy_error_per_particle": rec.max_energy_error(),
                   "drift_per_tau_per_particle": rec.drift(),
                   "temperature_start_end": [float(rec.temperature[0]), float(rec.temperature[-1])],
                   "max_z": float(np.abs(rec.positions[..., 2]).max()),
                   "wall_s": time.perf_counter() - t0}
            rows.append(row)
            print(f"particles NVE {name} dt={dt} tau x {steps}: max |dE| {row['max_energy_error_per_particle']:.2e} "
                  f"eps/particle, drift {row['drift_per_tau_per_particle']:+.2e} eps/tau/particle, T "
                  f"{row['temperature_start_end'][0]:.2f} -> {row['temperature_start_end'][1]:.2f}, max |z| "
                  f"{row['max_z']} ({row['wall_s']:.1f} s)", flush=True)
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short runs (pipeline check)")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for ase_md.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=None, help="timed calls (default 300, quick 20)")
    p.add_argument("--time-fs", type=float, default=None, help="SchNet NVE length in fs (default 250, quick 10)")
    p.add_argument("--time-tau", type=float, default=None, help="particle NVE length in tau (default 2, quick 0.1)")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.add_argument("--parts", default=",".join(PARTS), help="comma list of parts to (re)run; the others are kept "
                   "from the existing ase_md.json in --out")
    args = p.parse_args(argv)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        p.error(f"--parts: unknown {unknown or 'empty'}; choose among {', '.join(PARTS)}")
    device = str(check_device(args.device))  # fails fast, before any model is built
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (20 if args.quick else 300)
    time_fs = args.time_fs or (10.0 if args.quick else 250.0)
    time_tau = args.time_tau or (0.1 if args.quick else 2.0)
    out = Path(args.out)
    command = " ".join(["python", "benchmarks/ase_md.py", *(argv if argv is not None else sys.argv[1:])])
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
               "load_average_start": os.getloadavg(), **device_info(device)}
    old = out / "ase_md.json"
    results = json.loads(old.read_text()) if set(parts) != set(PARTS) and old.exists() else {}
    if set(parts) != set(PARTS) and not results:
        raise SystemExit(f"--parts {args.parts}: no {old} to keep the other parts from; run all parts first")
    results.setdefault("part_commands", {k: results.get("command") for k in PARTS if k in results})
    if set(parts) == set(PARTS):
        results.update(command=command, machine=machine)
    run = {"timing": lambda: timing(repeats, device),
           "nve_schnet": lambda: nve_schnet(time_fs, (0.25, 0.5, 1.0), device),
           "nve_particles": lambda: nve_particles(time_tau, device)}
    for part in PARTS:
        if part in parts:
            results[part] = run[part]()
            results["part_commands"][part] = command
            results.setdefault("part_machines", {})[part] = {**machine, "load_average_end": os.getloadavg()}
    if set(parts) == set(PARTS):
        results["machine"]["load_average_end"] = os.getloadavg()
    out.mkdir(parents=True, exist_ok=True)
    old.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
