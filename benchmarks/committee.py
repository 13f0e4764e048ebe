"""A committee of SchNet models differing only in their seed, and its calibration on ethanol test frames (notebook 10).

    OMP_NUM_THREADS=1 python benchmarks/committee.py          # 3 members, ~1-2 min each on one shared thread
    python benchmarks/committee.py --quick --out /tmp/c          # pipeline check (CI)
    python benchmarks/committee.py --device cuda --out /tmp/c    # train and evaluate on the GPU

Protocol: K = ``--members`` SchNet models (hidden 32, filters 32, 3 layers, 25 Gaussians, cutoff 5 Å: smaller than
the shipped SchNet, to fit the budget), the **same** ``--n-train`` frames (a random subset of the xTB ethanol
training split, drawn once with seed 0) and validation split, the same budget (``--epochs`` epochs of batch 10,
energy+force loss with per-atom energies, Adam lr 1e-3, model selection on the validation loss); member k differs
only in its seed k (weights, batch order). Each finished member is written (``committee_s<k>.pt``) and skipped
when rerun (resumable). Evaluated on the 100 test frames (interpolation: the same 500 K MD as the training data):
per atom, the error of the committee-mean force ``|F̄ - F_xTB|`` and the disagreement ``σ``
(:func:`course_lib.uncertainty.force_disagreement`); per frame, their means. Writes ``committee.json`` (command,
date, machine with the device, protocol, per-member test errors and validation curves, per-frame and per-atom
arrays). ``--device``: ``cpu`` (the default; the committed results are CPU results) or ``cuda``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from course_lib import stats
from course_lib import uncertainty as U
from course_lib.datasets import load_molecules
from course_lib.losses import molecule_errors, per_atom_energy_force_loss
from course_lib.models.schnet import SchNet
from course_lib.train import fit, load_model, save_checkpoint
from course_lib.utils import DEVICE_HELP, check_device, device_info, machine_info, seed_everything

RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = {"hidden": 32, "filters": 32, "num_layers": 3, "num_basis": 25, "cutoff": 5.0, "max_z": 10}


def train_member(seed: int, train, val, epochs: int, device="cpu") -> tuple[SchNet, dict]:
    seed_everything(seed)
    model = SchNet(**CONFIG)
    model.fit_energy_scale(train)
    tl = DataLoader(train, batch_size=10, shuffle=True)
    vl = DataLoader(val, batch_size=50)
    hist = fit(model, tl, vl, per_atom_energy_force_loss, epochs=epochs, lr=1e-3, patience=None, progress=False,
               needs_grad_eval=True, desc=f"member {seed}", device=device)
    return model.eval(), {"val_loss": [float(v) for v in hist.val], "best_epoch": hist.best_epoch,
                          "plateau": stats.plateau(hist.val) if len(hist.val) >= 5 else None}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None, help="default benchmarks/results/ (quick: a temp folder)")
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--n-train", dest="n_train", type=int, default=None, help="default 200, quick 20")
    p.add_argument("--epochs", type=int, default=None, help="default 60, quick 2")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    args = p.parse_args(argv)
    device = check_device(args.device)  # fails fast, before any data is loaded
    torch.set_num_threads(1)
    n_train = args.n_train or (20 if args.quick else 200)
    epochs = args.epochs or (2 if args.quick else 60)
    out = Path(args.out or (tempfile.mkdtemp(prefix="committee_") if args.quick else RESULTS))
    out.mkdir(parents=True, exist_ok=True)
    pool = load_molecules("ethanol", "train")
    train = [pool[i] for i in stats.random_subset(range(len(pool)), n_train, seed=0)]
    val = load_molecules("ethanol", "val")[: 20 if args.quick else 100]
    test = load_molecules("ethanol", "test")[: 10 if args.quick else 100]
    members, rows = [], []
    for seed in range(args.members):
        path = out / f"committee_s{seed}.pt"
        if path.exists():
            model, payload = load_model(path)
            model.to(device)
            curve = payload["metrics"]["curve"]
        else:
            model, curve = train_member(seed, train, val, epochs, device)
            metrics = {**molecule_errors(model, DataLoader(test, batch_size=50), device=device), "curve": curve}
            save_checkpoint(path, model, config=model.config, metrics=metrics)
        err = molecule_errors(model, DataLoader(test, batch_size=50), device=device)
        rows.append({"seed": seed, "force_mae_meV_A": err["force_mae_meV_A"], "energy_mae_meV": err["energy_mae_meV"],
                     "curve": curve})
        members.append(model)
        print(f"member {seed}: test force MAE {err['force_mae_meV_A']:.1f} meV/A", flush=True)
    _, forces, frame = U.committee_forces(members, test)
    ref = torch.cat([g.forces for g in test]).double().numpy()
    err_atom = np.linalg.norm(forces.mean(0) - ref, axis=1)  # eV/A
    sigma_atom = U.force_disagreement(forces)
    res = {"command": " ".join(["python", "benchmarks/committee.py", *(argv if argv is not None else sys.argv[1:])]),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": machine_info(**device_info(device)),
           "protocol": {"config": CONFIG, "n_train": n_train, "epochs": epochs, "batch_size": 10, "lr": 1e-3,
                        "subset_seed": 0, "members": args.members, "test_frames": len(test)},
           "members": rows,
           "per_atom": {"error_eV_A": err_atom.tolist(), "sigma_eV_A": sigma_atom.tolist(), "frame": frame.tolist(),
                        "z": torch.cat([g.z for g in test]).tolist()},
           "per_frame": {"error_eV_A": U.per_frame_mean(err_atom, frame).tolist(),
                         "sigma_eV_A": U.per_frame_mean(sigma_atom, frame).tolist()}}
    res["spearman_per_frame"] = U.spearman(res["per_frame"]["sigma_eV_A"], res["per_frame"]["error_eV_A"])
    res["spearman_per_atom"] = U.spearman(sigma_atom, err_atom)
    (out / "committee.json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"Spearman(disagreement, error): per frame {res['spearman_per_frame']:.2f}, per atom "
          f"{res['spearman_per_atom']:.2f}", flush=True)
    return res


if __name__ == "__main__":
    main()
