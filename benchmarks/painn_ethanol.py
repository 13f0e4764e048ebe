"""PaiNN against NequIP (l_max = 1) on the course's ethanol data, under the protocol of benchmarks/README.md.

    OMP_NUM_THREADS=1 python benchmarks/painn_ethanol.py                 # -> results/painn_ethanol.json
    python benchmarks/painn_ethanol.py --quick --out /tmp/pe             # pipeline check (CI)
    python benchmarks/painn_ethanol.py --device cuda --out /tmp/pe       # train on the GPU

Same split, loss and optimiser as ``benchmarks/nequip_learning_curve.py`` (per-atom energy MSE + force MSE,
batch 5, Adam lr 0.01 halved on plateaus, the same number of optimizer steps for every model, best weights on
the 100 validation frames tested on the 100 test frames: frames of the same MD trajectory, so the test
measures interpolation). Models at 16 channels and 3 layers: ``painn`` (PaiNN) and ``nequip_l1`` (the default
``--models``), and for the accuracy-vs-cost plot of notebook 09 also ``nequip_l0``, ``nequip_l2`` and ``schnet``
(16 features and filters, cutoff 4 Å like the others). Seeds
0, 1, 2; the ``--n`` training frames are a random subset per seed (:func:`course_lib.stats.random_subset`).
Each finished run is written at once (an interrupted call resumes). The cost axis: wall and CPU time of the
training (``seconds``, ``cpu_seconds``), one thread; the machine load is recorded. ``--device``: ``cpu`` (the
default; the committed results are CPU results) or ``cuda``; recorded in ``machine``, and runs of another device
are not resumed.

``--save-checkpoint`` also saves every trained model (best validation weights, its config and test errors) as
``<out>/painn_ethanol_ckpt/<model>_s<seed>.pt`` (never the name of a shipped model); a run whose checkpoint is
missing is retrained even when its row exists. The committed ``results/painn_ethanol_ckpt/`` (the 15 runs at
2000 steps) are what ``md_ethanol.py sweep`` runs MD with (notebook 09 §8).
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
from course_lib.stats import plateau, random_subset
from course_lib.train import fit, save_checkpoint
from course_lib.utils import DEVICE_HELP, check_device, device_info, machine_info, seed_everything

HERE = Path(__file__).resolve().parent
BATCH, LR = 5, 0.01


def make_model(name: str, hidden: int, num_layers: int):
    """``painn``, ``nequip_l0`` / ``_l1`` / ``_l2`` or ``schnet``, all at ``hidden`` channels, ``num_layers``
    interaction layers and the 4 Å cutoff of the course's NequIP (SchNet: as many filters as features)."""
    if name == "schnet":
        from course_lib.models.schnet import SchNet

        return SchNet(hidden=hidden, filters=hidden, num_layers=num_layers, cutoff=4.0)
    if name == "painn":
        from course_lib.models.painn import PaiNN

        return PaiNN(hidden=hidden, num_layers=num_layers)
    from course_lib.models.nequip import NequIP

    return NequIP(l_max=int(name[-1]), hidden=hidden, num_layers=num_layers)


def checkpoint_path(out: Path, name: str, seed: int) -> Path:
    """Where ``--save-checkpoint`` puts the model ``name`` of seed ``seed``."""
    return Path(out) / "painn_ethanol_ckpt" / f"{name}_s{seed}.pt"


def train_one(name, train, val, test, steps, seed, hidden, num_layers, epoch_steps=100, device="cpu",
              checkpoint=None):
    """One run; returns its results row. ``checkpoint``: a path to save the trained model to."""
    seed_everything(seed)
    model = make_model(name, hidden, num_layers)
    model.fit_energy_scale(train)
    reps = max(1, -(-epoch_steps * BATCH // len(train)))
    tl = DataLoader(list(train) * reps, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed))
    epochs = max(2, round(steps / len(tl)))
    c0 = time.process_time()
    hist = fit(model, tl, DataLoader(val, batch_size=50), per_atom_energy_force_loss, epochs=epochs, lr=LR,
               patience=None, progress=False, needs_grad_eval=True, desc=name, device=device)
    cpu = time.process_time() - c0
    err = molecule_errors(model, DataLoader(test, batch_size=50), device=device)
    if checkpoint is not None:
        save_checkpoint(checkpoint, model.cpu(), config=model.config,
                        metrics={**{k: v for k, v in err.items() if isinstance(v, (int, float))}, "model": name,
                                 "seed": seed, "n_train": len(train), "steps": steps})
    return {**{k: v for k, v in err.items() if isinstance(v, (int, float))}, "model": name, "seed": seed,
            "n_train": len(train), "epochs_run": len(hist.train), "best_epoch": hist.best_epoch,
            "steps_run": len(hist.train) * len(tl), "seconds": hist.seconds, "cpu_seconds": cpu,
            "val_curve": [float(v) for v in hist.val], "plateau": plateau(hist.val) if len(hist.val) >= 5 else None}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="painn,nequip_l1")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.add_argument("--save-checkpoint", action="store_true",
                   help="also save every model as <out>/painn_ethanol_ckpt/<model>_s<seed>.pt")
    args = p.parse_args(argv)
    device = str(check_device(args.device))  # fails fast, before any data is loaded
    torch.set_num_threads(1)
    tr, va, te = (load_molecules("ethanol", s) for s in ("train", "val", "test"))
    if args.quick:
        va, te, args.n, args.steps, args.hidden, args.seeds = va[:10], te[:10], 10, 4, 4, "0"
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp()) if args.quick else HERE / "results")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "painn_ethanol.json"
    cmd = "python benchmarks/painn_ethanol.py " + " ".join(argv if argv is not None else sys.argv[1:])
    res = {"command": cmd, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": machine_info(**device_info(device)),
           "molecule": "ethanol", "n_train": args.n, "steps_per_run": args.steps, "hidden": args.hidden,
           "num_layers": args.layers, "batch_size": BATCH, "lr": LR, "seeds": [int(s) for s in args.seeds.split(",")],
           "loss": "per-atom energy MSE + force-component MSE (weights 1, 1)",
           "test": "100 frames of the same trajectory as the training frames (interpolation)", "runs": []}
    if path.exists() and not args.quick:
        old = json.loads(path.read_text())
        if (all(old.get(k) == res[k] for k in ("n_train", "steps_per_run", "hidden", "num_layers"))
                and old["machine"].get("device", "cpu") == device):
            res["runs"] = old["runs"]
    if args.save_checkpoint:  # a row without its checkpoint is trained again
        res["runs"] = [r for r in res["runs"] if checkpoint_path(out, r["model"], r["seed"]).exists()]
    done = {(r["model"], r["seed"]) for r in res["runs"]}
    for seed in res["seeds"]:
        for name in args.models.split(","):
            if (name, seed) in done:
                continue
            train = [tr[int(k)] for k in random_subset(range(len(tr)), args.n, seed)]
            row = train_one(name, train, va, te, args.steps, seed, args.hidden, args.layers,
                            epoch_steps=2 if args.quick else 100, device=device,
                            checkpoint=checkpoint_path(out, name, seed) if args.save_checkpoint else None)
            res["runs"].append(row)
            print(f"{name} seed {seed}: force MAE {row['force_mae_meV_A']:.1f} meV/A, energy MAE "
                  f"{row['energy_mae_meV']:.1f} meV, {row['cpu_seconds']:.0f} s CPU", flush=True)
            res["machine"]["load_average_end"] = list(os.getloadavg())
            path.write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
