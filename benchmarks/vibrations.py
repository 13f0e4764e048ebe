"""Harmonic frequencies and vibrational density of states of ethanol: GFN2-xTB vs the learned models (notebook 10).

    python benchmarks/vibrations.py                    # all methods, ~8 min on 1 shared thread
    python benchmarks/vibrations.py --quick --out /tmp/v   # pipeline check (CI): short MD, a subset of checks
    python benchmarks/vibrations.py --device cuda          # the learned models on the GPU (xTB stays on the CPU)

Writes ``vibrations.json`` into ``--out`` (default ``benchmarks/results/``) with the command, the machine
(:func:`course_lib.utils.machine_info`, with ``--device``: ``cpu``, the default and the committed results, or
``cuda``, where the learned models' relaxations, Hessians and MD run; xTB always runs on the CPU) and, per
method:

- **harmonic analysis** (:mod:`course_lib.vibrations`): relax the first test frame of the xTB ethanol data to a
  minimum of the method's own potential (ASE BFGS, ``fmax`` below), then the Hessian: central finite
  differences of the forces for xTB (delta = 0.005 A; xTB has no autograd here), automatic differentiation for
  the models (and a finite-difference Hessian of the model as a check, ``fd_vs_autograd_max``); the 27
  wavenumbers of the unprojected mass-weighted Hessian (six near-zero ones with their overlap with the rigid
  motions) and the 21 vibrational wavenumbers with the rigid motions projected out; the same 21 after a random
  rotation of the relaxed molecule (``rotated_max_diff_cm``, must be ~0).
- **per-mode errors**: each model's modes are matched to the xTB modes by eigenvector overlap
  (:func:`course_lib.vibrations.match_modes`), ``errors_cm[k] = model - xTB`` for xTB mode k (sorted by
  wavenumber); the O-H stretch is the xTB mode that stretches the O2-H3 bond most.
- **VDOS** (``--vdos`` methods): NVE (velocity Verlet, 0.5 fs) from the method's relaxed structure with
  Maxwell-Boltzmann velocities at 2 x ``--temperature`` K (zero momentum and rotation,
  :func:`course_lib.md.thermalize`; starting at a minimum, equipartition halves the kinetic energy, so the run's
  mean temperature is about ``--temperature`` x 21/27, the share of vibrational degrees of freedom; recorded),
  ``--vdos-ps`` ps per seed for ``--seeds`` seeds, velocities every 1 fs, mass-weighted VACF to 1/2 of the run,
  VDOS (:func:`course_lib.vibrations.vibrational_dos`); the O-H peak (largest DOS in 3300-4300 cm^-1) per seed
  and the seed-averaged spectrum up to 4500 cm^-1.

Models: the shipped checkpoints ``results/schnet_ethanol.pt`` (SchNet, notebook 05), ``nequip_curve_l0/1/2.pt``
(NequIP with l_max = 0, 1, 2, 16 features, 3 layers, the largest training set of notebook 07's learning curve;
they differ only in l_max), through :class:`course_lib.ase_calculator.ModelCalculator` in float64. One
checkpoint per model: the per-mode errors describe these trained models, not the architectures' spread over
seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.md.verlet import VelocityVerlet
from scipy.spatial.transform import Rotation

from course_lib import vibrations as V
from course_lib.ase_calculator import ModelCalculator
from course_lib.datasets import load_molecules
from course_lib.md import run_md, thermalize
from course_lib.train import load_model
from course_lib.utils import DEVICE_HELP, check_device, device_info, machine_info

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MODELS = {
    "schnet": ("schnet_ethanol.pt", "python benchmarks/schnet_molecules.py final --molecules ethanol"),
    "nequip_l0": ("nequip_curve_l0.pt", "python benchmarks/nequip_learning_curve.py --lmax 0"),
    "nequip_l1": ("nequip_curve_l1.pt", "python benchmarks/nequip_learning_curve.py --lmax 1"),
    "nequip_l2": ("nequip_curve_l2.pt", "python benchmarks/nequip_learning_curve.py --lmax 2"),
}
#: ethanol in the course's data: C0 C1 O2 H3 (hydroxyl) H4..H8; the O-H bond
OH_BOND = (2, 3)
FMAX = 1e-4     # eV/A, relaxation of the models (autograd forces: smooth to rounding)
FMAX_XTB = 5e-4  # eV/A, xTB (SCF convergence noise)
DT_FS = 0.5
OH_WINDOW = (3300.0, 4300.0)


def start_atoms() -> Atoms:
    g = load_molecules("ethanol", "test", dtype=torch.float64)[0]
    return Atoms(numbers=g.z.numpy(), positions=g.pos.numpy())


def calculators(args) -> dict:
    """name -> (calculator factory, model or None, checkpoint metrics)."""
    out = {}
    if not args.no_xtb:
        from course_lib.simulate.molecules import xtb_calculator

        out["xtb"] = (xtb_calculator, None, {})
    for name in args.models:
        model, payload = load_model(getattr(args, name), how_to_make=MODELS[name][1])
        out[name] = ((lambda m=model: ModelCalculator(m, device=args.device)), model.to(args.device),
                     dict(payload.get("metrics", {})))
    return out


def hessian(atoms: Atoms, model) -> np.ndarray:
    if model is None:
        return V.hessian_finite_difference(atoms)
    return V.hessian_autograd(V.model_energy_function(model, atoms.numbers), atoms.positions)  # model's device


def harmonic(name: str, make, model, seed: int, quick: bool) -> tuple[dict, V.NormalModes, Atoms]:
    t0 = time.perf_counter()
    relaxed = V.relax(start_atoms(), make(), fmax=FMAX if model is not None else FMAX_XTB)
    h = hessian(relaxed, model)
    m = relaxed.get_masses()
    full = V.normal_modes(h, m, relaxed.positions)
    vib = V.normal_modes(h, m, relaxed.positions, project=True)
    rot = Rotation.random(random_state=seed).as_matrix()
    turned = relaxed.copy()
    turned.positions = relaxed.positions @ rot.T
    turned.calc = make()
    vib_rot = V.normal_modes(hessian(turned, model), m, turned.positions, project=True)
    row = {"fmax_eV_A": float(np.linalg.norm(relaxed.get_forces(), axis=1).max()),
           "energy_eV": float(relaxed.get_potential_energy()),
           "positions_A": relaxed.positions.tolist(),
           "asymmetry_eV_A2": float(np.abs(h - h.T).max()),
           "all_wavenumbers_cm": full.wavenumbers.tolist(), "rigid_overlap": full.rigid.tolist(),
           "wavenumbers_cm": vib.wavenumbers.tolist(),
           "rotated_max_diff_cm": float(np.abs(vib_rot.wavenumbers - vib.wavenumbers).max())}
    if model is not None and not quick:
        relaxed.calc = make()
        row["fd_vs_autograd_max_eV_A2"] = float(np.abs(V.hessian_finite_difference(relaxed) - h).max())
    row["wall_s"] = time.perf_counter() - t0
    print(f"{name}: relaxed (fmax {row['fmax_eV_A']:.1e}), wavenumbers {np.round(vib.wavenumbers[-4:])} cm^-1, "
          f"rotation diff {row['rotated_max_diff_cm']:.2e}, {row['wall_s']:.0f} s", flush=True)
    return row, vib, relaxed


def vdos(relaxed: Atoms, make, args) -> dict:
    steps = int(round(args.vdos_ps * 1000 / DT_FS))
    peaks, spectra, temps = [], [], []
    for seed in range(args.seeds):
        atoms = relaxed.copy()
        atoms.calc = make()
        # from a minimum, equipartition moves half of the kinetic energy into potential energy: start at 2T
        thermalize(atoms, 2 * args.temperature, seed=seed)
        dyn = VelocityVerlet(atoms, timestep=DT_FS * units.fs)
        frames = V.record_velocities(dyn, stride=2)
        rec = run_md(dyn, steps, stride=1000)
        temps.append(float(rec.temperature.mean()))
        c = V.velocity_autocorrelation(np.array(frames), atoms.get_masses())
        wn, dos = V.vibrational_dos(c, dt_fs=2 * DT_FS)
        peaks.append(V.dos_peak(wn, dos, *OH_WINDOW))
        keep = wn <= 4500
        spectra.append(dos[keep])
    return {"seeds": list(range(args.seeds)), "steps": steps, "oh_peak_cm": peaks, "mean_temperature_K": temps,
            "wavenumbers_cm": wn[keep][::2].tolist(), "dos": np.mean(spectra, axis=0)[::2].tolist()}


def compare(ref: V.NormalModes, other: V.NormalModes, oh: int) -> dict:
    idx = V.match_modes(ref, other)
    err = other.wavenumbers[idx] - ref.wavenumbers
    overlap = np.sum(ref.vectors * other.vectors[:, idx], axis=0) ** 2
    return {"match": idx.tolist(), "overlap": overlap.tolist(), "errors_cm": err.tolist(),
            "mae_cm": float(np.abs(err).mean()), "oh_error_cm": float(err[oh])}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short MD, one seed (pipeline check)")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/, quick: a temp folder)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="seed of the random rotation")
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    for name, (file, _) in MODELS.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=str(RESULTS / file))
    p.add_argument("--no-xtb", action="store_true", help="skip GFN2-xTB (then errors are not computed)")
    p.add_argument("--vdos", nargs="*", default=["xtb", "schnet"], help="methods with an NVE VDOS")
    p.add_argument("--vdos-ps", type=float, default=None, help="NVE length per seed (default 2 ps, quick 0.1)")
    p.add_argument("--seeds", type=int, default=None, help="VDOS seeds (default 3, quick 1)")
    p.add_argument("--temperature", type=float, default=300.0)
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    args = p.parse_args(argv)
    args.device = str(check_device(args.device))  # fails fast, before any calculation
    torch.set_num_threads(args.threads)
    args.vdos_ps = args.vdos_ps or (0.1 if args.quick else 2.0)
    args.seeds = args.seeds or (1 if args.quick else 3)
    if args.out is None:
        import tempfile

        args.out = RESULTS if not args.quick else tempfile.mkdtemp(prefix="vibrations_")
    res = {"command": " ".join(["python", "benchmarks/vibrations.py", *(argv if argv is not None else sys.argv[1:])]),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": machine_info(**device_info(args.device)),
           "protocol": {"fmax_models_eV_A": FMAX, "fmax_xtb_eV_A": FMAX_XTB, "fd_delta_A": 5e-3, "dt_fs": DT_FS,
                        "vdos_ps": args.vdos_ps, "temperature_K": args.temperature, "oh_window_cm": OH_WINDOW,
                        "oh_bond": OH_BOND, "rotation_seed": args.seed},
           "methods": {}}
    modes, relaxed = {}, {}
    for name, (make, model, metrics) in calculators(args).items():
        row, modes[name], relaxed[name] = harmonic(name, make, model, args.seed, args.quick)
        row["checkpoint_metrics"] = metrics
        res["methods"][name] = row
    ref = "xtb" if "xtb" in modes else next(iter(modes))
    oh = V.stretch_mode(modes[ref], relaxed[ref].positions, *OH_BOND)
    res["reference"], res["oh_mode"] = ref, oh
    for name in modes:
        res["methods"][name]["vs_reference"] = compare(modes[ref], modes[name], oh)
    makers = calculators(args) if args.vdos else {}
    for name in args.vdos:
        if name in makers:
            t0 = time.perf_counter()
            res["methods"][name]["vdos"] = vdos(relaxed[name], makers[name][0], args)
            print(f"{name}: VDOS O-H peaks {res['methods'][name]['vdos']['oh_peak_cm']} cm^-1, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    res["machine"]["load_average_end"] = __import__("os").getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vibrations.json").write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
