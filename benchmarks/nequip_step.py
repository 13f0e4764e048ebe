"""Time per training step of :class:`course_lib.models.nequip.NequIP` on ethanol (notebook 07).

One step = energies and forces (autograd with ``create_graph=True``) of a batch of 5 ethanol frames,
the loss ``MSE(E) + MSE(F)``, its backward pass and an Adam update. Each configuration is warmed up,
then timed as the median of ``--repeats`` steps: wall-clock time and the process's CPU time (on the
shared 2-core machine the CPU time of a 1-thread run is less disturbed by the other users).

    python benchmarks/nequip_step.py                         # l_max = 0, 1, 2 at the default config, 1 thread
    python benchmarks/nequip_step.py --layers 4 --threads 2  # the setting of the nequip-package reference
    python benchmarks/nequip_step.py --quick --out /tmp/s.json  # pipeline check

Writes ``benchmarks/results/nequip_step.json`` (median/min step times in ms per configuration, the
command and the machine), unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch_geometric.data import Batch

from course_lib.datasets import load_molecules
from course_lib.models import energy_and_forces
from course_lib.models.nequip import NequIP

HERE = Path(__file__).resolve().parent


def time_steps(model, batch, repeats: int, warmup: int) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    cuda = batch.pos.device.type == "cuda"
    times, cpu = [], []
    for k in range(warmup + repeats):
        if cuda:
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        E, F = energy_and_forces(model, batch, create_graph=True)
        loss = ((E - batch.energy) ** 2).mean() + ((F - batch.forces) ** 2).mean()
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        if k >= warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return times, cpu


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lmax", default="0,1,2")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--parity", default="true", choices=("true", "false"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--device", default="cpu", help="cpu or cuda, timed with torch.cuda.synchronize (default cpu; "
                    "the committed results in benchmarks/results/ are CPU results)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 2, 1
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here; use --device cpu")
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    graphs = load_molecules("ethanol", "train", dtype=dtype)
    batch = Batch.from_data_list(graphs[: args.batch]).to(device)
    results = []
    for l_max in (int(v) for v in args.lmax.split(",")):
        torch.manual_seed(0)
        model = NequIP(l_max=l_max, parity=args.parity == "true", hidden=args.features,
                       num_layers=args.layers).to(dtype)
        model.fit_energy_scale(graphs[:100])
        model.to(device)
        times, cpu = time_steps(model, batch, args.repeats, args.warmup)
        row = {"l_max": l_max, "median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times),
               "median_cpu_ms": 1e3 * statistics.median(cpu),
               "num_parameters": sum(p.numel() for p in model.parameters()),
               "hidden_irreps": str(model.irreps_hidden)}
        results.append(row)
        print(f"l_max={l_max}: median {row['median_ms']:.1f} ms, min {row['min_ms']:.1f} ms per step, "
              f"median CPU time {row['median_cpu_ms']:.1f} ms "
              f"({row['num_parameters']} parameters, {row['hidden_irreps']})", flush=True)
    out = {
        "what": "NequIP training step (energy + force loss, create_graph, Adam), batch of ethanol frames",
        "command": "python " + " ".join([os.path.relpath(__file__, HERE.parent), *(argv or sys.argv[1:])]),
        "config": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
                    "cuda": torch.cuda.get_device_name(0) if device.type == "cuda" else None},
        "results": results,
    }
    path = Path(args.out) if args.out else (Path(os.environ.get("TMPDIR", "/tmp")) / "nequip_step_quick.json"
                                            if args.quick else HERE / "results" / "nequip_step.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
