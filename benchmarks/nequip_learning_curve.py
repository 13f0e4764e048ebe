"""The data-efficiency experiment of the NequIP paper on the course's xTB ethanol data (notebook 07).

    python benchmarks/nequip_learning_curve.py --lmax 0            # one process per l_max (run them in parallel)
    python benchmarks/nequip_learning_curve.py --lmax 1
    python benchmarks/nequip_learning_curve.py --lmax 2
    python benchmarks/nequip_learning_curve.py --lmax 0 --quick --out /tmp/lc   # pipeline check (CI)

For each ``l_max`` it trains ``course_lib.models.NequIP`` (16 features, 3 blocks) on n frames drawn at random
(``course_lib.stats.random_subset``, nested, a different subset per ``--seed``) from the training pool of the
ethanol split ``--split`` (``time``, the default: train pool = the first 7 ps, validation and test = later blocks
after 250 fs gaps, so the test error measures generalisation; ``random``: the older random split, whose test frames
are ~10 fs from training frames, an interpolation error), n = 25, 100, 400 by default (the budget of a shared 2-core
machine), with the
energy+force loss of the official configs (per-atom energy MSE + force-component MSE, weights 1 and 1),
batch size 5, Adam with learning rate 0.01 halved on validation plateaus, and the same number of
optimizer steps for every size (2000; small sets are repeated so that an epoch has >= 100 steps, large
sets get at least 30 passes). No early stopping: the best weights on the 100 validation frames are
tested on the test frames (force and energy MAE); every run stores its validation curve and
``course_lib.stats.plateau`` of it. Writes ``nequip_curve_l<l_max>.json`` (seed 0; other seeds
``nequip_curve_l<l_max>_s<seed>.json``) into
``--out`` (default ``benchmarks/results/``) after every run (an interrupted call resumes), with the
command, the thread count and the load average; the run on the largest set is saved as
``nequip_curve_l<l_max>.pt`` (notebooks 07 and 08 load them).

The paper's claim (Batzner et al., Nat. Commun. 13, 2453 (2022), the learning curves of its data-efficiency
section): l >= 1 makes the learning curve *steeper* (a more negative slope of log force-MAE vs log training-set
size) than l = 0.

The shipped ``nequip_curve_l{0,1,2}.json`` predate the random subsets and the time split: they were trained on
``train[:n]`` of the random split (the first, time-ordered frames) with one seed; their ``split`` key is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch_geometric.loader import DataLoader

from course_lib.datasets import load_molecules
from course_lib.losses import molecule_errors, per_atom_energy_force_loss
from course_lib.models.nequip import NequIP
from course_lib.stats import plateau, random_subset
from course_lib.train import fit, save_checkpoint
from course_lib.utils import machine_info, seed_everything

HERE = Path(__file__).resolve().parent
BATCH = 5
LR = 0.01
MIN_EPOCHS = 30


def train_nequip(train, val, test, l_max: int, steps: int, seed: int, features: int, layers: int,
                 progress: bool = True, desc: str = "nequip", epoch_steps: int = 100, min_epochs: int = 30):
    """Train one NequIP for about ``steps`` optimizer steps; return (model, history, test errors)."""
    seed_everything(seed)
    model = NequIP(l_max=l_max, hidden=features, num_layers=layers)
    model.fit_energy_scale(train)
    # small training sets are repeated so that an "epoch" has >= 100 steps: validation (with forces, costly)
    # then runs every ~100 steps whatever the size, instead of after every 5 steps for n = 25
    reps = max(1, -(-epoch_steps * BATCH // len(train)))
    tl = DataLoader(list(train) * reps, batch_size=BATCH, shuffle=True,
                    generator=torch.Generator().manual_seed(seed))
    vl = DataLoader(val, batch_size=50)
    steps = max(steps, min_epochs * -(-len(train) // BATCH))  # large sets get at least min_epochs passes
    epochs = max(2, round(steps / len(tl)))
    # no early stopping: every size gets its whole budget (with 30 short epochs, a patience of a few epochs
    # stopped the largest sets at half their budget); the best-validation weights are tested
    hist = fit(model, tl, vl, per_atom_energy_force_loss, epochs=epochs, lr=LR, patience=None,
               progress=progress, needs_grad_eval=True, desc=desc)
    hist.steps = epochs and len(hist.train) * len(tl)
    return model, hist, molecule_errors(model, DataLoader(test, batch_size=50))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lmax", type=int, required=True)
    p.add_argument("--sizes", default=None, help="training-set sizes (comma-separated)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    p.add_argument("--features", type=int, default=16, help="channels per irrep")
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--molecule", default="ethanol")
    p.add_argument("--quick", action="store_true", help="tiny data and steps (pipeline check)")
    p.add_argument("--out", default=None, help="default: benchmarks/results/ (--quick: a temporary folder)")
    p.add_argument("--seed", type=int, default=0, help="initialisation, batch order and training subset")
    p.add_argument("--split", choices=("time", "random"), default="time",
                   help="load_molecules scheme: time blocks (generalisation) or random frames (interpolation)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    tr, va, te = (load_molecules(args.molecule, s, scheme=args.split) for s in ("train", "val", "test"))
    if args.quick:
        va, te = va[:10], te[:10]
    sizes = [int(s) for s in (args.sizes or ("10,20" if args.quick else "25,100,400")).split(",")]
    steps = args.steps or (10 if args.quick else 2000)
    out = Path(args.out) if args.out else (Path(tempfile.gettempdir()) / "course_nequip_curve_quick" if args.quick
                                           else HERE / "results")
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/nequip_learning_curve.py " + " ".join(argv if argv is not None else sys.argv[1:])
    res = {"command": cmd,
           "machine": machine_info(), "molecule": args.molecule, "l_max": args.lmax, "features": args.features,
           "layers": args.layers, "batch_size": BATCH, "lr": LR, "steps_per_run": steps, "sizes": sizes,
           "loss": "per-atom energy MSE + force-component MSE (weights 1, 1)", "seed": args.seed,
           "split": args.split, "subsets": "course_lib.stats.random_subset(pool, n, seed): random, nested per seed",
           "runs": []}
    suffix = "" if args.seed == 0 else f"_s{args.seed}"
    path = out / f"nequip_curve_l{args.lmax}{suffix}.json"
    done = {}
    if path.exists() and not args.quick:  # resume: keep the runs of an interrupted call with the same settings
        old = json.loads(path.read_text())
        keys = ("molecule", "l_max", "features", "layers", "steps_per_run", "batch_size", "seed", "split")
        if all(old.get(k) == res[k] for k in keys):
            done = {r["n_train"]: r for r in old["runs"]}
    t0 = time.perf_counter()
    for n in sizes:
        if n in done and n != sizes[-1]:
            res["runs"].append(done[n])
            print(f"l_max={args.lmax} n={n:4d}  kept from {path.name}", flush=True)
            continue
        subset = [tr[int(i)] for i in random_subset(range(len(tr)), n, args.seed)]
        model, hist, err = train_nequip(subset, va, te, args.lmax, steps, args.seed, args.features, args.layers,
                                        progress=not args.no_progress, desc=f"l={args.lmax} n={n}",
                                        epoch_steps=2 if args.quick else 100,
                                        min_epochs=1 if args.quick else MIN_EPOCHS)
        res["runs"].append({**err, "n_train": n, "epochs_run": len(hist.train), "best_epoch": hist.best_epoch,
                            "steps_run": hist.steps, "seed": args.seed, "val_curve": hist.val,
                            "plateau": plateau(hist.val) if len(hist.val) >= 5 else None,
                            "seconds": hist.seconds})
        print(f"l_max={args.lmax} n={n:4d}  energy MAE {err['energy_mae_meV']:7.1f} meV  force MAE "
              f"{err['force_mae_meV_A']:6.1f} meV/A  ({len(hist.train)} epochs, {hist.seconds:.0f} s)", flush=True)
        path.write_text(json.dumps(res, indent=2) + "\n")  # after every run: an interrupted call can resume
        if n == sizes[-1] and args.seed == 0:
            save_checkpoint(out / f"nequip_curve_l{args.lmax}.pt", model, config=model.config,
                            metrics={k: v for k, v in err.items() if isinstance(v, (int, float))})
    res["total_seconds"] = time.perf_counter() - t0
    res["machine"]["load_average_end"] = os.getloadavg()
    path.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
