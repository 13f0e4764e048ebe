"""A/B of two versions of ``course_lib/models/nequip.py`` in ONE process, interleaved (for a loaded machine).

    mkdir -p /tmp/before && git archive b789ccd course_lib | tar -x -C /tmp/before
    python benchmarks/ab_nequip.py --old /tmp/before/course_lib/models/nequip.py --config matched --batch 32

The old file is imported under another module name (it uses this checkout's neighbour list and helpers, so only
the model file differs); both models get the same seed and energy scale, and their training steps
(``benchmarks/throughput.py``'s energy + force loss, Adam) alternate in blocks of 3 timed steps (after one
warm-up step per block) for ``--rounds`` rounds: both see the same load. Prints the median CPU time of each and
the ratio new / old. ``--config``: ``matched`` (``nequip_compare.CONFIG``), ``l0``, ``l1``, ``l2`` (defaults).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch
from torch_geometric.data import Batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import _nequip_compare_config, load_graphs, loss_fn  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="path of the other nequip.py")
    ap.add_argument("--config", default="matched", choices=("matched", "l0", "l1", "l2"))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    args = ap.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here; use --device cpu")
    import course_lib.models.nequip as new

    spec = importlib.util.spec_from_file_location("old_nequip", args.old)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    torch.set_num_threads(1)
    graphs = load_graphs("molecules", 100)
    config = _nequip_compare_config() if args.config == "matched" else {"l_max": int(args.config[1])}
    batch = Batch.from_data_list(graphs[:args.batch]).to(args.device)
    loss = loss_fn("energy")
    models = {}
    for name, module in (("old", old), ("new", new)):
        torch.manual_seed(0)
        model = module.NequIP(**config)
        model.fit_energy_scale(graphs)
        model.to(args.device)
        models[name] = (model, torch.optim.Adam(model.parameters(), 1e-4))
    times: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(args.rounds):
        for name, (model, opt) in models.items():
            for k in range(4):
                c = time.process_time()
                opt.zero_grad()
                loss(model, batch).backward()
                opt.step()
                if k:
                    times[name].append(time.process_time() - c)
    res = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    res["ratio_new_over_old"] = res["new"] / res["old"]
    print(f"NequIP {args.config}, batch {args.batch}, 1 thread, {3 * args.rounds} steps each: old {res['old']:.1f} ms, "
          f"new {res['new']:.1f} ms CPU (median); new / old = {res['ratio_new_over_old']:.2f}")
    return res


if __name__ == "__main__":
    main()
