"""The shipped reference model of notebook 06's training run: a Tensor Field Network that predicts the Coulomb
force on every particle of the N-body states (`course_lib.simulate.nbody.load_nbody_forces`, norm clipped at 10).

One run (seed 0), the notebook's architecture trained on all 3000 training systems for a fixed budget in epochs
(model selection on the validation MSE); the test set is the N-body test split (same distribution as training:
interpolation). It is a reference for the student's shorter run, not a comparison of architectures.

    OMP_NUM_THREADS=1 python benchmarks/tfn_forces.py          # -> benchmarks/results/tfn_forces.{pt,json}
    python benchmarks/tfn_forces.py --quick                     # pipeline check, temporary folder
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import torch
from torch_geometric.loader import DataLoader

from course_lib.graph import count_parameters
from course_lib.models.tfn import TensorFieldNetwork
from course_lib.simulate.nbody import load_nbody_forces
from course_lib.train import evaluate, fit, save_checkpoint
from course_lib.utils import add_device_argument, check_device, device_info, machine_info, seed_everything

ROOT = Path(__file__).resolve().parents[1]
CONFIG = dict(hidden=8, num_layers=2, l_max=1, cutoff=5.0, num_basis=8)


def force_mse(model, batch):
    return ((model(batch) - batch.forces) ** 2).mean()


def force_mae(model, batch):
    return (model(batch) - batch.forces).abs().mean()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny data and 2 epochs, results to a temporary folder")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    add_device_argument(p)
    args = p.parse_args(argv)
    device = check_device(args.device)
    n = dict(train=100, valid=50, test=50) if args.quick else dict(train=3000, valid=500, test=2000)
    epochs = 2 if args.quick else args.epochs
    out = Path(args.out or (tempfile.mkdtemp() if args.quick else ROOT / "benchmarks/results"))
    seed_everything(0)
    data = {k: load_nbody_forces(k, n=v) for k, v in n.items()}
    model = TensorFieldNetwork(**CONFIG).to(device)
    train = DataLoader(data["train"], batch_size=50, shuffle=True, generator=torch.Generator().manual_seed(0))
    hist = fit(model, train, DataLoader(data["valid"], batch_size=500), force_mse, epochs=epochs, lr=1e-2,
               patience=None, device=device, desc="TFN forces")
    test = DataLoader(data["test"], batch_size=500)
    metrics = {"test_force_mae": evaluate(model, test, force_mae, device),
               "test_force_mse": evaluate(model, test, force_mse, device),
               "zero_prediction_mae": float(torch.cat([g.forces for g in data["test"]]).abs().mean()),
               "best_epoch": hist.best_epoch, "epochs": epochs, "steps": epochs * (n["train"] // 50),
               "parameters": count_parameters(model)}
    save_checkpoint(out / "tfn_forces.pt", model, model.config, metrics)
    record = {"command": "python benchmarks/tfn_forces.py" + (" --quick" if args.quick else ""),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_info(**device_info(device)), "seeds": [0], "sizes": n, "config": CONFIG,
              "lr": 1e-2, "batch_size": 50, "metrics": metrics, "history": hist.as_dict()}
    (out / "tfn_forces.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(metrics, indent=1))
    print("results:", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
