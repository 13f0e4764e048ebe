"""Learning curves of notebook 01: test MAE vs number of training systems, for the invariant MPNN and
the non-invariant baselines (with and without data augmentation), on the periodic charged-particle
energy data set.

    python benchmarks/energy_learning_curve.py                     # full run, writes benchmarks/results/
    python benchmarks/energy_learning_curve.py --quick --out /tmp/lc  # pipeline check (CI)

Writes ``energy_learning_curve.json`` (MAE per model and size, epochs, wall times, the command and the
machine) and the checkpoints of the models trained on the largest size (``energy_<model>.pt``), which
notebook 01 loads instead of training for minutes on a CPU. With ``--tag final`` (and a larger
``--steps``) it writes ``energy_final.json`` and ``energy_<model>_final.pt`` instead: the longer
training run of the notebook's main model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch_geometric.loader import DataLoader

from course_lib import symmetry as S
from course_lib.datasets import load_particles
from course_lib.models.baselines import AbsolutePositionGNN, CoordinateMLP
from course_lib.models.mpnn import InvariantMPNN
from course_lib.train import evaluate, fit, save_checkpoint
from course_lib.utils import seed_everything

HERE = Path(__file__).resolve().parent
MODELS = ("mpnn", "abs_gnn", "abs_gnn_aug", "mlp")
LABELS = {
    "mpnn": "invariant MPNN",
    "abs_gnn": "GNN with absolute positions",
    "abs_gnn_aug": "GNN with absolute positions + augmentation",
    "mlp": "MLP on padded coordinates",
}


def make_model(name: str):
    if name == "mpnn":
        return InvariantMPNN()
    if name in ("abs_gnn", "abs_gnn_aug"):
        return AbsolutePositionGNN()
    if name == "mlp":
        return CoordinateMLP(max_nodes=24)
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def energy_mse(model, batch):
    return ((model(batch) - batch.energy) ** 2).mean()


def augmented_mse(generator):
    """MSE on a randomly transformed copy of each batch (periodic translation + a box symmetry)."""

    def loss(model, batch):
        if model.training:
            batch = S.random_augmentation(batch, generator=generator)
        return energy_mse(model, batch)

    return loss


def energy_mae(model, batch):
    return (model(batch) - batch.energy).abs().mean()


def train_one(name: str, train, val, test, epochs: int, seed: int, progress: bool) -> tuple:
    seed_everything(seed)
    model = make_model(name)
    model.fit_energy_scale(train)
    loss = augmented_mse(torch.Generator().manual_seed(seed)) if name == "abs_gnn_aug" else energy_mse
    tl = DataLoader(train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed))
    vl = DataLoader(val, batch_size=256)
    hist = fit(model, tl, vl, loss, epochs=epochs, lr=1e-3, patience=max(10, epochs // 6), progress=progress,
               desc=f"{name} n={len(train)}")
    model.eval()
    mae = evaluate(model, DataLoader(test, batch_size=256), energy_mae)
    return model, hist, mae


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and epochs (pipeline check)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--sizes", default=None, help="comma-separated training-set sizes")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (sets epochs per size)")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--tag", default="", help="suffix of the output names (e.g. 'final' for a longer run)")
    p.add_argument("--merge", nargs="+", metavar="DIR",
                   help="merge the results of runs made with different --models into --out (no training)")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out))

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    train_all, val, test = (load_particles("energy", s) for s in ("train", "val", "test"))
    if args.quick:
        sizes = [int(s) for s in (args.sizes or "50,100").split(",")]
        steps, max_epochs = args.steps or 40, args.max_epochs or 4
        val, test = val[:100], test[:100]
    else:
        sizes = [int(s) for s in (args.sizes or "100,300,1000,2400").split(",")]
        steps, max_epochs = args.steps or 9000, args.max_epochs or 1000
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = [m for m in args.models.split(",") if m]
    e_std = float(torch.cat([g.energy for g in test]).std())
    results = {
        "command": "python benchmarks/energy_learning_curve.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "load_average": os.getloadavg()},
        "test_energy_std": e_std,
        "sizes": sizes,
        "steps_per_run": steps,
        "models": {},
    }
    t_all = time.perf_counter()
    for name in models:
        rows = []
        for n in sizes:
            train = train_all[:n]
            epochs = min(max_epochs, max(2, round(steps / max(1, -(-n // 32)))))
            model, hist, mae = train_one(name, train, val, test, epochs, args.seed, not args.no_progress)
            rows.append({"n_train": n, "test_mae": mae, "test_mae_over_std": mae / e_std, "epochs_run": len(hist.train),
                         "best_epoch": hist.best_epoch, "seconds": hist.seconds})
            print(f"{name:12s} n={n:5d} epochs={len(hist.train):4d} test MAE {mae:.4f} ({100 * mae / e_std:.2f}% "
                  f"of std) {hist.seconds:.0f}s", flush=True)
            if n == sizes[-1]:
                tag = f"_{args.tag}" if args.tag else ""
                save_checkpoint(out / f"energy_{name}{tag}.pt", model, config=model.config,
                                metrics={"test_mae": mae, "n_train": n, "epochs": len(hist.train)})
        results["models"][name] = {"label": LABELS[name], "runs": rows}
    results["total_seconds"] = time.perf_counter() - t_all
    name = f"energy_{args.tag}.json" if args.tag else "energy_learning_curve.json"
    (out / name).write_text(json.dumps(results, indent=2) + "\n")
    return results


def merge(dirs, out: Path) -> dict:
    """Combine per-model runs (e.g. run in parallel, one model per process) into one results file."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    parts = [json.loads((Path(d) / "energy_learning_curve.json").read_text()) for d in dirs]
    merged = {**parts[0], "models": {}, "command": [p["command"] for p in parts],
              "total_seconds": sum(p["total_seconds"] for p in parts)}
    for d, part in zip(dirs, parts):
        if part["sizes"] != merged["sizes"] or part["steps_per_run"] != merged["steps_per_run"]:
            raise ValueError(f"{d} was run with other sizes or steps; merge only comparable runs")
        merged["models"].update(part["models"])
        for name in part["models"]:
            src = Path(d) / f"energy_{name}.pt"
            if src.exists() and src.resolve() != (out / src.name).resolve():
                shutil.copy(src, out / src.name)
    merged["models"] = {k: merged["models"][k] for k in MODELS if k in merged["models"]}
    (out / "energy_learning_curve.json").write_text(json.dumps(merged, indent=2) + "\n")
    return merged


if __name__ == "__main__":
    main()
