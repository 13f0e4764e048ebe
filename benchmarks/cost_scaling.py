"""What equivariance costs: time of one interaction layer against l_max, for three ways of using directions.

    OMP_NUM_THREADS=1 python benchmarks/cost_scaling.py            # -> results/cost_scaling.json
    python benchmarks/cost_scaling.py --quick                      # pipeline check (CI): tiny sizes, temp folder
    python benchmarks/cost_scaling.py --device cuda                # the layers on the GPU

The paths (F = ``--hidden`` channels of every l = 0..l_max, the same for all):

- ``tp_full``: e3nn's tensor product with *every* path ``l_1 (x) l_2 -> l_3`` (all ``l_3`` from ``|l_1 - l_2|``
  to ``l_1 + l_2``, both parities kept), per-edge weights from the radial MLP, sum over neighbours: the
  Clebsch-Gordan convolution without truncation (``ConvolutionBlock`` with every output irrep kept,
  ``fused=False``);
- ``tp_uvu``: the same convolution truncated to ``l_3 <= l_max`` (NequIP's "uvu" path,
  ``course_lib.models.nequip.ConvolutionBlock``, ``fused=False``: e3nn's implementation);
- ``painn``: PaiNN's message + update blocks (``course_lib.models.painn``): Cartesian vectors, l_max = 1 only.

Each is a forward pass of one layer on fixed random features (the neighbour list, the spherical harmonics and
the radial basis are computed once, outside the timer: they are shared by all layers of a model). Systems:
periodic boxes of water molecules on a cubic lattice (``k^3`` molecules, spacing 3.1 A: liquid density),
cutoff 3 A (so that the smallest box, 6.2 A, admits the minimum image), neighbour lists by
:func:`course_lib.neighbors.radius_graph`. One torch thread; ``--repeats`` timed calls after ``--warmup``
calls, median. Fitted exponent: slope of log(time) against log(l_max + 1) per repeat (each repeat is one
replicate), mean ± s.e. over the repeats (:func:`course_lib.stats.log_slope`), for the largest system; the
laws to compare with: ``(l_max + 1)^4`` (a Clebsch-Gordan product per channel) and ``(l_max + 1)^2`` (the
feature dimension). The JSON records the command, the machine and its load, and the device: ``--device cpu`` (the
default; the committed results are CPU results) or ``cuda`` (inputs drawn on the CPU as before, then moved; every
timed call between two ``torch.cuda.synchronize()``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PATHS = ("tp_full", "tp_uvu", "painn")


def water_box(k: int, spacing: float = 3.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``k^3`` water molecules on a cubic lattice in a periodic cube of side ``k * spacing`` (A), each with a
    random orientation: (pos [3 k^3, 3], z [3 k^3], box [1, 3]), float64."""
    from course_lib.symmetry import random_rotations

    g = torch.Generator().manual_seed(seed)
    b, theta = 0.9572, math.radians(104.52)
    mol = torch.tensor([[0.0, 0.0, 0.0], [b, 0.0, 0.0], [b * math.cos(theta), b * math.sin(theta), 0.0]],
                       dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(*[torch.arange(k, dtype=torch.float64)] * 3, indexing="ij"), -1).reshape(-1, 3)
    R = random_rotations(len(grid), generator=g)
    pos = (grid[:, None, :] + 0.25) * spacing + torch.einsum("mab,nb->mna", R, mol)
    pos = torch.remainder(pos.reshape(-1, 3), k * spacing)
    z = torch.tensor([8, 1, 1]).repeat(len(grid))
    return pos, z, torch.full((1, 3), k * spacing, dtype=torch.float64)


def _layer(path: str, l_max: int, hidden: int, num_basis: int):
    """(module, call(inputs) -> output) of one interaction layer of ``path``."""
    if path == "painn":
        from course_lib.models.painn import PaiNNMessage, PaiNNUpdate

        message, update = PaiNNMessage(hidden, num_basis), PaiNNUpdate(hidden)

        def call(x):
            ds, dv = message(x["s"], x["v"], x["rbf"], x["f_c"], x["unit"], x["edge_index"])
            return update(x["s"] + ds, x["v"] + dv)

        return torch.nn.ModuleList([message, update]), call
    from e3nn import o3

    from course_lib.models.nequip import ConvolutionBlock, default_hidden_irreps

    irreps_h = default_hidden_irreps(hidden, l_max)
    irreps_sh = o3.Irreps.spherical_harmonics(l_max)
    keep = irreps_h if path == "tp_uvu" else o3.Irreps([(1, (l, p)) for l in range(2 * l_max + 1) for p in (1, -1)])
    conv = ConvolutionBlock(irreps_h, irreps_sh, keep, num_basis=num_basis, fused=False)
    return conv, lambda x: conv(x["h"], x["sh"], x["rbf"], x["edge_index"])


def _inputs(k: int, l_max: int, hidden: int, num_basis: int, cutoff: float) -> dict:
    from e3nn import o3

    from course_lib.models.radial import BesselRBF, cosine_cutoff
    from course_lib.neighbors import radius_graph

    pos, _, box = water_box(k)
    edge_index, edge_vec = radius_graph(pos, cutoff, box=box)
    pos, edge_vec = pos.float(), edge_vec.float()
    r = edge_vec.norm(dim=-1)
    g = torch.Generator().manual_seed(k)
    n = pos.shape[0]
    dim_h = hidden * (l_max + 1) ** 2
    return {"edge_index": edge_index, "rbf": BesselRBF(num_basis, cutoff, trainable=False)(r),
            "sh": o3.spherical_harmonics(list(range(l_max + 1)), edge_vec, True, normalization="component"),
            "h": torch.randn(n, dim_h, generator=g), "s": torch.randn(n, hidden, generator=g),
            "v": torch.randn(n, 3, hidden, generator=g), "f_c": cosine_cutoff(r, cutoff),
            "unit": edge_vec / r[:, None], "num_atoms": n, "num_edges": edge_index.shape[1]}


@torch.no_grad()
def time_layer(path: str, k: int, l_max: int, hidden: int, num_basis: int, cutoff: float, repeats: int,
               warmup: int, device="cpu") -> dict:
    from course_lib.utils import synchronize

    torch.manual_seed(0)
    module, call = _layer(path, l_max, hidden, num_basis)
    module.to(device)
    x = {key: v.to(device) if torch.is_tensor(v) else v
         for key, v in _inputs(k, l_max, hidden, num_basis, cutoff).items()}
    times = []
    for i in range(warmup + repeats):
        synchronize(device)
        t0 = time.perf_counter()
        call(x)
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {"path": path, "k": k, "l_max": l_max, "num_atoms": x["num_atoms"], "num_edges": x["num_edges"],
            "num_parameters": sum(p.numel() for p in module.parameters()),
            "times_ms": [1e3 * t for t in times], "median_ms": 1e3 * statistics.median(times)}


def fit_exponents(rows: list[dict], k: int) -> dict:
    """Slope of log(time) vs log(l_max + 1) at box size ``k``, per path with >= 2 values of l_max: mean, s.e."""
    from course_lib.stats import log_slope

    out = {}
    for path in PATHS:
        sel = sorted((r for r in rows if r["path"] == path and r["k"] == k), key=lambda r: r["l_max"])
        for name, part in (("all", sel), ("l_max>=1", [r for r in sel if r["l_max"] >= 1])):
            if len(part) < 2:
                continue
            reps = min(len(r["times_ms"]) for r in part)
            per_rep = [[r["times_ms"][i] for r in part] for i in range(reps)]
            s = log_slope([r["l_max"] + 1 for r in part], per_rep)
            out[f"{path} ({name})"] = {"mean": s.mean, "se": s.se, "l_max": [r["l_max"] for r in part]}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (pipeline check); writes to a temp folder")
    ap.add_argument("--boxes", default="2,3,5,7", help="k of the k^3-molecule water boxes (3 k^3 atoms)")
    ap.add_argument("--lmax", default="0,1,2,3")
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--num-basis", type=int, default=8)
    ap.add_argument("--cutoff", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cpu", help="where the layers run: cpu or cuda (default cpu; the committed "
                    "results in benchmarks/results/ are CPU results)")
    args = ap.parse_args(argv)
    from course_lib.utils import check_device, device_info, machine_info

    device = str(check_device(args.device))  # fails fast, before anything is timed
    if args.quick:
        args.boxes, args.lmax, args.hidden, args.repeats, args.warmup = "2", "0,1", 4, 2, 1
    torch.set_num_threads(1)
    boxes = [int(b) for b in args.boxes.split(",")]
    lmaxes = [int(lm) for lm in args.lmax.split(",")]
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp()) / "cost_scaling.json" if args.quick
                                           else HERE / "results" / "cost_scaling.json")
    start, machine = time.perf_counter(), machine_info(**device_info(device))  # the load average at the start
    rows = []
    for k in boxes:
        for path in PATHS:
            for l_max in ([1] if path == "painn" else lmaxes):
                row = time_layer(path, k, l_max, args.hidden, args.num_basis, args.cutoff, args.repeats, args.warmup,
                                 device)
                rows.append(row)
                print(f"{path:8s} k={k} N={row['num_atoms']:5d} E={row['num_edges']:6d} l_max={l_max}: "
                      f"{row['median_ms']:9.2f} ms", flush=True)
    command = "python benchmarks/cost_scaling.py " + " ".join(sys.argv[1:] if argv is None else argv)
    res = {"benchmark": "cost_scaling", "command": command,
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": args.quick,
           "machine": machine, "config": {"hidden": args.hidden, "num_basis": args.num_basis,
                                                  "cutoff": args.cutoff, "repeats": args.repeats,
                                                  "warmup": args.warmup, "boxes": boxes, "l_max": lmaxes,
                                                  "threads": 1, "dtype": "float32", "timed": "forward of one layer"},
           "rows": rows, "exponents": fit_exponents(rows, max(boxes)),
           "laws": {"clebsch_gordan": 4, "feature_dimension": 2}, "total_wall_s": time.perf_counter() - start}
    res["machine"]["load_average_end"] = list(__import__("os").getloadavg())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res["exponents"], indent=1))
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
