"""Fixed inputs and evaluation for the shipped checkpoints (``benchmarks/results/*.pt``).

Used by ``tests/test_checkpoints.py`` and by ``python tests/checkpoint_cases.py`` which (re)writes
``tests/data/checkpoint_predictions.npz``: the predictions of every shipped checkpoint on fixed,
seeded inputs, in float64. The file was written *before* the constructor arguments were renamed
(one vocabulary across models), so the test proves that old checkpoints still load and predict the
same numbers. Do not regenerate it unless a model is meant to change.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Batch, Data

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STORED = Path(__file__).resolve().parent / "data" / "checkpoint_predictions.npz"

#: class name in a checkpoint -> "module:Class", and what kind of input it takes
CLASSES = {
    "SchNet": ("course_lib.models.schnet:SchNet", "molecule"),
    "NequIP": ("course_lib.models.nequip:NequIP", "molecule"),
    "PaiNN": ("course_lib.models.painn:PaiNN", "molecule"),
    "InvariantMPNN": ("course_lib.models.mpnn:InvariantMPNN", "particles"),
    "AbsolutePositionGNN": ("course_lib.models.baselines:AbsolutePositionGNN", "particles"),
    "EdgeVectorGNN": ("course_lib.models.baselines:EdgeVectorGNN", "particles"),
    "CoordinateMLP": ("course_lib.models.baselines:CoordinateMLP", "particles"),
    "EGNN": ("course_lib.models.egnn:EGNN", "box_dynamics"),
    "AbsoluteCoordinateGNN": ("course_lib.models.baselines:AbsoluteCoordinateGNN", "box_dynamics"),
    "EGNNDynamics": ("course_lib.models.nbody:EGNNDynamics", "nbody"),
    "TensorFieldNetwork": ("course_lib.models.tfn:TensorFieldNetwork", "nbody"),  # one vector per particle
}


def checkpoints() -> list[Path]:
    return sorted(RESULTS.glob("**/*.pt"))


def _spread(g: torch.Generator, n: int, d: int, side: float, min_dist: float) -> torch.Tensor:
    """n points in [0, side)^d, pairwise at least min_dist apart (rejection sampling, seeded)."""
    pts: list[torch.Tensor] = []
    while len(pts) < n:
        p = torch.rand(d, generator=g, dtype=torch.float64) * side
        if all(float((p - q).norm()) >= min_dist for q in pts):
            pts.append(p)
    return torch.stack(pts)


def inputs(kind: str) -> Batch:
    """A batch of two fixed graphs (float64) for one kind of model."""
    g = torch.Generator().manual_seed(1234)
    graphs = []
    for k in range(2):
        if kind == "molecule":
            z = torch.tensor([6, 6, 8, 1, 1, 1, 1, 1, 1] if k == 0 else [6, 8, 1, 1, 1, 1])
            pos = _spread(g, len(z), 3, 3.0, 1.0)
            graphs.append(Data(pos=pos, z=z))
        elif kind == "particles":
            n = 12 + 4 * k
            pos = torch.rand(n, 2, generator=g, dtype=torch.float64) * 10.0
            charge = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
            vel = torch.randn(n, 2, generator=g, dtype=torch.float64)
            graphs.append(Data(pos=pos, charge=charge, vel=vel, box=torch.full((1, 2), 10.0, dtype=torch.float64)))
        elif kind == "box_dynamics":
            n = 16
            pos = torch.rand(n, 2, generator=g, dtype=torch.float64) * 10.0
            charge = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
            vel = 0.5 * torch.randn(n, 2, generator=g, dtype=torch.float64)
            fixed = torch.zeros(n, dtype=torch.bool)
            fixed[: 3 * k] = True
            graphs.append(Data(pos=pos, charge=charge, vel=vel, fixed=fixed,
                               box=torch.full((1, 2), 10.0, dtype=torch.float64)))
        elif kind == "nbody":
            pos = torch.randn(5, 3, generator=g, dtype=torch.float64)
            vel = 0.5 * torch.randn(5, 3, generator=g, dtype=torch.float64)
            charge = torch.where(torch.rand(5, generator=g) < 0.5, -1.0, 1.0).double()
            graphs.append(Data(pos=pos, vel=vel, charge=charge))
        else:
            raise ValueError(kind)
    return Batch.from_data_list(graphs)


def build(payload: dict) -> torch.nn.Module:
    """The model of a checkpoint payload: class from :data:`CLASSES`, built from its config, weights loaded."""
    module, name = CLASSES[payload["model_class"]][0].split(":")
    cls = getattr(importlib.import_module(module), name)
    from course_lib.train import upgrade_config

    model = cls(**upgrade_config(cls, payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model


def predict(model: torch.nn.Module, kind: str) -> dict[str, np.ndarray]:
    """Predictions in float64: energies and forces (energy models) or the next state (dynamics)."""
    from course_lib.models import energy_and_forces

    model = model.double().eval()
    batch = inputs(kind)
    if kind in ("molecule", "particles"):
        energy, forces = energy_and_forces(model, batch)
        return {"energy": energy.detach().numpy(), "forces": forces.detach().numpy()}
    with torch.no_grad():
        out = model(batch)
    if isinstance(out, tuple):
        return {"pos_next": out[0].numpy(), "vel_next": out[1].numpy()}
    return {"pos_next": out.numpy()}


def predictions(load) -> dict[str, np.ndarray]:
    """``{"<file stem>/<quantity>": array}`` for every shipped checkpoint; ``load(path) -> (model, class name)``."""
    out = {}
    for path in checkpoints():
        model, name = load(path)
        for key, value in predict(model, CLASSES[name][1]).items():
            out[f"{path.relative_to(RESULTS).with_suffix('').as_posix()}/{key}"] = value
    return out


def _load_raw(path: Path):
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return build(payload), payload["model_class"]


if __name__ == "__main__":
    preds = predictions(_load_raw)
    STORED.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(STORED, **preds)
    print(f"wrote {len(preds)} arrays from {len(checkpoints())} checkpoints to {STORED}")
