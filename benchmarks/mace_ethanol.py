"""MACE (the ``mace-torch`` package) trained from scratch on the course's ethanol data, under the protocol of
``benchmarks/painn_ethanol.py``: an external reference beside the course's models (notebook 10).

Runs with the python of a SEPARATE venv (``mace-torch`` pins an old e3nn; it is not a course dependency and
the course never imports it; see ``benchmarks/mace_ethanol/requirements.txt``)::

    python3 -m venv /work/venv-mace
    /work/venv-mace/bin/pip install torch==2.13.0        # the local CPU wheel first: mace then pulls no CUDA
    /work/venv-mace/bin/pip install -r benchmarks/mace_ethanol/requirements.txt
    PYTHONPATH=. OMP_NUM_THREADS=1 /work/venv-mace/bin/python benchmarks/mace_ethanol.py  # -> results/mace_ethanol.json
    PYTHONPATH=. /work/venv-mace/bin/python benchmarks/mace_ethanol.py --quick --out /tmp/me   # pipeline check
    PYTHONPATH=. OMP_NUM_THREADS=1 /work/venv-mace/bin/python benchmarks/mace_ethanol.py --stability  # + 1000 K MD

Protocol (``painn_ethanol.py``'s, the differences MACE imposes are listed in ``MACE_DIFFERENCES``):
the training frames of seed s are ``course_lib.stats.random_subset(range(800), 100, s)`` of the train split of
``data/molecules/ethanol_splits.npz``; validation = the 100 val frames, test = the 100 test frames (same MD
trajectory: interpolation). Loss = per-atom energy MSE + force-component MSE with weights 1, 1 (MACE's
``weighted`` loss is exactly that), batch 5, Adam lr 0.01 halved on validation plateaus, gradient norm
clipped at 10, 2000 optimizer steps (100 epochs of 20 steps), validation every 100 steps (20 points, as the
course's curves), best-validation weights tested. Training uses MACE's own driver (``mace.cli.run_train``,
the code behind ``mace_run_train``) with the arguments of :func:`mace_args`; the only change to its
arguments that the command line cannot make is ``amsgrad=False`` (the CLI flag can only switch it on).

The test errors are recomputed frame by frame here with ``mace.calculators.MACECalculator`` (float64 inputs,
the float32 model). ``--stability``: the 1000 K stress test of ``md_ethanol.py stability`` (Langevin, 0.5 fs,
friction 0.01/fs, same start frame and failure criterion; default 5 ps) with the seed-0 MACE model, one molecule
per run (``--replicas`` runs, seeds 0, 1, ...): see :func:`stability_replica` for why. The committed block:
``--stability --stab-dtype float32 --stab-ps 1 --replicas 8`` (the budget did not allow 5 ps in float64).

Each finished seed is written to the JSON at once (an interrupted call resumes); one run at a time.
Imports at module level: standard library, numpy and course_lib.stats (numpy only), so the course's tests can
import this file without mace.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from nequip_official import errors, export_extxyz, load_split_arrays  # noqa: E402  (numpy at module level)

from course_lib.stats import plateau, random_subset  # noqa: E402  (numpy only)

RESULTS = ROOT / "benchmarks" / "results"
BATCH, LR, STEPS, N_TRAIN, EVAL_EVERY_STEPS = 5, 0.01, 2000, 100, 100
SCHED_PATIENCE_VALS = 6  # course_lib.train.fit: ReduceLROnPlateau(factor 0.5, patience 6 epochs of 100 steps)

#: The MACE model: 16 channels like the course's models at hidden 16; messages up to l = 1 (max_L), edge
#: spherical harmonics up to l = 3 (max_ell), correlation order 3 (4-body messages), 2 interactions (the
#: standard MACE), cutoff 4 Å and 8 Bessel functions like the course's NequIP, radial MLP 3 x 32.
MODEL = {"num_channels": 16, "max_L": 1, "max_ell": 3, "correlation": 3, "num_interactions": 2, "r_max": 4.0,
         "num_radial_basis": 8, "num_cutoff_basis": 5, "radial_MLP": "[32, 32, 32]", "MLP_irreps": "16x0e"}

MACE_DIFFERENCES = [
    "2 interaction layers (MACE's standard; each is a 4-body message of correlation order 3) against the course "
    "models' 3; the parameter count is recorded",
    "validation after every epoch (20 steps) instead of every 100 steps, because MACE keeps a checkpoint only when "
    "it validates: the best model is picked among 100 instead of 20 points (the plateau flag uses the points at "
    "multiples of 100 steps, like the course's curves); the scheduler's patience is 30 epochs = 600 steps, the "
    "span of the course's 6 validations of 100 steps",
    "energy reference: MACE's E0s='average' (least-squares per-element energies of the training frames) and "
    "rms_forces_scaling; the course models fit their own per-species shift and scale",
    "the training frames are exported to extxyz in float64; the model trains in float32 (as the course's)",
    "the validation loss that selects the checkpoint is MACE's (the same weighted loss on the 100 val frames)",
]


def mace_args(name: str, work: Path, seed: int, epochs: int, sched_patience: int, model: dict) -> list[str]:
    """Command-line arguments of ``mace_run_train`` for one seed (everything explicit): validation after every
    epoch, ``sched_patience`` epochs of scheduler patience."""
    a = {"name": name, "seed": seed, "work_dir": work / "run", "train_file": work / "train.xyz",
         "valid_file": work / "val.xyz", "test_file": work / "test.xyz", "energy_key": "energy",
         "forces_key": "forces", "E0s": "average", "model": "MACE", **model, "loss": "weighted",
         "energy_weight": 1.0, "forces_weight": 1.0, "optimizer": "adam", "lr": LR, "weight_decay": 0.0,
         "scheduler": "ReduceLROnPlateau", "lr_factor": 0.5, "scheduler_patience": sched_patience,
         "clip_grad": 10.0, "batch_size": BATCH, "valid_batch_size": 50, "max_num_epochs": epochs,
         "eval_interval": 1, "patience": 100000, "default_dtype": "float32", "device": "cpu",
         "error_table": "PerAtomMAE", "plot": False, "num_workers": 0, "pin_memory": False}
    return [f"--{k}={v}" for k, v in a.items()]


TRAIN_SNIPPET = ("import sys; from mace.cli.run_train import run; from mace.tools import build_default_arg_parser; "
                 "a = build_default_arg_parser().parse_args(sys.argv[1:]); a.amsgrad = False; run(a)")


def versions() -> dict:
    import ase
    import e3nn
    import mace
    import torch

    return {"mace-torch": getattr(mace, "__version__", "?"), "e3nn": e3nn.__version__, "torch": torch.__version__,
            "ase": ase.__version__, "numpy": np.__version__, "python": platform.python_version()}


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0),
            "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()), "device": "cpu"}


def train_indices(seed: int, n: int, n_pool: int = 800) -> list[int]:
    """Positions in the train split of seed ``seed``'s training frames (the course's random_subset)."""
    return [int(k) for k in random_subset(range(n_pool), n, seed)]


def read_val_curve(run_dir: Path, name: str, seed: int, n_val: int, valid_batch: int = 50) -> list[dict]:
    """MACE's evaluation log (``results/<name>_run-<seed>_train.txt``, one JSON a line) -> eval rows.

    MACE's logged validation loss is (sum over batches of the batch-mean loss) / frames; ``loss`` here is
    multiplied back by frames / batches, i.e. the mean loss over the frames, the scale of the course's curves
    (exact when the batches are of equal size, as 100 frames in batches of 50); ``loss_mace`` is the logged one.
    """
    scale = n_val / -(-n_val // valid_batch)
    rows = []
    for path in sorted((run_dir / "results").glob(f"{name}_run-{seed}_train.txt")):
        for line in path.read_text().splitlines():
            d = json.loads(line)
            if d.get("mode") == "eval" and d.get("epoch") is not None:  # epoch None: the untrained model
                rows.append({"epoch": int(d["epoch"]), "loss": scale * float(d["loss"]), "loss_mace": float(d["loss"]),
                             "mae_e_per_atom_meV": 1e3 * float(d.get("mae_e_per_atom", d.get("mae_e", float("nan")))),
                             "mae_f_meV_A": 1e3 * float(d.get("mae_f", float("nan")))})
    return rows


def predict(calc, split: dict) -> tuple[np.ndarray, np.ndarray]:
    from ase import Atoms

    energies, forces = [], []
    for pos in split["pos"]:
        atoms = Atoms(numbers=split["z"], positions=pos, pbc=False)
        atoms.calc = calc
        energies.append(float(atoms.get_potential_energy()))
        forces.append(np.asarray(atoms.get_forces(), dtype=np.float64))
    return np.asarray(energies), np.stack(forces)


def count_parameters(model_path: Path) -> int:
    import torch

    model = torch.load(model_path, map_location="cpu", weights_only=False)
    return int(sum(p.numel() for p in model.parameters()))


def train_one(seed: int, data: dict, work: Path, steps: int, n: int, eval_every: int, model: dict,
              threads: int) -> dict:
    """Train one seed with MACE's driver in a subprocess; evaluate the best-validation model on the test frames."""
    from mace.calculators import MACECalculator

    work.mkdir(parents=True, exist_ok=True)
    idx = train_indices(seed, n, len(data["train"]["energy"]))
    sub = {"train": {k: (v[idx] if k != "z" else v) for k, v in data["train"].items()},
           "val": data["val"], "test": data["test"]}
    files = export_extxyz(sub, work)
    steps_per_epoch = -(-n // BATCH)
    # validation after every epoch (MACE keeps no checkpoint between validations); the scheduler's patience
    # spans the steps of the course's (6 validations of 100 steps)
    epochs, sched_patience = steps // steps_per_epoch, max(1, SCHED_PATIENCE_VALS * eval_every // steps_per_epoch)
    name = f"mace_s{seed}"
    args = mace_args(name, work, seed, epochs, sched_patience, model)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    with open(work / "train.log", "w") as log:
        subprocess.run([sys.executable, "-c", TRAIN_SNIPPET, *args], cwd=work, env=env, check=True,
                       stdout=log, stderr=subprocess.STDOUT)
    r1, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - t0
    # MACE's epoch e ends after (e + 1) epochs
    trained = read_val_curve(work / "run", name, seed, len(data["val"]["energy"]))
    vals = [r["loss"] for r in trained]
    best = int(np.argmin(vals))
    val_steps = [(r["epoch"] + 1) * steps_per_epoch for r in trained]
    # the course's curves have one point per 100 steps: the same subsample of MACE's curve for the plateau flag
    coarse = [v for v, s in zip(vals, val_steps) if s % eval_every == 0]
    model_path = work / "run" / f"{name}.model"
    calc = MACECalculator(model_paths=str(model_path), device="cpu", default_dtype="float32")
    e, f = predict(calc, data["test"])
    err = errors(e, f, data["test"]["energy"], data["test"]["forces"], len(data["test"]["z"]))
    return {"model": "mace", "seed": seed, "n_train": n, "train_positions": idx,
            "train_frames_sha256": files["train"]["sha256"],
            "energy_mae_meV": err["energy_mae_meV"], "energy_mae_per_atom_meV": err["energy_per_atom_mae_meV"],
            "force_mae_meV_A": err["forces_mae_meV_per_A"], "force_rmse_meV_A": err["forces_rmse_meV_per_A"],
            "energy_rmse_meV": err["energy_rmse_meV"], "energy_mean_error_meV": err["energy_mean_error_meV"],
            "n": err["frames"], "epochs_run": epochs, "steps_run": epochs * steps_per_epoch,
            "steps_per_epoch": steps_per_epoch, "scheduler_patience_epochs": sched_patience,
            "best_eval": best, "best_step": val_steps[best],
            "parameters": count_parameters(model_path), "seconds": wall,
            "cpu_seconds": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
            "val_curve_every_eval": vals, "val_steps": val_steps, "val_curve": coarse,
            "val_curve_steps": [s for s in val_steps if s % eval_every == 0],
            "val_force_mae_meV_A": [r["mae_f_meV_A"] for r in trained],
            "val_energy_mae_per_atom_meV": [r["mae_e_per_atom_meV"] for r in trained],
            "plateau": plateau(coarse) if len(coarse) >= 5 else None}


def stability_replica(model_path: Path, seed: int, temperature: float, limit_ps: float, dtype: str) -> dict:
    """``md_ethanol.stability_run`` for the MACE model, one molecule (``k = 1``) of seed ``seed``: same start frame,
    thermalisation, Langevin (0.5 fs, friction 0.01/fs, RNG 1000 * seed) and failure test (a bond > 2 x the sum of
    covalent radii, or NaN). One molecule per run: MACE's calculator builds a matscipy neighbour list over the whole
    bounding box, which took ~13 s a step for md_ethanol's 8 replicas 50 A apart."""
    import md_ethanol as md
    from mace.calculators import MACECalculator

    t0, c0 = time.perf_counter(), time.process_time()
    row = md.stability_run(lambda: MACECalculator(model_paths=str(model_path), device="cpu", default_dtype=dtype),
                           1, temperature, limit_ps, seed)
    return {"seed": seed, "failure_time_fs": row["failure_time_fs"][0], "reason": row["reasons"].get("0"),
            "steps": row["replica_steps"], "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--n", type=int, default=N_TRAIN)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="pipeline check: 10 frames, 4 steps, tiny model, temp folder")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results; quick: a temp folder)")
    p.add_argument("--work", default=None, help="work folder for extxyz/checkpoints (default $TMPDIR/mace_ethanol)")
    p.add_argument("--stability", action="store_true", help="also the 1000 K stability test (seed-0 model)")
    p.add_argument("--stab-temperature", type=float, default=1000.0)
    p.add_argument("--stab-ps", type=float, default=5.0)
    p.add_argument("--replicas", type=int, default=8)
    p.add_argument("--stab-dtype", default="float64", help="dtype of the MACE calculator in the MD (float64 as the "
                   "course's ModelCalculator; float32 is ~25 %% faster)")
    args = p.parse_args(argv)
    data = load_split_arrays()
    model = dict(MODEL)
    eval_every = EVAL_EVERY_STEPS
    if args.quick:
        for s in ("val", "test"):
            data[s] = {k: (v[:10] if k != "z" else v) for k, v in data[s].items()}
        args.n, args.steps, args.seeds, eval_every = 10, 4, "0", 2
        model.update(num_channels=4, max_ell=1, correlation=2, radial_MLP="[8]")
        args.stab_ps, args.replicas = min(args.stab_ps, 0.01), 2
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp()) if args.quick else RESULTS)
    work = Path(args.work) if args.work else Path(tempfile.gettempdir()) / ("mace_ethanol_quick" if args.quick
                                                                           else "mace_ethanol")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "mace_ethanol.json"
    cmd = "PYTHONPATH=. OMP_NUM_THREADS=1 <mace venv>/bin/python benchmarks/mace_ethanol.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    res = {"command": cmd, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
           "versions": versions(), "external_reference": True, "package": "mace-torch",
           "citation": "I. Batatia, D. P. Kovacs, G. N. C. Simm, C. Ortner, G. Csanyi, MACE: Higher order equivariant "
                       "message passing neural networks for fast and accurate force fields, NeurIPS 2022",
           "molecule": "ethanol", "n_train": args.n, "steps_per_run": args.steps, "batch_size": BATCH, "lr": LR,
           "seeds": [int(s) for s in args.seeds.split(",")], "mace_model": model,
           "mace_train_args": mace_args("mace_s<seed>", Path("<work>"), 0, args.steps // -(-args.n // BATCH),
                                        SCHED_PATIENCE_VALS * eval_every // -(-args.n // BATCH), model),
           "amsgrad": False, "differences_from_course_protocol": MACE_DIFFERENCES,
           "loss": "per-atom energy MSE + force-component MSE (weights 1, 1)",
           "test": "100 frames of the same trajectory as the training frames (interpolation)",
           "protocol_of": "benchmarks/painn_ethanol.py", "runs": []}
    if path.exists() and not args.quick:
        old = json.loads(path.read_text())
        if all(old.get(k) == res[k] for k in ("n_train", "steps_per_run", "mace_model")):
            res["runs"], res["date"] = old["runs"], old.get("date", res["date"])  # the date of the training runs
            if "stability" in old:
                res["stability"] = old["stability"]
    done = {r["seed"] for r in res["runs"]}
    for seed in res["seeds"]:
        if seed in done:
            continue
        row = train_one(seed, data, work / f"seed{seed}", args.steps, args.n, eval_every, model, args.threads)
        res["runs"].append(row)
        print(f"mace seed {seed}: force MAE {row['force_mae_meV_A']:.1f} meV/A, energy MAE "
              f"{row['energy_mae_meV']:.1f} meV, {row['parameters']} parameters, {row['cpu_seconds']:.0f} s CPU",
              flush=True)
        res["machine"]["load_average_end"] = list(os.getloadavg())
        path.write_text(json.dumps(res, indent=1) + "\n")
    if args.stability:
        stability_block(res, args, work, path)
    return res


def stability_block(res: dict, args, work: Path, path: Path) -> None:
    """The 1000 K test with the seed-0 model: ``--replicas`` single-molecule runs (seeds 0, 1, ...), each written
    when finished (resumable)."""
    model_seed = res["seeds"][0]
    block = {"temperature_K": args.stab_temperature, "limit_ps": args.stab_ps, "model_seed": model_seed,
             "model_dtype": args.stab_dtype, "max_bond_factor": 2.0, "replicas_per_run": 1, "rows": [],
             "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "protocol": "md_ethanol.stability_run(k=1) per replica seed; md_ethanol.py ran 8 replicas in one "
                         "Atoms with seed 0"}
    old = res.get("stability", {})
    if all(old.get(k) == block[k] for k in ("temperature_K", "limit_ps", "model_seed", "model_dtype")):
        block["rows"], block["date"] = old["rows"], old.get("date", block["date"])
    res["stability"] = block
    for rep in range(args.replicas):
        if rep in {r["seed"] for r in block["rows"]}:
            continue
        row = stability_replica(work / f"seed{model_seed}" / "run" / f"mace_s{model_seed}.model", rep,
                                args.stab_temperature, args.stab_ps, args.stab_dtype)
        block["rows"].append(row)
        print(f"stability mace at {args.stab_temperature:.0f} K, replica {rep}: failure time (fs) "
              f"{row['failure_time_fs']} (limit {args.stab_ps} ps)", flush=True)
        block["stable_replicas"] = sum(r["failure_time_fs"] is None for r in block["rows"])
        res["machine"]["load_average_end"] = list(os.getloadavg())
        path.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
