"""SchNet on the course's GFN2-xTB molecular data (notebook 05).

    python benchmarks/schnet_molecules.py final --molecules ethanol,malonaldehyde,aspirin
    python benchmarks/schnet_molecules.py curve --modes forces --seeds 0   # force MAE vs training frames; split
    python benchmarks/schnet_molecules.py curve --modes energy --seeds 1   # over processes by mode and seed
    python benchmarks/schnet_molecules.py g2             # multi-molecule model for the species embeddings
    python benchmarks/schnet_molecules.py final --quick --out /tmp/s   # pipeline check (CI)
    python benchmarks/schnet_molecules.py final --device cuda          # train on the GPU

Each part writes its own results file into ``--out`` (default ``benchmarks/results/``), so parts can
run in parallel processes:

- ``final``: ``schnet_final.json`` and ``schnet_<molecule>.pt``: SchNet (the default hyper-parameters
  of ``course_lib.models.schnet.SchNet``) trained on the 800-frame train split of each molecule with the
  energy+force loss (rho = 0.01), test energy MAE (meV) and force MAE (meV/Å).
- ``curve``: ``schnet_curve.json`` (merged from one file per run in ``schnet_curve/``): test force MAE vs number of
  training frames on ethanol, trained on energies only vs energies + forces, the same number of optimizer
  steps per run, ``--seeds`` seeds each drawing its own random nested subsets of the time-block training
  pool, tested on the later time block (generalisation; see ``load_molecules(scheme="time")``).
- ``g2``: ``schnet_g2.json`` and ``schnet_g2.pt``: one SchNet trained on the conformers of the
  ``ase.collections.g2`` molecules (many elements), whose species embeddings notebook 05 projects on
  two principal components.

Every file records the command, the thread count, the device and the load average (timings on a shared 2-core
machine swing with load). ``--device``: ``cpu`` (the default; the committed results are CPU results) or ``cuda``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from torch_geometric.loader import DataLoader

from course_lib.datasets import MOLECULES, load_molecules
from course_lib.losses import energy_force_loss, molecule_errors
from course_lib.models.schnet import SchNet
from course_lib.stats import plateau, random_subset
from course_lib.train import fit, save_checkpoint
from course_lib.utils import DEVICE_HELP, check_device, device_info, machine_info, seed_everything

HERE = Path(__file__).resolve().parent
RHO = 0.01  # the SchNet paper's trade-off between energies (eV^2) and forces ((eV/Å)^2)
BATCH = 10
EMBEDDING_STD = 0.1  # start of the species embeddings of the g2 model (see part_g2)


def train_schnet(train, val, test, steps: int, seed: int, forces: bool = True, rho: float = RHO,
                 lr: float = 1e-3, progress: bool = True, desc: str = "schnet", max_z: int = 100,
                 epoch_steps: int = 1, select_on_val: bool = True, embedding_std: float | None = None,
                 device="cpu"):
    """Train a default SchNet for about ``steps`` optimizer steps; return (model, history, test errors).

    ``embedding_std``: re-initialise the species embeddings with this standard deviation (PyG's and
    our default is 1).
    """
    seed_everything(seed)
    model = SchNet(max_z=max_z)
    if embedding_std is not None:
        torch.nn.init.normal_(model.embedding.weight, std=embedding_std)
    model.fit_energy_scale(train)
    # small training sets are repeated so that an "epoch" has >= epoch_steps steps: validation (with forces,
    # costly) then runs every ~epoch_steps steps whatever the size, not after every 3 steps for n = 25
    reps = max(1, -(-epoch_steps * BATCH // len(train)))
    tl = DataLoader(list(train) * reps, batch_size=BATCH, shuffle=True,
                    generator=torch.Generator().manual_seed(seed))
    vl = DataLoader(val, batch_size=50)
    epochs = max(2, round(steps / len(tl)))

    def loss(m, b):
        return energy_force_loss(m, b, rho=rho if forces else 1.0, forces=forces)

    # model selection (best weights, learning-rate plateaus) on the validation value of the training loss
    if select_on_val:
        hist = fit(model, tl, vl, loss, epochs=epochs, lr=lr, patience=max(15, epochs // 5), progress=progress,
                   needs_grad_eval=forces, desc=desc, device=device)
    else:  # the whole budget, learning-rate plateaus and best weights judged on the training loss
        hist = fit(model, tl, None, loss, epochs=epochs, lr=lr, patience=None, progress=progress, desc=desc,
                   device=device)
    errors = molecule_errors(model, DataLoader(test, batch_size=50), device=device)
    return model, hist, errors


def _split(name: str, quick: bool):
    tr, va, te = (load_molecules(name, s) for s in ("train", "val", "test"))
    if quick:
        tr, va, te = tr[:40], va[:20], te[:20]
    return tr, va, te


def part_final(args, out: Path) -> dict:
    res = {"command": _command(args), "machine": machine_info(**device_info(args.device)), "rho": RHO,
           "batch_size": BATCH, "steps": args.steps, "model": SchNet().config, "molecules": {}}
    for name in args.molecules.split(","):
        tr, va, te = _split(name, args.quick)
        model, hist, err = train_schnet(tr, va, te, args.steps, args.seed, progress=not args.no_progress,
                                        desc=f"SchNet {name}", device=args.device)
        row = {**err, "n_train": len(tr), "epochs_run": len(hist.train), "best_epoch": hist.best_epoch,
               "seconds": hist.seconds}
        res["molecules"][name] = row
        save_checkpoint(out / f"schnet_{name}.pt", model, config=model.config,
                        metrics={k: v for k, v in row.items() if isinstance(v, (int, float))})
        print(f"{name:14s} energy MAE {err['energy_mae_meV']:.1f} meV  force MAE {err['force_mae_meV_A']:.1f} meV/A"
              f"  ({len(hist.train)} epochs, {hist.seconds:.0f} s)", flush=True)
    res["machine"]["load_average_end"] = os.getloadavg()
    (out / "schnet_final.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


def _curve_row(mode: str, n: int, seed: int, err: dict, hist) -> dict:
    return {**err, "mode": mode, "n_train": n, "seed": seed, "epochs_run": len(hist.train),
            "best_epoch": hist.best_epoch, "stopped_early": hist.stopped_early, "val_curve": hist.val,
            "plateau": plateau(hist.val) if len(hist.val) >= 5 else None, "seconds": hist.seconds}


def merge_curve(out: Path) -> dict:
    """Merge the per-run files ``schnet_curve/<mode>_n<size>_s<seed>.json`` into ``schnet_curve.json``
    (runs grouped by mode, sorted by seed and size); the settings are those of the first run file."""
    rows = [json.loads(f.read_text()) for f in sorted((out / "schnet_curve").glob("*.json"))]
    if not rows:
        raise FileNotFoundError(f"no finished runs in {out / 'schnet_curve'}: run the curve part first")
    res = {k: v for k, v in rows[0].items() if k not in ("run", "command", "machine")}
    res["commands"] = sorted({r["command"] for r in rows})
    res["machines"] = [r["machine"] for r in rows]
    res["sizes"] = sorted({r["run"]["n_train"] for r in rows})
    res["seeds"] = sorted({r["run"]["seed"] for r in rows})
    res["runs"] = {m: sorted((r["run"] for r in rows if r["run"]["mode"] == m), key=lambda r: (r["seed"], r["n_train"]))
                   for m in sorted({r["run"]["mode"] for r in rows})}
    (out / "schnet_curve.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


def part_curve(args, out: Path) -> dict:
    """Learning curves on ethanol: for every seed, nested random subsets of the time-block training pool
    (``course_lib.stats.random_subset``), the same optimizer steps per run, test on the later time block.

    One file per finished run (``schnet_curve/<mode>_n<size>_s<seed>.json``; runs already there are skipped,
    so a sweep resumes and can be split over processes by ``--modes``/``--seeds``), merged after every run
    into ``schnet_curve.json`` (:func:`merge_curve`)."""
    pool, va, te = (load_molecules("ethanol", s, scheme="time") for s in ("train", "val", "test"))
    if args.quick:
        pool, va, te = pool[:40], va[:10], te[:10]
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = {"molecule": "ethanol",
                "split": "time blocks (ethanol_time_splits.npz): train pool = first 7 ps, val and test = later "
                         "blocks after 250 fs gaps; the test error measures generalisation to an unseen stretch",
                "subsets": "course_lib.stats.random_subset(pool, n, seed): random, nested per seed",
                "n_pool": len(pool), "n_val": len(va), "n_test": len(te), "rho": RHO, "batch_size": BATCH,
                "steps_per_run": args.steps, "epoch_steps": 2 if args.quick else 100}
    folder = out / "schnet_curve"
    folder.mkdir(parents=True, exist_ok=True)
    for mode in args.modes.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for n in sizes:
                path = folder / f"{mode}_n{n}_s{seed}.json"
                if path.exists() and json.loads(path.read_text())["steps_per_run"] == args.steps:
                    continue
                sub = [pool[int(i)] for i in random_subset(range(len(pool)), n, seed)]
                model, hist, err = train_schnet(sub, va, te, args.steps, seed, forces=(mode == "forces"),
                                                progress=not args.no_progress, desc=f"{mode} n={n} seed={seed}",
                                                epoch_steps=settings["epoch_steps"], device=args.device)
                info = machine_info(**device_info(args.device))
                info["load_average_end"] = os.getloadavg()
                row = {"command": _command(args), "machine": info, **settings,
                       "run": _curve_row(mode, n, seed, err, hist)}
                path.write_text(json.dumps(row, indent=2) + "\n")
                print(f"{mode:7s} n={n:4d} seed={seed}  energy MAE {err['energy_mae_meV']:7.1f} meV  force MAE "
                      f"{err['force_mae_meV_A']:6.1f} meV/A  ({len(hist.train)} epochs, {hist.seconds:.0f} s)",
                      flush=True)
                merge_curve(out)
    return merge_curve(out)


def part_g2(args, out: Path) -> dict:
    from course_lib.datasets import load_g2_conformers

    tr, va, te = (load_g2_conformers(s) for s in ("train", "val", "test"))
    if args.quick:
        tr, va, te = tr[:60], va[:20], te[:20]
    max_z = 20
    # the embeddings start small (std 0.1 instead of 1): with ~750 frames they move by ~0.3-1.8 during
    # training, which is invisible next to a random start of norm ~8 (measured with the default start),
    # so the picture of notebook 05 would show the random initialisation, not what was learned
    # validation and test molecules are unseen molecules (split by molecule): with 12 of them, early stopping
    # on their loss stops after a few epochs, before the species embeddings move away from their random
    # start; the embeddings are the point of this model, so it trains for the whole budget
    model, hist, err = train_schnet(tr, va, te, args.steps, args.seed, progress=not args.no_progress,
                                    desc="SchNet g2", max_z=max_z, select_on_val=False,
                                    embedding_std=EMBEDDING_STD, device=args.device)
    train_err = molecule_errors(model, DataLoader(tr, batch_size=50), device=args.device)
    species = sorted({int(z) for g in tr for z in g.z})
    res = {"command": _command(args),
           "machine": machine_info(**device_info(args.device)), "rho": RHO, "batch_size": BATCH, "steps": args.steps,
           "model": model.config, "species": species, **err, "train_errors": train_err, "n_train": len(tr),
           "split": "by molecule: test molecules are unseen", "embedding_init_std": EMBEDDING_STD,
           "epochs_run": len(hist.train),
           "seconds": hist.seconds}
    save_checkpoint(out / "schnet_g2.pt", model, config=model.config,
                    metrics={k: v for k, v in err.items() if isinstance(v, (int, float))})
    print(f"g2: energy MAE {err['energy_mae_meV']:.1f} meV  force MAE {err['force_mae_meV_A']:.1f} meV/A "
          f"({len(hist.train)} epochs, {hist.seconds:.0f} s)", flush=True)
    res["machine"]["load_average_end"] = os.getloadavg()
    (out / "schnet_g2.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


def _command(args) -> str:
    return "python benchmarks/schnet_molecules.py " + " ".join(args.argv)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("final", "curve", "g2"))
    p.add_argument("--modes", default="energy,forces", help="curve: which trainings (energy-only, forces)")
    p.add_argument("--molecules", default=",".join(MOLECULES))
    p.add_argument("--sizes", default=None, help="training-set sizes of the curve (comma-separated)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    p.add_argument("--quick", action="store_true", help="tiny data and steps (pipeline check)")
    p.add_argument("--out", default=None, help="default: benchmarks/results/ (--quick: a temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", default="0,1,2", help="curve: seeds (each draws its own random subsets)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    args = p.parse_args(argv)
    args.device = str(check_device(args.device))  # fails fast, before any data is loaded
    args.argv = list(argv if argv is not None else sys.argv[1:])
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.steps is None:
        args.steps = 20 if args.quick else {"final": 20000, "curve": 3000, "g2": 15000}[args.part]
    if args.sizes is None:
        args.sizes = "10,20" if args.quick else "25,50,100,200"
    out = Path(args.out) if args.out else (Path(tempfile.gettempdir()) / "course_schnet_quick" if args.quick
                                           else HERE / "results")
    out.mkdir(parents=True, exist_ok=True)
    return {"final": part_final, "curve": part_curve, "g2": part_g2}[args.part](args, out)


if __name__ == "__main__":
    main()
