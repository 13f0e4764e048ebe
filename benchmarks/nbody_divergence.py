"""Why does the N-body EGNN blow up late in training? Counterfactual continuations from one snapshot.

Usage (from the repository root)::

    python benchmarks/nbody_divergence.py --probe            # cheap: -> benchmarks/results/nbody_divergence.json
    python benchmarks/nbody_divergence.py                    # counterfactuals (about 4 CPU-minutes on a quiet core)
    python benchmarks/nbody_divergence.py --quick            # pipeline check (300 systems, 4 + 2 epochs), temp folder
    python benchmarks/nbody_divergence.py --quick --device cuda   # the same on the GPU

``--device``: ``cpu`` (the default; the shipped results and the nbody.py runs they are compared with are CPU runs)
or ``cuda`` (data and models on the GPU; the batch order is still drawn on the CPU, so it is the same; the
float32 round-off, and so the trajectory after a few epochs, is not). Recorded in ``machine``.

``--probe`` (what the shipped results file holds): the shipped EGNN of seed 0 (``results/nbody_egnn.pt``, the
weights of its best epoch 156, one epoch before its training blew up) evaluated on the batches that training
fed it in the following epochs 157-163 (the batch order is regenerated from the seed): per batch the loss and
the global gradient norm, in float32 and in float64, and the relative difference of the two gradients. It
asks whether a batch with an outlying gradient, or float32 round-off, is visible at the weights where the
blow-up started. It cannot replay Adam (the optimiser state is not in the checkpoint); the counterfactual
mode below does.

What it does (seed 0 of ``benchmarks/nbody.py``, the same initialisation, batch order and optimiser):

1. trains the EGNN of ``nbody.py`` for ``--snapshot`` epochs (default 150, a few epochs before the blow-up
   that the committed seed-0 run showed at epochs 157-163) and keeps a snapshot: weights, Adam state and
   the state of the batch-order generator;
2. continues from that snapshot for ``--extra`` epochs (default 15) under each variant, with the *same*
   batches in the same order:

   * ``baseline``: unchanged (float32, lr 5e-4, no clipping): does the blow-up reproduce?
   * ``clip``: the global gradient norm clipped to the 99th percentile of the step norms of the 10
     epochs before the snapshot (only outliers are clipped);
   * ``half_lr``: learning rate 2.5e-4;
   * ``float64``: weights, Adam state and data in float64;

3. records, for every step of every continuation, the loss, the global gradient norm (before clipping)
   and the norm of the parameter update; per epoch the training and validation MSE.

The snapshot reproduces the first epochs of ``benchmarks/results/nbody_seeds/seed0.json`` exactly (the
validation curves are compared and the largest difference is recorded). A continuation from one snapshot
answers "does this change remove *this* spike", not "does it prevent every spike of every run": the
full runs of ``nbody.py`` (3 seeds, with gradient norms per epoch) show how often spikes happen.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import nbody  # noqa: E402  (benchmarks/nbody.py: data, MSE, settings)

from course_lib.models.nbody import EGNNDynamics  # noqa: E402
from course_lib.utils import DEVICE_HELP, check_device, device_info, machine_info  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "nbody_divergence.json"


def _to(split: nbody.Split, dtype) -> nbody.Split:
    s = copy.copy(split)
    for key in ("pos", "vel", "charge", "target"):
        setattr(s, key, getattr(split, key).to(dtype))
    return s


def run_epochs(model, opt, data, gen, epochs: int, clip: float | None, first_epoch: int) -> dict:
    """``epochs`` epochs of nbody.py's loop; per step: loss, gradient norm (before clipping), update norm."""
    tr = data["train"]
    n_batches = tr.n // nbody.BATCH_SIZE
    max_norm = math.inf if clip is None else clip
    steps = {"loss": [], "grad_norm": [], "update_norm": []}
    epochs_rec = {"epoch": [], "train_mse": [], "val_mse": []}
    params = [p for p in model.parameters()]
    model.train()
    for e in range(epochs):
        perm = torch.randperm(tr.n, generator=gen)
        total = 0.0
        for k in range(n_batches):
            b = tr.batch(perm[k * nbody.BATCH_SIZE : (k + 1) * nbody.BATCH_SIZE])
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(model(b), b.target_pos)
            if not torch.isfinite(loss):
                steps["loss"].append(float("nan"))
                epochs_rec["epoch"].append(first_epoch + e)
                epochs_rec["train_mse"].append(float("nan"))
                epochs_rec["val_mse"].append(float("nan"))
                return {"steps": steps, "epochs": epochs_rec, "diverged": True}
            loss.backward()
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            before = [p.detach().clone() for p in params]
            opt.step()
            upd = math.sqrt(sum(float(((p.detach() - q) ** 2).sum()) for p, q in zip(params, before)))
            steps["loss"].append(float(f"{float(loss):.5g}"))
            steps["grad_norm"].append(float(f"{gnorm:.5g}"))
            steps["update_norm"].append(float(f"{upd:.5g}"))
            total += float(loss)
        epochs_rec["epoch"].append(first_epoch + e)
        epochs_rec["train_mse"].append(total / n_batches)
        epochs_rec["val_mse"].append(nbody.mse(model, data["valid"]))
        print(f"    epoch {first_epoch + e}: train {epochs_rec['train_mse'][-1]:.5g} val "
              f"{epochs_rec['val_mse'][-1]:.5g} max grad norm {max(steps['grad_norm'][-n_batches:]):.3g}", flush=True)
    return {"steps": steps, "epochs": epochs_rec, "diverged": False}


def probe(argv: list, out: Path, epochs=(157, 163), seed: int = 0, device="cpu") -> dict:
    """Per-batch loss and gradient norm of the shipped seed-0 EGNN on the batches of ``epochs`` (inclusive)."""
    from course_lib.train import load_checkpoint, upgrade_config

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ckpt = ROOT / "benchmarks" / "results" / "nbody_egnn.pt"
    payload = load_checkpoint(ckpt)
    if payload["metrics"].get("best_epoch") != epochs[0] - 1:
        raise SystemExit(f"{ckpt} is not the epoch-{epochs[0] - 1} EGNN this probe was written for: "
                         f"metrics {payload['metrics']}")
    tr = nbody.Split("train", None).to(device)
    gen = torch.Generator().manual_seed(seed + 100 + nbody.SEED_OFFSET["egnn"])
    perms = [torch.randperm(tr.n, generator=gen) for _ in range(epochs[1])]  # epoch e uses perms[e - 1]
    n_batches = tr.n // nbody.BATCH_SIZE
    rows = []
    models = {}
    for dtype in (torch.float32, torch.float64):
        m = EGNNDynamics(**upgrade_config(EGNNDynamics, payload["config"])).to(device=device, dtype=dtype)
        load_checkpoint(ckpt, m)
        models[dtype] = m.train()
    split64 = _to(tr, torch.float64)
    for epoch in range(epochs[0], epochs[1] + 1):
        for k in range(n_batches):
            idx = perms[epoch - 1][k * nbody.BATCH_SIZE : (k + 1) * nbody.BATCH_SIZE]
            grads, losses = {}, {}
            for dtype, split in ((torch.float32, tr), (torch.float64, split64)):
                m = models[dtype]
                m.zero_grad(set_to_none=True)
                b = split.batch(idx)
                loss = torch.nn.functional.mse_loss(m(b), b.target_pos)
                loss.backward()
                grads[dtype] = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).flatten().double()
                                          for p in m.parameters()])
                losses[dtype] = float(loss)
            g32, g64 = grads[torch.float32], grads[torch.float64]
            rows.append({"epoch": epoch, "batch": k, "loss32": losses[torch.float32], "loss64": losses[torch.float64],
                         "grad_norm32": float(g32.norm()), "grad_norm64": float(g64.norm()),
                         "grad_rel_diff_32_64": float((g32 - g64).norm() / g64.norm())})
        last = rows[-n_batches:]
        print(f"epoch {epoch}: max batch loss {max(r['loss32'] for r in last):.4g}, max grad norm "
              f"{max(r['grad_norm32'] for r in last):.3g}, max float32/float64 gradient difference "
              f"{max(r['grad_rel_diff_32_64'] for r in last):.1e}", flush=True)
    result = {
        "benchmark": "N-body EGNN divergence: probe of the shipped seed-0 EGNN on the batches after its best epoch",
        "command": "python benchmarks/nbody_divergence.py " + " ".join(shlex.quote(a) for a in argv),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(**device_info(device)), "mode": "probe", "checkpoint": nbody._rel(ckpt),
        "checkpoint_metrics": payload["metrics"], "seed": seed,
        "epochs": list(epochs), "steps_per_epoch": n_batches, "batches": rows,
        "total_wall_s": time.perf_counter() - t0,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out} in {result['total_wall_s']:.0f} s", flush=True)
    return result


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--probe", action="store_true", help="the cheap probe of the shipped checkpoint (see above)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--snapshot", type=int, default=None, help="epochs before the snapshot (default 150, quick 4)")
    ap.add_argument("--extra", type=int, default=None, help="epochs of every continuation (default 15, quick 2)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cpu", help=DEVICE_HELP)
    args = ap.parse_args(argv)
    device = str(check_device(args.device))  # fails fast, before anything runs
    if args.probe:
        return probe(argv, Path(args.out) if args.out else DEFAULT_OUT, seed=args.seed, device=device)
    snap_epochs = args.snapshot or (4 if args.quick else 150)
    extra = args.extra or (2 if args.quick else 15)
    out = Path(args.out) if args.out else (Path(tempfile.gettempdir()) / "course_nbody_divergence.json"
                                           if args.quick else DEFAULT_OUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    sizes = nbody.QUICK_SIZES if args.quick else nbody.FULL_SIZES
    data = {s: nbody.Split(s, sizes[s] if args.quick else None).to(device) for s in ("train", "valid", "test")}
    lr = nbody.FULL["egnn"]["lr"]
    off = nbody.SEED_OFFSET["egnn"]
    torch.manual_seed(args.seed + off)
    model = EGNNDynamics().to(device)
    gen = torch.Generator().manual_seed(args.seed + 100 + off)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=nbody.WEIGHT_DECAY)
    print(f"training {snap_epochs} epochs to the snapshot", flush=True)
    pre = run_epochs(model, opt, data, gen, snap_epochs, None, 1)
    n_batches = data["train"].n // nbody.BATCH_SIZE
    last = np.array(pre["steps"]["grad_norm"][-10 * n_batches :])
    clip = float(np.percentile(last, 99))
    snapshot = {"model": copy.deepcopy(model.state_dict()), "opt": copy.deepcopy(opt.state_dict()),
                "gen": gen.get_state()}


    variants = {"baseline": {"clip": None, "lr": lr, "dtype": torch.float32},
                "clip": {"clip": clip, "lr": lr, "dtype": torch.float32},
                "half_lr": {"clip": None, "lr": lr / 2, "dtype": torch.float32},
                "float64": {"clip": None, "lr": lr, "dtype": torch.float64}}
    runs = {}
    for name, v in variants.items():
        print(f"continuation '{name}': {v}", flush=True)
        m = EGNNDynamics().to(device=device, dtype=v["dtype"])
        m.load_state_dict(snapshot["model"])
        o = torch.optim.Adam(m.parameters(), lr=lr, weight_decay=nbody.WEIGHT_DECAY)
        o.load_state_dict(snapshot["opt"])  # casts the Adam moments to the parameters' dtype
        for group in o.param_groups:
            group["lr"] = v["lr"]
        g = torch.Generator().manual_seed(0)
        g.set_state(snapshot["gen"])
        d = {k: _to(s, v["dtype"]) for k, s in data.items()}
        t1 = time.perf_counter()
        res = run_epochs(m, o, d, g, extra, v["clip"], snap_epochs + 1)
        res.update(clip=v["clip"], lr=v["lr"], dtype=str(v["dtype"]).replace("torch.", ""),
                   wall_s=time.perf_counter() - t1)
        runs[name] = res

    repro = {}  # largest relative difference of the validation curve from the full runs of nbody.py
    for ref_path in (ROOT / "benchmarks" / "results" / "nbody_seeds" / f"seed{args.seed}.json",
                     ROOT / "benchmarks" / "results" / "nbody_seeds" / f"egnn_seed{args.seed}.json"):
        if ref_path.exists() and not args.quick:
            ref_res = json.loads(ref_path.read_text())
            if ref_res.get("seed", 0) == args.seed and "egnn" in ref_res["models"]:
                ref = ref_res["models"]["egnn"]["history"]["val_mse"][:snap_epochs]
                repro[nbody._rel(ref_path)] = max(abs(a - b) / b for a, b in zip(pre["epochs"]["val_mse"], ref))
    pre["steps"] = {k: v[-10 * n_batches :] for k, v in pre["steps"].items()}  # the last 10 epochs only
    result = {
        "benchmark": "N-body EGNN divergence: continuations from one snapshot",
        "command": "python benchmarks/nbody_divergence.py " + " ".join(shlex.quote(a) for a in argv),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(**device_info(device)), "quick": args.quick, "seed": args.seed, "sizes": sizes,
        "snapshot_epoch": snap_epochs, "extra_epochs": extra, "steps_per_epoch": n_batches, "clip_value": clip,
        "clip_rule": "99th percentile of the step gradient norms of the 10 epochs before the snapshot",
        "reproduces_nbody_seed_run_max_rel_diff": repro,
        "pre_snapshot": pre, "continuations": runs, "total_wall_s": time.perf_counter() - t0,
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out} in {result['total_wall_s']:.0f} s", flush=True)
    return result


if __name__ == "__main__":
    main()
