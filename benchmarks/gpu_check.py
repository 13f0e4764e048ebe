"""Correctness on a device before timing it: the same weights give the same numbers there as on the CPU.

    python benchmarks/gpu_check.py                 # --device cuda (part of benchmarks/gpu_run.sh)
    python benchmarks/gpu_check.py --device cpu    # the pipeline, on the CPU against itself

For every model of ``benchmarks/throughput.py`` (float32, batch of 5, untrained weights, seed 0): the outputs
(energies and forces ``-dE/dpos`` for energy models, predicted positions otherwise) on ``--device`` against the
CPU, as the largest difference relative to the largest value; and, on ``--device``, the rotation equivariance
of NequIP's (l_max 1) forces, ``F(R x) = R F(x)``. Prints one line per check and exits with 1 if one fails
(tolerance ``--tol``, default 1e-4: float32 on different hardware).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch_geometric.data import Batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import MODELS, check_device, load_graphs, make_model  # noqa: E402


def outputs(model, batch, kind: str) -> list[torch.Tensor]:
    from course_lib.models import energy_and_forces

    if kind == "energy":
        return [t.detach().cpu() for t in energy_and_forces(model, batch, create_graph=False)]
    with torch.no_grad():
        out = model(batch)
    return [t.cpu() for t in (out if isinstance(out, tuple) else (out,))]


def rel_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max() / y.abs().max().clamp_min(1e-12)) for x, y in zip(a, b))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args(argv)
    device = check_device(args.device)
    failed = []
    for name, (dataset, kind) in MODELS.items():
        graphs = load_graphs(dataset, 100 if dataset != "trajectories" else 5)
        torch.manual_seed(0)
        model = make_model(name, graphs, quick=False).eval()
        batch = Batch.from_data_list(graphs[:5])
        ref = outputs(model, batch, kind)
        got = outputs(model.to(device), batch.to(device), kind)
        err = rel_diff(got, ref)
        ok = err < args.tol
        failed += [] if ok else [name]
        print(f"{name:14s} {device} vs cpu: max relative difference {err:.1e} {'ok' if ok else 'FAILED'}", flush=True)
    # rotation equivariance of the forces on the device
    from course_lib.models import energy_and_forces

    graphs = load_graphs("molecules", 100)
    torch.manual_seed(0)
    model = make_model("nequip_l1", graphs, quick=False).eval().to(device)
    batch = Batch.from_data_list(graphs[:5]).to(device)
    R = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1)))[0].to(device)
    _, F = energy_and_forces(model, batch, create_graph=False)
    rotated = batch.clone()
    rotated.pos = batch.pos @ R.T
    _, F_rot = energy_and_forces(model, rotated, create_graph=False)
    err = float((F_rot - F @ R.T).abs().max() / F.abs().max())
    ok = err < args.tol
    failed += [] if ok else ["nequip_l1 equivariance"]
    print(f"nequip_l1 forces on {device}: |F(Rx) - R F(x)| / |F| = {err:.1e} {'ok' if ok else 'FAILED'}")
    print("FAILED: " + ", ".join(failed) if failed else "all checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
