"""The physicist's baseline for notebook 02: notebook 01's invariant energy model, trained on energies and forces,
integrated with velocity Verlet, against the EGNN next-step model on the same test trajectories.

    OMP_NUM_THREADS=1 python benchmarks/energy_dynamics.py          # 3 seeds, ~3 CPU-min of training each
    python benchmarks/energy_dynamics.py --quick --out /tmp/ed      # pipeline check (CI)
    python benchmarks/energy_dynamics.py --device cuda --out /tmp/ed

Protocol (``benchmarks/README.md``): for seeds 0, 1, 2 an ``InvariantMPNN`` (the default configuration of notebook
01, smooth cutoff) is trained on all 2400 training systems of the energy data set (``load_particles("energy")``:
the same pair potential, particle numbers and temperatures as the trajectories) with the loss
``MSE(E/N) + MSE(force components)`` (:func:`course_lib.losses.per_atom_energy_force_loss`), batch 32 in a random
order per seed, Adam (lr 1e-3, halved when the validation loss stalls), ``--steps`` optimiser steps in ``--evals``
intervals each followed by a validation pass (300 systems; the best weights are kept) and
:func:`course_lib.stats.plateau` of the validation curve. The trained energy is wrapped in
:class:`course_lib.models.verlet.EnergyVerlet` (float64, ``--substeps`` velocity-Verlet steps of
``0.2 / substeps`` per frame; the simulator itself takes 400 of 0.0005) and scored with exactly the metrics of
``egnn_dynamics.py`` (its ``evaluate_dynamics``: one-step position and velocity MSE on every test pair, the 39-step
rollout's position MSE, the speed Wasserstein-1 distance; the 25 test trajectories: interpolation, the same
simulation as the training data). Physics diagnostics of every rollout: the largest change of the total momentum,
the relative drift of the *true* energy ``max_t |H(t) - H(0)| / <K>`` (``H`` = the simulator's potential + kinetic
energy of the predicted states) and histograms of the velocity components against the Maxwell-Boltzmann mixture at
each system's temperature. References, computed once: the true potential integrated the same way (what the
integrator and chaos alone cost at this timestep), the shipped EGNN ``results/dyn_egnn.pt`` (its diagnostics, kept
for comparison with earlier versions) and the EGNN over seeds: the one-step EGNNs of the same seeds, 10 epochs each,
saved by ``egnn_dynamics.py --checkpoint-dir`` in ``results/egnn_dynamics_seeds/ckpt/egnn_s<seed>.pt`` (the runs of
``egnn_dynamics_seeds/box_s<seed>.json``), scored like the learned energy (``references["egnn_seeds"]``, their mean
± s.e. in ``summary_egnn``). Every model is rolled out once: the diagnostics reuse the rollout of the metrics.

Resumable: each seed writes ``<out>/energy_dynamics_runs/mpnn_s<seed>.json`` and its model
``energy_dynamics_runs/mpnn_s<seed>.pt``; finished seeds are skipped. ``energy_dynamics.json`` is rebuilt at the end
(per-seed rows, mean ± s.e., references, command, date, machine). ``--device``: ``cpu`` (the default; the committed
results are CPU results) or ``cuda`` for training (the rollouts run in float64 on the same device).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import RandomSampler
from torch_geometric.loader import DataLoader

from course_lib import stats
from course_lib.datasets import load_particles
from course_lib.losses import per_atom_energy_force_loss
from course_lib.models import energy_and_forces
from course_lib.models.egnn import rollout
from course_lib.models.mpnn import InvariantMPNN
from course_lib.models.verlet import EnergyVerlet, PairPotentialEnergy
from course_lib.simulate import particles2d as p2d
from course_lib.train import fit, load_model, save_checkpoint
from course_lib.utils import DEVICE_HELP, check_device, device_info, machine_info, seed_everything

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from egnn_dynamics import evaluate_dynamics  # noqa: E402  (one home for the metrics of notebooks 02/03)

BATCH = 32
FRAME_DT = p2d.DT * p2d.STEPS_PER_FRAME  # 0.2
VEL_BINS = np.linspace(-4.0, 4.0, 41)
DEFAULT_EGNN_CKPT_DIR = "benchmarks/results/egnn_dynamics_seeds/ckpt"  # relative to the repository root


def _repo_relative(path) -> str:
    """``path`` relative to the repository root where it lies inside it (results files name no machine's
    folders), else absolute."""
    path = Path(path).resolve()
    return path.relative_to(HERE.parent).as_posix() if path.is_relative_to(HERE.parent) else str(path)


METRICS = ("one_step_pos_mse", "one_step_vel_mse", "rollout_pos_mse_mean", "rollout_pos_mse_final", "speed_w1",
           "momentum_change_max", "energy_drift_median", "energy_drift_max")


def train_energy(seed: int, train, val, steps: int, evals: int, device="cpu"):
    """One seed: the MPNN trained on energies and forces for ``steps`` steps; returns (model, history)."""
    seed_everything(seed)
    model = InvariantMPNN()
    model.fit_energy_scale(train)
    interval = max(1, steps // evals)
    sampler = RandomSampler(train, num_samples=interval * BATCH, generator=torch.Generator().manual_seed(seed))
    hist = fit(model, DataLoader(train, batch_size=BATCH, sampler=sampler), DataLoader(val, batch_size=100),
               per_atom_energy_force_loss, epochs=evals, lr=1e-3, patience=None, progress=False,
               needs_grad_eval=True, desc=f"mpnn s{seed}", device=device)
    return model.eval(), hist


def energy_errors(model, test, device="cpu") -> dict:
    """Test MAE of the energy (per system) and of the force components on the energy data's test split."""
    e_err, f_err = [], []
    for b in DataLoader(test, batch_size=100):
        b = b.to(device)
        e, f = energy_and_forces(model, b, create_graph=False)
        e_err.append((e.detach() - b.energy).abs().cpu())
        f_err.append((f.detach() - b.forces).abs().flatten().cpu())
    return {"energy_mae": float(torch.cat(e_err).mean()), "force_mae": float(torch.cat(f_err).mean())}


def physics(model, trajs, steps: int, device="cpu", rolled=None) -> dict:
    """Momentum and true-energy conservation of the rollouts, and velocity histograms (see the docstring).

    ``rolled``: the rollout ``(traj_pos, traj_vel)`` of ``trajs`` in one batch, when the caller has it already
    (``evaluate_dynamics(..., return_rollout=True)``); otherwise the model is rolled out here."""
    batch = next(iter(DataLoader(trajs, batch_size=len(trajs)))).to(device)
    if rolled is None:
        with torch.no_grad():
            rolled = rollout(model, batch, steps)
    tp, tv = rolled
    b = batch.batch
    G = int(b.max()) + 1
    P = torch.stack([tv[b == g].sum(0) for g in range(G)])  # [G, T, 2]
    dP = (P - P[:, :1]).norm(dim=-1).amax(dim=1)
    drift = []
    for g in range(G):
        m = b == g
        q, L = batch.charge[m].cpu().numpy(), float(batch.box[g, 0])
        pos, vel = tp[m].transpose(0, 1).cpu().numpy(), tv[m].transpose(0, 1).cpu().numpy()  # [T, n, 2]
        K = 0.5 * (vel**2).sum(axis=(1, 2))
        H = np.array([float(p2d.energy(x, q, L)) for x in pos]) + K
        drift.append(float(np.abs(H - H[0]).max() / K.mean()))
    true_v = batch.traj_vel[:, 1 : steps + 1]
    T_sys = torch.stack([true_v[b == g].pow(2).mean() for g in range(G)])  # kinetic temperature per system
    centers = 0.5 * (VEL_BINS[1:] + VEL_BINS[:-1])
    n_per = torch.bincount(b, minlength=G).double()
    mb = sum(float(n_per[g]) * np.exp(-centers**2 / (2 * float(T_sys[g]))) / np.sqrt(2 * np.pi * float(T_sys[g]))
             for g in range(G)) / float(n_per.sum())
    hist = lambda v: np.histogram(v.detach().cpu().numpy().ravel(), bins=VEL_BINS, density=True)[0].tolist()  # noqa: E731
    return {"momentum_change_max": float(dP.max()), "energy_drift_per_traj": drift,
            "energy_drift_median": float(np.median(drift)), "energy_drift_max": float(np.max(drift)),
            "vel_hist": hist(tv[:, 1:]), "true_vel_hist": hist(true_v), "maxwell_boltzmann": mb.tolist()}


def score(model, trajs, steps, device) -> dict:
    """The metrics of ``evaluate_dynamics`` and the physics diagnostics, from one rollout."""
    metrics, rolled = evaluate_dynamics(model, trajs, steps, device=device, return_rollout=True)
    return {**metrics, **physics(model, trajs, steps, device, rolled=rolled)}


def egnn_seeds(ckpt_dir: Path, seeds: list[int], trajs, steps: int, device="cpu") -> list[dict]:
    """The EGNN reference over seeds: the per-seed one-step EGNNs of ``egnn_dynamics.py --checkpoint-dir``
    (``<ckpt_dir>/egnn_s<seed>.pt``, the runs of ``egnn_dynamics_seeds/box_s<seed>.json``), each scored like the
    learned energy (metrics and physics diagnostics of the same test rollouts)."""
    rows = []
    for seed in seeds:
        path = ckpt_dir / f"egnn_s{seed}.pt"
        if not path.exists():
            raise SystemExit(f"{path} is missing: run python benchmarks/egnn_dynamics.py --models ballistic,egnn "
                             f"--epochs 10 --time-limit 1e9 --seed {seed} --checkpoint-dir {ckpt_dir} (README)")
        model, _ = load_model(path)
        rows.append({"seed": seed, "checkpoint": path.name, **score(model.to(device), trajs, steps, device)})
    return rows


def _summary(values) -> dict:
    s = stats.summarize(values)
    return {"mean": s.mean, "se": s.se, "n": s.n}


def aggregate(rows: list[dict]) -> dict:
    """Mean ± s.e. over the seeds of every metric (dynamics and the energy test errors)."""
    return {k: _summary([r["dynamics"][k] for r in rows]) for k in METRICS} | {
        k: _summary([r["energy_test"][k] for r in rows]) for k in ("energy_mae", "force_mae")}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=4000, help="optimiser steps per seed")
    p.add_argument("--evals", type=int, default=40, help="validation points per run")
    p.add_argument("--substeps", type=int, default=100, help="velocity-Verlet steps per 0.2-frame")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None, help="default benchmarks/results/ (quick: a temp folder)")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.add_argument("--egnn-ckpt-dir", default=str(HERE.parent / DEFAULT_EGNN_CKPT_DIR),
                   help="the per-seed EGNN checkpoints egnn_s<seed>.pt of the EGNN reference")
    args = p.parse_args(argv)
    device = str(check_device(args.device))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    tr, va, te = (load_particles("energy", s) for s in ("train", "val", "test"))
    trajs = load_particles("trajectories", "test")
    steps, seeds = 39, [int(s) for s in args.seeds.split(",")]
    if args.quick:
        tr, va, te, trajs, steps, seeds = tr[:64], va[:20], te[:20], trajs[:3], 3, seeds[:1]
        args.steps, args.evals, args.substeps = 6, 2, 5
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp()) if args.quick else HERE / "results")
    runs = out / "energy_dynamics_runs"
    runs.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/energy_dynamics.py " + " ".join(argv if argv is not None else sys.argv[1:])
    dt_int = FRAME_DT / args.substeps
    res = {"command": cmd, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": machine_info(**device_info(device)),
           "protocol": {"steps_per_run": args.steps, "evals_per_run": args.evals, "batch_size": BATCH, "lr": 1e-3,
                        "loss": "MSE(E/N) + MSE(force components)", "n_train": len(tr), "n_val": len(va),
                        "seeds": seeds, "substeps": args.substeps, "dt_integrator": dt_int,
                        "dt_simulator": p2d.DT, "frame_dt": FRAME_DT,
                        "rollout_steps": steps, "n_test_trajectories": len(trajs),
                        "test": "trajectories of the same simulation (interpolation)", "quick": args.quick},
           "runs": []}
    for seed in seeds:
        path = runs / f"mpnn_s{seed}.json"
        if path.exists() and not args.quick:
            row = json.loads(path.read_text())
            if len(row["val_curve"]) != args.evals or row.get("steps", args.steps) != args.steps:
                raise SystemExit(f"{path} was trained with {row.get('steps', '?')} steps in "
                                 f"{len(row['val_curve'])} validation intervals, not --steps {args.steps} "
                                 f"--evals {args.evals}: use another --out, or delete it to train it again")
            res["runs"].append(row)
            continue
        t0 = time.process_time()
        model, hist = train_energy(seed, tr, va, args.steps, args.evals, device)
        cpu = time.process_time() - t0
        save_checkpoint(runs / f"mpnn_s{seed}.pt", model, config=model.config, metrics={"seed": seed})
        row = {"seed": seed, "steps": args.steps, "energy_test": energy_errors(model, te, device),
               "val_curve": hist.val,
               "best_eval": hist.best_epoch, "plateau": stats.plateau(hist.val) if len(hist.val) >= 5 else None,
               "train_cpu_seconds": cpu,
               "dynamics": score(EnergyVerlet(model.double(), dt_int, args.substeps, dtype=torch.float64), trajs,
                                 steps, device)}
        path.write_text(json.dumps(row) + "\n")
        res["runs"].append(row)
        d = row["dynamics"]
        print(f"seed {seed}: force MAE {row['energy_test']['force_mae']:.3f}, one-step pos MSE "
              f"{d['one_step_pos_mse']:.2e}, rollout {d['rollout_pos_mse_mean']:.3f}, speed W1 {d['speed_w1']:.3f}, "
              f"|dP| {d['momentum_change_max']:.1e}, energy drift {d['energy_drift_median']:.1e}", flush=True)
    ref_path = runs / "references.json"
    if ref_path.exists() and not args.quick:
        refs = json.loads(ref_path.read_text())
    else:
        egnn, _ = load_model(HERE / "results" / "dyn_egnn.pt")
        exact = EnergyVerlet(PairPotentialEnergy(), dt_int, args.substeps, dtype=torch.float64)
        refs = {"true_potential": score(exact, trajs, steps, device),
                "egnn_shipped": physics(egnn.to(device), trajs, steps, device)}
        ref_path.write_text(json.dumps(refs) + "\n")
    # the EGNN reference is scored again when it is missing or came from other checkpoints (a stored reference of
    # another --egnn-ckpt-dir would silently compare with other models); without the key: the default folder
    ckpt_dir = _repo_relative(args.egnn_ckpt_dir)
    if "egnn_seeds" not in refs or args.quick or refs.get("egnn_ckpt_dir", DEFAULT_EGNN_CKPT_DIR) != ckpt_dir:
        refs["egnn_seeds"] = egnn_seeds(HERE.parent / ckpt_dir, seeds, trajs, steps, device)
        refs["egnn_ckpt_dir"] = ckpt_dir
        if not args.quick:
            ref_path.write_text(json.dumps(refs) + "\n")
    res["references"] = refs
    res["summary"] = aggregate(res["runs"])
    res["summary_egnn"] = {k: _summary([r[k] for r in refs["egnn_seeds"]]) for k in METRICS}
    res["machine"]["load_average_end"] = list(os.getloadavg())
    (out / "energy_dynamics.json").write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
