"""The data contract of the course, written once and checked by :func:`validate`.

Every dataset in the course is a list of ``torch_geometric.data.Data`` objects with these fields
(``N`` = number of nodes in the graph, ``d`` = spatial dimension, 2 or 3):

============  ===========  =======  =========================================================
field         shape        dtype    meaning
============  ===========  =======  =========================================================
``pos``       ``[N, d]``   float    positions (required)
``vel``       ``[N, d]``   float    velocities (optional)
``charge``    ``[N]``      float    particle charges (particle systems)
``z``         ``[N]``      long     atomic numbers >= 1 (molecules)
``box``       ``[1, d]``   float    side lengths of the periodic box (periodic systems only)
``fixed``     ``[N]``      bool     True for atoms that never move (crystal atoms)
``energy``    ``[1]``      float    potential energy of the whole graph
``forces``    ``[N, d]``   float    forces, ``-dE/dpos``
============  ===========  =======  =========================================================

A graph has either ``charge`` or ``z`` (or both). When graphs are batched by PyG, ``box`` becomes
``[num_graphs, d]`` and ``energy`` becomes ``[num_graphs]``: exactly what the models expect.
Energy models return ``[num_graphs]`` energies from ``model(batch)``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from torch_geometric.data import Data

__all__ = [
    "CONTRACT",
    "ContractError",
    "validate",
    "validate_dataset",
    "make_graph",
    "sha256_file",
    "verify_checksum",
]


class ContractError(ValueError):
    """Raised when a graph violates the data contract; the message names the field."""


# field -> (shape spec, dtype kind); "N" = nodes, "d" = dimension, "1" = literal 1
CONTRACT: dict[str, tuple[tuple[str, ...], str]] = {
    "pos": (("N", "d"), "float"),
    "vel": (("N", "d"), "float"),
    "charge": (("N",), "float"),
    "z": (("N",), "long"),
    "box": (("1", "d"), "float"),
    "fixed": (("N",), "bool"),
    "energy": (("1",), "float"),
    "forces": (("N", "d"), "float"),
}

_HOW = {
    "pos": "store positions as a float tensor of shape [num_nodes, d] with d = 2 or 3",
    "vel": "store velocities with the same shape as pos",
    "charge": "store one float charge per node, shape [num_nodes]",
    "z": "store atomic numbers as a long tensor of shape [num_nodes] (values >= 1)",
    "box": "store the periodic box side lengths as a float tensor of shape [1, d]",
    "fixed": "store a bool tensor of shape [num_nodes] (True = crystal atom that never moves)",
    "energy": "store the total energy as a float tensor of shape [1]",
    "forces": "store forces with the same shape as pos",
}


def _dtype_ok(t: torch.Tensor, kind: str) -> bool:
    if kind == "float":
        return t.is_floating_point()
    if kind == "long":
        return t.dtype in (torch.int64, torch.int32)
    return t.dtype == torch.bool


def validate(data: Data, require: Iterable[str] = (), name: str = "graph") -> Data:
    """Check one graph against :data:`CONTRACT`; return it unchanged or raise :class:`ContractError`.

    ``require`` lists fields that must be present besides ``pos`` (e.g. ``("energy", "forces")``).
    """
    if not isinstance(data, Data):
        raise ContractError(f"{name}: expected a torch_geometric.data.Data, got {type(data).__name__}")
    for field in ("pos", *require):
        if getattr(data, field, None) is None:
            raise ContractError(f"{name}: required field '{field}' is missing ({_HOW.get(field, '')})")
    pos = data.pos
    if not isinstance(pos, torch.Tensor) or pos.dim() != 2 or pos.shape[1] not in (2, 3):
        shape = tuple(pos.shape) if isinstance(pos, torch.Tensor) else type(pos).__name__
        raise ContractError(f"{name}: field 'pos' has shape {shape}; {_HOW['pos']}")
    n, d = pos.shape
    if getattr(data, "charge", None) is None and getattr(data, "z", None) is None:
        raise ContractError(f"{name}: needs a node type: field 'charge' (particles) or 'z' (molecules)")
    sizes = {"N": n, "d": d, "1": 1}
    for field, (spec, kind) in CONTRACT.items():
        t = getattr(data, field, None)
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise ContractError(f"{name}: field '{field}' must be a torch.Tensor, got {type(t).__name__}")
        want = tuple(sizes[s] for s in spec)
        if tuple(t.shape) != want:
            raise ContractError(
                f"{name}: field '{field}' has shape {tuple(t.shape)}, expected {want}; {_HOW[field]}"
            )
        if not _dtype_ok(t, kind):
            raise ContractError(f"{name}: field '{field}' has dtype {t.dtype}, expected {kind}; {_HOW[field]}")
        if kind == "float" and not torch.isfinite(t).all():
            raise ContractError(f"{name}: field '{field}' contains NaN or inf values")
    if getattr(data, "z", None) is not None and (data.z < 1).any():
        raise ContractError(f"{name}: field 'z' must hold atomic numbers >= 1, got min {int(data.z.min())}")
    if getattr(data, "box", None) is not None and (data.box <= 0).any():
        raise ContractError(f"{name}: field 'box' must hold positive side lengths, got {data.box.tolist()}")
    return data


def validate_dataset(dataset: Iterable[Data], require: Iterable[str] = ()) -> None:
    """Validate every graph of a dataset (the error names the index of the first bad graph)."""
    require = tuple(require)
    for k, g in enumerate(dataset):
        validate(g, require=require, name=f"graph {k}")


def make_graph(pos, dtype: torch.dtype | None = None, **fields) -> Data:
    """Build a contract-conforming graph from arrays (numpy or torch) and validate it.

    Float fields get ``dtype`` (default: torch's default dtype); ``energy`` may be given as a Python
    float; ``box`` as ``[d]`` or ``[1, d]``.
    """
    out = {"pos": torch.as_tensor(pos, dtype=dtype or torch.get_default_dtype())}
    for k, v in fields.items():
        if v is None:
            continue
        if k == "z":
            t = torch.as_tensor(v, dtype=torch.long)
        elif k == "fixed":
            t = torch.as_tensor(v, dtype=torch.bool)
        else:
            t = torch.as_tensor(v)
            if t.is_floating_point() or k in ("charge", "energy", "box", "vel", "forces"):
                t = t.to(out["pos"].dtype)
        if k == "energy":
            t = t.reshape(1)
        if k == "box":
            t = t.reshape(1, -1)
        out[k] = t
    return validate(Data(**out))


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: str | Path, manifest: str | Path | None = None, expected: str | None = None) -> str:
    """Check a file's SHA-256 against ``expected`` or against its entry in a JSON ``manifest``
    (``{"files": {"name.npz": {"sha256": ...}}}``). Raise ``ValueError`` with what to do on mismatch."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; regenerate it (see data/README.md)")
    if expected is None:
        if manifest is None:
            raise ValueError("give either expected= or manifest=")
        entries = json.loads(Path(manifest).read_text())["files"]
        if path.name not in entries:
            raise ValueError(f"{path.name} is not listed in the manifest {manifest}")
        expected = entries[path.name]["sha256"]
    got = sha256_file(path)
    if got != expected:
        raise ValueError(
            f"checksum mismatch for {path}: expected sha256 {expected[:16]}..., got {got[:16]}...; "
            "the file is corrupt or was modified: regenerate it (see data/README.md) or re-download it"
        )
    return got
