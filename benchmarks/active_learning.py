"""Committee disagreement in 1000 K MD: flagging failures before they happen, and active learning (notebook 10).

    OMP_NUM_THREADS=1 python benchmarks/active_learning.py flag   # ~6 CPU min
    OMP_NUM_THREADS=1 python benchmarks/active_learning.py al     # ~3 CPU min per seed, resumable per seed
    python benchmarks/active_learning.py flag --quick --out /tmp/a     # pipeline checks (CI)
    python benchmarks/active_learning.py al --quick --out /tmp/a
    python benchmarks/active_learning.py al --device cuda             # the models on the GPU (xTB stays on the CPU)

MD protocol (that of ``md_ethanol.py stability``, notebook 08): start from the first test frame of the xTB ethanol
data, ``--replicas`` independent copies 50 Å apart in one system (one model call evaluates them all), Maxwell-Boltzmann
velocities (seed ``1000 s + r`` for replica r of velocity seed s; zero momentum and angular momentum), Langevin, 0.5 fs,
friction 0.01/fs. A replica *fails* at the first step with a bond of the intact molecule beyond 2 x the sum of the
covalent radii, or NaN/inf (:class:`course_lib.md.MDGuard`); failed replicas are removed and the others go on. The
dynamics are driven by the **committee mean** (:class:`course_lib.uncertainty.CommitteeCalculator`: mean energy and
forces of the members), and at every step the disagreement of the members' forces is recorded, per replica the
largest over its 9 atoms, σ = max_a σ_a (eV/Å; :func:`course_lib.uncertainty.per_replica_max`).

``flag``: the shipped committee of ``committee.py`` (``committee_s{0,1,2}.pt``: 3 SchNet members, 200 frames, 60
epochs). Threshold σ* = the 99th percentile of σ over the 100 test frames at 500 K (and multiples 1.5, 2, 3, 4 x σ*).
Runs: ``--flag-runs`` (default 500 K for 2.5 ps and 1000 K for 5 ps), each with ``--velocity-seeds`` x ``--replicas``
replicas. Reported per replica: the failure time, the first time σ crossed each threshold, the lead time (failure
time - first crossing, :func:`course_lib.uncertainty.warning_lead_time`) and σ every 5 fs (the largest in each 5 fs
window). A *false alarm* is a crossing in a replica that did not fail. Writes ``active_learning_flag.json``.

``al``: for each ``--seeds`` seed s, a random subset of ``--n-initial`` frames of the 500 K training split (drawn
with seed s) trains a committee of ``--members`` SchNet models (``committee.py``'s size: 32 features, 3 layers;
member k's weights and batch order from seed ``1000 s + 10 r + k`` in round r, the same for both arms), for a fixed
budget of ``--steps`` gradient steps of batch 10 (per-atom energy + force loss, Adam 1e-3, model selection on the
validation loss over the first 50 validation frames at 500 K). Round r: run ``--replicas`` replicas of 1000 K
Langevin MD with the round's committee for at most ``--limit-ps`` (velocity seed ``100 s + r``, the same for both
arms) and record a frame every 5 fs with its σ. Then each arm picks ``--n-add`` frames of *its own* round's
trajectories, at least ``--min-sep-fs`` apart within a replica (:func:`course_lib.uncertainty.select_decorrelated`):
**al** takes the highest σ (the number above the round's threshold, the 99th percentile of σ on the validation
frames, is recorded), **random** takes frames uniformly at random; only the selection differs. When the round's MD
leaves fewer than ``--n-add`` such frames (a committee that fails within tens of fs), further MD runs of the same
committee (velocity seeds ``100 s + 10 j + r``) top up the pool until it does (``md_runs``), in both arms (checked
in time order: the greedy pick in the arm's own order can find a few fewer; seed 1, round 1 of the shipped run picked
23 and 22). The frames are labelled with GFN2-xTB (single points), added, and the committee is retrained from
scratch with the same budget.
After every round: the committee-mean force MAE (per component) on the 100 test frames at 500 K (interpolation: the
training trajectory) and on ``--n-test-1000`` frames of an independent xTB Langevin run at 1000 K (generalisation:
another temperature, seed 7, 0.5 ps of equilibration, a frame every 20 fs; cached in
``active_learning_xtb1000K.npz``), and the stability: failure times of the round's MD (capped at ``--limit-ps``).
Each finished seed is written into ``active_learning.json`` and skipped when rerun (resumable).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.data import covalent_radii
from ase.md.langevin import Langevin
from torch_geometric.loader import DataLoader

from course_lib import observables as O
from course_lib import stats
from course_lib import uncertainty as U
from course_lib.datasets import load_molecules
from course_lib.losses import per_atom_energy_force_loss
from course_lib.md import run_until_unstable, thermalize
from course_lib.models.schnet import SchNet
from course_lib.train import fit, load_model
from course_lib.utils import DEVICE_HELP, check_device, device_info, machine_info, seed_everything

RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = {"hidden": 32, "filters": 32, "num_layers": 3, "num_basis": 25, "cutoff": 5.0, "max_z": 10}
DT_FS, FRICTION, SPACING, N_ATOMS = 0.5, 0.01, 50.0, 9
FRAME_EVERY = 10  # steps: a frame (and a point of the σ trace) every 5 fs
MULTIPLES = (1.0, 1.5, 2.0, 3.0, 4.0)
XTB_1000K = {"seed": 7, "temperature_K": 1000.0, "equilibration_steps": 1000, "sample_every": 40}


def start_atoms() -> Atoms:
    g = load_molecules("ethanol", "test", dtype=torch.float64)[0]
    return Atoms(numbers=g.z.numpy(), positions=g.pos.numpy())


def replicas(atoms: Atoms, k: int, seed: int, temperature: float) -> Atoms:
    parts = []
    for r in range(k):
        a = atoms.copy()
        a.positions += [SPACING * r, 0.0, 0.0]
        thermalize(a, temperature, seed=1000 * seed + r)
        parts.append(a)
    out = parts[0].copy()
    for a in parts[1:]:
        out += a
    return out


def failed_replicas(positions: np.ndarray, z, bonds, factor: float = 2.0) -> list[int]:
    i, j = np.array(bonds).T
    ref = covalent_radii[z[i]] + covalent_radii[z[j]]
    bad = []
    for m, x in enumerate(positions.reshape(-1, N_ATOMS, 3)):
        if not np.all(np.isfinite(x)) or (np.linalg.norm(x[j] - x[i], axis=-1) / ref).max() > factor:
            bad.append(m)
    return bad


class Recorder:
    """Observer: σ per alive replica at every step, positions every FRAME_EVERY steps."""

    def __init__(self, k: int):
        self.steps = [[] for _ in range(k)]  # (time_fs, sigma_max, sigma_mean) per replica
        self.frames = []  # (replica, time_fs, sigma_max, positions [9, 3])
        self.alive, self.t0, self.dyn = list(range(k)), 0.0, None

    def __call__(self):
        atoms = self.dyn.atoms
        sig = atoms.calc.results["force_sigma"]
        t = self.t0 + self.dyn.get_time() / units.fs
        smax, smean = U.per_replica_max(sig, N_ATOMS), sig.reshape(-1, N_ATOMS).mean(axis=1)
        for m, r in enumerate(self.alive):
            self.steps[r].append((t, smax[m], smean[m]))
        if self.dyn.nsteps % FRAME_EVERY == 0:
            pos = atoms.positions.reshape(-1, N_ATOMS, 3)
            for m, r in enumerate(self.alive):
                self.frames.append((r, t, float(smax[m]), pos[m] - [SPACING * r, 0.0, 0.0]))


def committee_md(models, temperature: float, limit_ps: float, k: int, seed: int, device="cpu") -> dict:
    """Langevin MD of k replicas driven by the committee mean until each fails or limit_ps."""
    base = start_atoms()
    bonds1 = O.find_bonds(base.numbers, base.positions)
    atoms = replicas(base, k, seed, temperature)
    rec = Recorder(k)
    fail_time, reasons, restart, limit_fs = {r: None for r in range(k)}, {}, 0, 1000.0 * limit_ps
    while rec.alive and rec.t0 < limit_fs - 1e-9:
        atoms.calc = U.CommitteeCalculator(models, device=device)
        dyn = Langevin(atoms, DT_FS * units.fs, temperature_K=temperature, friction=FRICTION / units.fs, fixcm=False,
                       rng=np.random.RandomState(1000 * seed + restart))
        rec.dyn = dyn
        dyn.attach(rec, interval=1)
        bonds = [(a + m * N_ATOMS, b + m * N_ATOMS) for m in range(len(rec.alive)) for a, b in bonds1]
        res = run_until_unstable(dyn, int(round((limit_fs - rec.t0) / DT_FS)), stride=1000, bonds=bonds)
        rec.t0 += res.time
        if res.stable:
            break
        bad = failed_replicas(atoms.positions, base.numbers, bonds1) or list(range(len(rec.alive)))
        for m in bad:
            fail_time[rec.alive[m]], reasons[rec.alive[m]] = rec.t0, res.reason
        keep = [m for m in range(len(rec.alive)) if m not in bad]
        if keep:
            idx = [m * N_ATOMS + a for m in keep for a in range(N_ATOMS)]
            sub = atoms[idx]
            sub.set_momenta(atoms.get_momenta()[idx])
            atoms = sub
        rec.alive = [rec.alive[m] for m in keep]
        restart += 1
    return {"failure_time_fs": [fail_time[r] for r in range(k)], "reasons": {str(r): v for r, v in reasons.items()},
            "steps": [np.array(s).reshape(-1, 3) for s in rec.steps], "frames": rec.frames, "limit_fs": limit_fs}


def window_max(trace: np.ndarray, every: int = FRAME_EVERY) -> dict:
    """σ trace [T, 3] (time, max, mean) -> every 5 fs: the time and the largest σ in the window."""
    n = len(trace) // every * every
    if n == 0:
        return {"time_fs": [], "sigma_eV_A": []}
    w = trace[:n].reshape(-1, every, 3)
    return {"time_fs": w[:, -1, 0].round(3).tolist(), "sigma_eV_A": w[:, :, 1].max(axis=1).round(5).tolist()}


def frame_sigma(models, frames) -> np.ndarray:
    _, forces, frame = U.committee_forces(models, frames)
    sig = U.force_disagreement(forces)
    return np.array([sig[frame == f].max() for f in range(len(frames))])


# ------------------------------------------------------------------------------------------------- flag


def part_flag(args, out: Path) -> dict:
    models = [load_model(Path(p))[0].eval().to(args.device) for p in args.committee]
    test = load_molecules("ethanol", "test")[: 10 if args.quick else 100]
    sig_test = frame_sigma(models, test)
    threshold = float(np.quantile(sig_test, 0.99))
    print(f"threshold: 99th percentile of sigma on {len(test)} test frames at 500 K = {1000 * threshold:.1f} meV/A",
          flush=True)
    runs = []
    for temperature, limit_ps in args.flag_runs:
        for vseed in range(args.velocity_seeds):
            t0, c0 = time.perf_counter(), time.process_time()
            md = committee_md(models, temperature, limit_ps, args.replicas, vseed, args.device)
            for r, trace in enumerate(md["steps"]):
                ft = md["failure_time_fs"][r]
                row = {"temperature_K": temperature, "limit_ps": limit_ps, "velocity_seed": vseed, "replica": r,
                       "failure_time_fs": ft, "reason": md["reasons"].get(str(r)),
                       "first_crossing_fs": {str(m): U.first_crossing(trace[:, 0], trace[:, 1], m * threshold)
                                             for m in MULTIPLES},
                       "lead_time_fs": {str(m): U.warning_lead_time(trace[:, 0], trace[:, 1], m * threshold, ft)
                                        for m in MULTIPLES},
                       "sigma_median_eV_A": float(np.median(trace[:, 1])) if len(trace) else None,
                       "trace": window_max(trace)}
                runs.append(row)
            print(f"{temperature:.0f} K, velocity seed {vseed}: failures (fs) {md['failure_time_fs']} "
                  f"({time.process_time() - c0:.0f} s CPU, {time.perf_counter() - t0:.0f} s wall)", flush=True)
    return {"threshold_eV_A": threshold, "threshold_rule": "99th percentile of sigma (max over atoms) on the 500 K "
            "test frames", "multiples": list(MULTIPLES), "test_sigma_eV_A": sig_test.tolist(),
            "committee": [str(Path(p).name) for p in args.committee],
            "protocol": {"flag_runs": args.flag_runs, "replicas": args.replicas, "velocity_seeds": args.velocity_seeds,
                         "dt_fs": DT_FS, "friction_per_fs": FRICTION, "driving": "committee mean",
                         "sigma": "max over the replica's atoms of the per-atom force disagreement",
                         "trace": "largest sigma in each 5 fs window"},
            "runs": runs}


# --------------------------------------------------------------------------------------------------- al


def xtb_1000k(path: Path, n_frames: int) -> list:
    """The 1000 K xTB test set: generated once (seconds) and cached."""
    from course_lib.simulate.molecules import run_md, to_graphs

    if path.exists():
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    else:
        arrays = run_md(start_atoms(), n_frames=n_frames, **XTB_1000K)
        np.savez_compressed(path, **arrays)
    return to_graphs(arrays, dtype=torch.float32)[:n_frames]


def train_committee(data, val, members: int, seed: int, steps: int, device) -> tuple[list, dict]:
    models, curves = [], []
    batches = -(-len(data) // 10)
    epochs = max(1, round(steps / batches))
    for k in range(members):
        seed_everything(seed + k)
        model = SchNet(**CONFIG)
        model.fit_energy_scale(data)
        hist = fit(model, DataLoader(data, batch_size=10, shuffle=True), DataLoader(val, batch_size=50),
                   per_atom_energy_force_loss, epochs=epochs, lr=1e-3, patience=None, progress=False,
                   needs_grad_eval=True, device=device)
        models.append(model.eval())
        curves.append({"best_epoch": hist.best_epoch, "final_val": float(hist.val[-1]),
                       "plateau": stats.plateau(hist.val) if len(hist.val) >= 5 else None})
    return models, {"epochs": epochs, "steps": epochs * batches, "members": curves}


def committee_mae(models, frames) -> float:
    _, forces, _ = U.committee_forces(models, frames)
    ref = torch.cat([g.forces for g in frames]).double().numpy()
    return 1000 * float(np.abs(forces.mean(0) - ref).mean())


def label(frames, z) -> tuple[list, int]:
    """GFN2-xTB single points of the selected frames -> graphs (frames xTB or validation refuses are dropped)."""
    from course_lib.simulate.molecules import to_graphs, xtb_calculator

    pos, energy, forces, dropped = [], [], [], 0
    for x in frames:
        atoms = Atoms(numbers=z, positions=x)
        atoms.calc = xtb_calculator()
        try:
            e, f = atoms.get_potential_energy(), atoms.get_forces()
        except Exception:  # an SCF that does not converge on a torn molecule
            dropped += 1
            continue
        pos.append(x)
        energy.append(e)
        forces.append(f)
    if not pos:
        return [], dropped
    return to_graphs({"z": z, "pos": np.array(pos), "energy": np.array(energy), "forces": np.array(forces)},
                     dtype=torch.float32), dropped


def candidate_pool(models, md: dict, args, seed: int, rnd: int) -> tuple[list, int]:
    """The frames of the round's MD, topped up with further MD runs (new velocity seeds) of the same committee until
    at least ``n_add`` frames ``min_sep_fs`` apart can be selected: a committee that fails within tens of fs leaves
    too few, and both arms must add the same number of labels."""
    frames, runs = list(md["frames"]), 1

    def enough() -> bool:
        times, traj = np.array([f[1] for f in frames]), np.array([f[0] for f in frames])
        return len(U.select_decorrelated(times, traj, np.zeros(len(frames)), args.n_add, args.min_sep_fs)) >= args.n_add

    while not enough() and runs < 10:
        extra = committee_md(models, 1000.0, args.limit_ps, args.replicas, 100 * seed + 10 * runs + rnd, args.device)
        frames += [(1000 * runs + r, t, s, x) for r, t, s, x in extra["frames"]]
        runs += 1
    return frames, runs


def select(frames: list, arm: str, n: int, min_sep: float, threshold: float, rng) -> tuple[list, dict]:
    times = np.array([f[1] for f in frames])
    traj = np.array([f[0] for f in frames])
    sig = np.array([f[2] for f in frames])
    scores = sig if arm == "al" else rng.random(len(frames))
    idx = U.select_decorrelated(times, traj, scores, n, min_sep)
    info = {"pool_frames": len(frames), "pool_above_threshold": int((sig > threshold).sum()),
            "selected": len(idx), "selected_above_threshold": int((sig[idx] > threshold).sum()),
            "selected_sigma_median_eV_A": float(np.median(sig[idx])) if len(idx) else None,
            "selected_time_median_fs": float(np.median(times[idx])) if len(idx) else None}
    return [frames[i][3] for i in idx], info


def evaluate_round(models, val, test500, test1000, args, seed: int, rnd: int) -> tuple[dict, dict]:
    md = committee_md(models, 1000.0, args.limit_ps, args.replicas, 100 * seed + rnd, args.device)
    ft = [args.limit_ps * 1000.0 if t is None else t for t in md["failure_time_fs"]]
    row = {"force_mae_500K_meV_A": committee_mae(models, test500),
           "force_mae_1000K_meV_A": committee_mae(models, test1000),
           "threshold_eV_A": float(np.quantile(frame_sigma(models, val), 0.99)),
           "failure_time_fs": md["failure_time_fs"], "mean_time_to_failure_fs": float(np.mean(ft)),
           "stable_replicas": sum(t is None for t in md["failure_time_fs"])}
    return row, md


def run_seed(seed: int, args, pool, val, test500, test1000) -> dict:
    z = start_atoms().numbers
    data0 = [pool[i] for i in stats.random_subset(range(len(pool)), args.n_initial, seed=seed)]
    c0, train0 = train_committee(data0, val, args.members, 1000 * seed, args.steps, args.device)
    row0, md0 = evaluate_round(c0, val, test500, test1000, args, seed, 0)
    out = {"seed": seed, "arms": {}}
    for arm in ("al", "random"):
        rng = np.random.default_rng(10_000 + seed)
        data, md, prev, models = list(data0), md0, row0, c0
        rows = [{"round": 0, "labels": len(data), **row0, "training": train0}]
        for rnd in range(1, args.rounds + 1):
            pool_frames, md_runs = candidate_pool(models, md, args, seed, rnd - 1)
            picked, info = select(pool_frames, arm, args.n_add, args.min_sep_fs, prev["threshold_eV_A"], rng)
            info["md_runs"] = md_runs
            new, dropped = label(picked, z)
            data += new
            models, training = train_committee(data, val, args.members, 1000 * seed + 10 * rnd, args.steps,
                                               args.device)
            prev, md = evaluate_round(models, val, test500, test1000, args, seed, rnd)
            rows.append({"round": rnd, "labels": len(data), **prev, "selection": {**info, "xtb_dropped": dropped},
                         "training": training})
            print(f"seed {seed} {arm:6s} round {rnd}: {len(data)} labels, force MAE 500 K "
                  f"{prev['force_mae_500K_meV_A']:.1f}, 1000 K {prev['force_mae_1000K_meV_A']:.1f} meV/A, "
                  f"mean time to failure {prev['mean_time_to_failure_fs']:.0f} fs, selected {info}", flush=True)
        out["arms"][arm] = rows
    return out


def part_al(args, out: Path) -> dict:
    path = out / "active_learning.json"
    done = json.loads(path.read_text()) if path.exists() and not args.quick else {"seeds": []}
    pool = load_molecules("ethanol", "train")
    val = load_molecules("ethanol", "val")[: 10 if args.quick else 50]
    test500 = load_molecules("ethanol", "test")[: 10 if args.quick else 100]
    test1000 = xtb_1000k(out / "active_learning_xtb1000K.npz", args.n_test_1000)
    rows = [r for r in done["seeds"] if r["seed"] in args.seeds]
    for seed in args.seeds:
        if any(r["seed"] == seed for r in rows):
            print(f"seed {seed}: done, skipped", flush=True)
            continue
        c0 = time.process_time()
        row = run_seed(seed, args, pool, val, test500, test1000)
        row["cpu_s"] = time.process_time() - c0
        rows.append(row)
        res = header(args) | {"protocol": al_protocol(args, len(test1000)), "seeds": rows}
        path.write_text(json.dumps(res, indent=1) + "\n")
    return header(args) | {"protocol": al_protocol(args, len(test1000)), "seeds": rows}


def al_protocol(args, n1000: int) -> dict:
    return {"config": CONFIG, "members": args.members, "n_initial": args.n_initial, "n_add": args.n_add,
            "rounds": args.rounds, "steps": args.steps, "batch_size": 10, "lr": 1e-3, "replicas": args.replicas,
            "limit_ps": args.limit_ps, "min_sep_fs": args.min_sep_fs, "frame_every_fs": FRAME_EVERY * DT_FS,
            "md_temperature_K": 1000.0, "test_500K_frames": 100 if not args.quick else 10,
            "test_1000K": {**XTB_1000K, "frames": n1000}, "validation_frames": 10 if args.quick else 50,
            "threshold_rule": "99th percentile of sigma (max over atoms) on the validation frames",
            "random_pool": "frames of the same arm's committee MD of the round (5 fs apart), chosen uniformly at "
                           "random with the same decorrelation rule"}


def header(args) -> dict:
    return {"command": args.command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(**device_info(args.device))}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("flag", "al"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None, help="default benchmarks/results/ (quick: a temp folder)")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.add_argument("--committee", nargs="+", default=[str(RESULTS / f"committee_s{k}.pt") for k in range(3)])
    p.add_argument("--flag-runs", dest="flag_runs", default=None, help="T:PS,... (default 500:2.5,1000:5)")
    p.add_argument("--velocity-seeds", dest="velocity_seeds", type=int, default=None, help="default 2, quick 1")
    p.add_argument("--replicas", type=int, default=None, help="default 8, quick 2")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2, quick 0")
    p.add_argument("--members", type=int, default=None, help="default 3, quick 2")
    p.add_argument("--n-initial", dest="n_initial", type=int, default=None, help="default 50, quick 10")
    p.add_argument("--n-add", dest="n_add", type=int, default=None, help="default 25, quick 2")
    p.add_argument("--rounds", type=int, default=None, help="default 2, quick 1")
    p.add_argument("--steps", type=int, default=None, help="default 500, quick 4")
    p.add_argument("--limit-ps", dest="limit_ps", type=float, default=None, help="default 0.5, quick 0.01")
    p.add_argument("--min-sep-fs", dest="min_sep_fs", type=float, default=50.0)
    p.add_argument("--n-test-1000", dest="n_test_1000", type=int, default=None, help="default 100, quick 5")
    args = p.parse_args(argv)
    args.device = str(check_device(args.device))
    args.command = " ".join(["python", "benchmarks/active_learning.py", *(argv if argv is not None else sys.argv[1:])])
    torch.set_num_threads(1)
    q = args.quick
    runs = args.flag_runs or ("500:0.01,1000:0.01" if q else "500:2.5,1000:5")
    args.flag_runs = [[float(t), float(ps)] for t, ps in (r.split(":") for r in runs.split(","))]
    for name, full, quick in (("velocity_seeds", 2, 1), ("replicas", 8, 2), ("seeds", [0, 1, 2], [0]),
                              ("members", 3, 2), ("n_initial", 50, 10), ("n_add", 25, 2), ("rounds", 2, 1),
                              ("steps", 500, 4), ("limit_ps", 0.5, 0.01), ("n_test_1000", 100, 5)):
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)
    out = Path(args.out or (tempfile.mkdtemp(prefix="active_learning_") if q else RESULTS))
    out.mkdir(parents=True, exist_ok=True)
    if args.part == "flag":
        res = header(args) | part_flag(args, out)
        (out / "active_learning_flag.json").write_text(json.dumps(res, indent=1) + "\n")
        return res
    return part_al(args, out)


if __name__ == "__main__":
    main()
