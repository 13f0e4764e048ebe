"""PyTorch-profiler tables of the training step (and inference) of a few models: where a step spends its time.

    python benchmarks/profile_steps.py --tag after           # NequIP l_max 1, SchNet, EGNN N-body at batch 32, 1 thread
    python benchmarks/profile_steps.py --models schnet --device cuda --tag gpu

The step is the one of ``benchmarks/throughput.py`` (same models, data and loss). After ``--warmup`` steps,
``--steps`` steps run under ``torch.profiler.profile`` (CPU activity, and CUDA on a GPU); the table of the
operators sorted by their own (self) CPU time, with call counts, is written to
``results/profiles/<model>_b<batch>_<tag>.txt`` together with the command, the machine and the number of
operator calls per step (the per-step overhead of a small model is mostly the number of operators).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import MODELS, check_device, load_graphs, loss_fn, make_model  # noqa: E402

HERE = Path(__file__).resolve().parent


def profile_model(name: str, device: torch.device, batch_size: int, steps: int, warmup: int, rows: int) -> str:
    from torch_geometric.data import Batch

    from course_lib.utils import machine_info

    dataset, kind = MODELS[name]
    graphs = load_graphs(dataset, max(batch_size, 100) if dataset != "trajectories" else batch_size)
    torch.manual_seed(0)
    model = make_model(name, graphs, quick=False).to(device)
    batch = Batch.from_data_list(graphs[:batch_size]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss = loss_fn(kind)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loss(model, batch).backward()
        opt.step()

    for _ in range(warmup):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    averages = prof.key_averages()
    calls = sum(e.count for e in averages) / steps
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    head = [f"# {name}, training step, batch {batch_size}, {device}, {torch.get_num_threads()} thread(s), "
            f"{steps} profiled steps after {warmup} warm-up steps",
            f"# command: python benchmarks/profile_steps.py {' '.join(sys.argv[1:])}",
            f"# machine: {machine_info()}",
            f"# operator calls per step: {calls:.0f}; sorted by {sort}", ""]
    return "\n".join(head) + averages.table(sort_by=sort, row_limit=rows) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="nequip_l1,schnet,egnn_nbody")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rows", type=int, default=30)
    ap.add_argument("--tag", default="now")
    ap.add_argument("--out", default=str(HERE / "results" / "profiles"))
    args = ap.parse_args(argv)
    device = check_device(args.device)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        text = profile_model(name, device, args.batch, args.steps, args.warmup, args.rows)
        path = out / f"{name}_b{args.batch}_{args.tag}.txt"
        path.write_text(text)
        print(text.splitlines()[3], "->", os.path.relpath(path))


if __name__ == "__main__":
    main()
