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
``name``      ``str``      str      label of the molecule, e.g. ``"CH3CH2OH"`` (optional)
============  ===========  =======  =========================================================

A graph has either ``charge`` or ``z`` (or both). Atomic numbers come from element symbols with
:func:`symbols_to_z` (``make_graph(pos, z=["O", "H", "H"])`` does this for you), which refuses unknown
symbols. Molecular graphs (``z``, positions in Å) can be checked for overlapping atoms with
``validate(g, min_distance=MIN_ATOM_DISTANCE)`` (:func:`check_min_distance`); the molecular loaders of
:mod:`course_lib.datasets` do so for every graph they return. When graphs are batched by PyG, ``box`` becomes
``[num_graphs, d]`` and ``energy`` becomes ``[num_graphs]``: exactly what the models expect.
Energy models return ``[num_graphs]`` energies from ``model(batch)``.

:func:`validate` checks one stored graph; :func:`check_model_inputs` is the one check every model of
:mod:`course_lib.models` runs on what it receives (a graph or a batch): the same contract, with the
batched ``box`` (validated by :func:`course_lib.neighbors.check_box`), and only the fields the model
needs. :func:`fixed_mask` / :func:`fixed_flag` read the optional ``fixed`` field.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import torch
from torch_geometric.data import Data

from course_lib.graph import batch_of, num_graphs
from course_lib.neighbors import check_box

__all__ = [
    "CONTRACT",
    "ContractError",
    "MIN_ATOM_DISTANCE",
    "symbols_to_z",
    "check_min_distance",
    "validate",
    "validate_dataset",
    "ModelInputs",
    "check_model_inputs",
    "fixed_mask",
    "fixed_flag",
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


#: Closest allowed distance (Å) between two atoms of a molecule; anything closer is an overlap (the shortest
#: real bond, H-H, is 0.74 Å; the closest pair in the course's 500 K g2 conformers is H2 at 0.69 Å).
MIN_ATOM_DISTANCE = 0.5


def _element_symbols() -> list[str]:
    from ase.data import chemical_symbols

    return list(chemical_symbols[1:])  # H (z = 1) ... Og (z = 118); index 0 is ASE's dummy 'X'


def symbols_to_z(symbols) -> torch.Tensor:
    """Atomic numbers ``[N]`` (long) of a sequence of element symbols, e.g. ``["C", "O", "H"]`` -> ``[6, 8, 1]``.

    Raises ``ValueError`` naming the first bad entry and listing the valid symbols. Symbols are case-sensitive
    (``"Cl"``, not ``"CL"``); a single string such as ``"CH4"`` is refused rather than read letter by letter.
    """
    if isinstance(symbols, str):
        raise ValueError(f"symbols_to_z needs a sequence of element symbols, one per atom, e.g. ['C', 'H', 'H', "
                         f"'H', 'H'], not the single string {symbols!r}")
    table = _element_symbols()
    index = {s: k + 1 for k, s in enumerate(table)}
    z = []
    for k, s in enumerate(symbols):
        if not isinstance(s, str) or s not in index:
            hint = ""
            if isinstance(s, str):
                close = [t for t in table if t.lower() == s.strip().lower()]
                if close:
                    hint = f" (did you mean {close[0]!r}? symbols are case-sensitive)"
            raise ValueError(f"unknown element symbol {s!r} at position {k}{hint}; valid symbols are the "
                             f"{len(table)} elements {', '.join(table)}")
        z.append(index[s])
    return torch.tensor(z, dtype=torch.long)


def check_min_distance(pos, min_distance: float = MIN_ATOM_DISTANCE, z=None, name: str = "graph") -> float:
    """Refuse overlapping atoms: raise ``ValueError`` if two rows of ``pos`` ``[N, d]`` are closer than
    ``min_distance`` (the message names both atoms, with their elements when ``z`` ``[N]`` is given, and the
    distance). Returns the smallest distance (``inf`` for fewer than 2 atoms).
    """
    pos = torch.as_tensor(pos).detach().to(torch.float64)
    n = pos.shape[0]
    best, pair = math.inf, (0, 0)
    for start in range(0, n, 1024):  # rows in blocks: memory O(1024 N), not O(N^2), for large graphs
        d = torch.cdist(pos[start:start + 1024], pos)
        rows = torch.arange(d.shape[0])
        d[rows, rows + start] = math.inf
        k = int(torch.argmin(d))
        if float(d.view(-1)[k]) < best:
            best, pair = float(d.view(-1)[k]), (start + k // n, k % n)
    if best < min_distance:
        i, j = sorted(pair)
        if z is not None:
            table = _element_symbols()
            zz = [int(v) for v in torch.as_tensor(z).reshape(-1)]
            sym = [f" ({table[v - 1]})" if 1 <= v <= len(table) else "" for v in zz]
            who = f"atoms {i}{sym[i]} and {j}{sym[j]}"
        else:
            who = f"atoms {i} and {j}"
        raise ValueError(f"{name}: {who} overlap: {best:.3f} Å apart (less than {min_distance} Å); check for a "
                         "duplicated atom or positions that are not in Å")
    return best


def _dtype_ok(t: torch.Tensor, kind: str) -> bool:
    if kind == "float":
        return t.is_floating_point()
    if kind == "long":
        return t.dtype in (torch.int64, torch.int32)
    return t.dtype == torch.bool


def validate(data: Data, require: Iterable[str] = (), name: str = "graph", min_distance: float | None = None) -> Data:
    """Check one graph against :data:`CONTRACT`; return it unchanged or raise :class:`ContractError`.

    ``require`` lists fields that must be present besides ``pos`` (e.g. ``("energy", "forces")``).
    ``min_distance`` (Å, e.g. :data:`MIN_ATOM_DISTANCE`): also refuse two nodes closer than this
    (:func:`check_min_distance`); off by default, since only molecules in Å have a natural threshold.
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
    label = getattr(data, "name", None)
    if label is not None and not isinstance(label, str):
        raise ContractError(f"{name}: field 'name' must be a str (the molecule's label), got {type(label).__name__}")
    if min_distance is not None:
        try:
            check_min_distance(pos, min_distance, z=getattr(data, "z", None), name=name)
        except ValueError as err:
            raise ContractError(str(err)) from None
    return data


def validate_dataset(dataset: Iterable[Data], require: Iterable[str] = ()) -> None:
    """Validate every graph of a dataset (the error names the index of the first bad graph)."""
    require = tuple(require)
    for k, g in enumerate(dataset):
        validate(g, require=require, name=f"graph {k}")


class ModelInputs(NamedTuple):
    """What :func:`check_model_inputs` returns: the checked state of a graph or a batch."""

    pos: torch.Tensor  #: [N, d]
    vel: torch.Tensor | None  #: [N, d] or None
    box: torch.Tensor | None  #: [num_graphs, d] in the dtype of pos, or None (open space)
    batch: torch.Tensor  #: [N] graph index of every node
    num_graphs: int


def _shape(t) -> tuple | str | None:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else (None if t is None else type(t).__name__)


def check_model_inputs(data, need: Iterable[str] = (), dims: Iterable[int] = (2, 3), finite: bool = True,
                       who: str = "the model") -> ModelInputs:
    """The data contract as a model sees it: check a graph or a PyG batch, return :class:`ModelInputs`.

    Raises :class:`ContractError` (a ``ValueError``) that names the field and says what to do when
    ``pos`` is not ``[num_nodes, d]`` with ``d`` in ``dims`` (or, with ``finite``, holds NaN/inf), when a
    field of ``need`` (e.g. ``("charge",)``, ``("z",)``, ``("vel",)``) is missing, or when any present
    contract field (``vel``, ``charge``, ``z``, ``fixed``, ``box``) has the wrong shape (``z``: also
    the wrong dtype). ``who`` starts the message (e.g. ``"SchNet"`` or ``"use_speed=True"``).
    """
    dims = tuple(dims)
    pos = getattr(data, "pos", None)
    if not isinstance(pos, torch.Tensor) or pos.dim() != 2 or pos.shape[1] not in dims:
        d = dims[0] if len(dims) == 1 else " or ".join(map(str, dims))
        raise ContractError(f"{who} needs 'pos' [num_nodes, d] with d = {d}, got shape {_shape(pos)}; build graphs "
                            "with course_lib.data.make_graph")
    if finite and not bool(torch.isfinite(pos).all()):
        raise ContractError("'pos' contains NaN or inf")
    n, d = pos.shape
    for field in need:
        if getattr(data, field, None) is None:
            raise ContractError(f"{who} needs '{field}' {_spec(field)}: {_HOW[field]}")
    for field in ("vel", "charge", "z", "fixed"):
        t = getattr(data, field, None)
        if t is None:
            continue
        want = tuple({"N": n, "d": d}[k] for k in CONTRACT[field][0])
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != want:
            raise ContractError(f"'{field}' has shape {_shape(t)}, expected {list(want)}: {_HOW[field]}")
        if CONTRACT[field][1] == "long" and not _dtype_ok(t, "long"):
            raise ContractError(f"'{field}' must be an integer tensor of shape [{n}], got dtype {t.dtype}: "
                                f"{_HOW[field]}")
    G = num_graphs(data)
    box = getattr(data, "box", None)
    if box is not None:
        box = check_box(box, G, d).to(dtype=pos.dtype, device=pos.device)
    return ModelInputs(pos, getattr(data, "vel", None), box, batch_of(data), G)


def _spec(field: str) -> str:
    return "[" + ", ".join({"N": "num_nodes", "d": "d", "1": "1"}[k] for k in CONTRACT[field][0]) + "]"


def fixed_mask(data) -> torch.Tensor | None:
    """``data.fixed`` (crystal atoms that never move) as a bool column ``[N, 1]``, or None without it."""
    fixed = getattr(data, "fixed", None)
    return None if fixed is None else fixed.to(torch.bool).reshape(-1, 1)


def fixed_flag(data) -> torch.Tensor:
    """Node-type flag ``[N, 1]`` in the dtype of pos: 1 for crystal atoms, 0 otherwise (0 without ``fixed``)."""
    fixed = fixed_mask(data)
    if fixed is None:
        return data.pos.new_zeros(data.pos.shape[0], 1)
    return fixed.to(data.pos.dtype)


def make_graph(pos, dtype: torch.dtype | None = None, min_distance: float | None = None, **fields) -> Data:
    """Build a contract-conforming graph from arrays (numpy or torch) and validate it.

    Float fields get ``dtype`` (default: torch's default dtype); ``energy`` may be given as a Python
    float; ``box`` as ``[d]`` or ``[1, d]``; ``z`` as atomic numbers or as element symbols
    (``["C", "H", ...]``, see :func:`symbols_to_z`). ``min_distance``: see :func:`validate`.
    """
    out = {"pos": torch.as_tensor(pos, dtype=dtype or torch.get_default_dtype())}
    for k, v in fields.items():
        if v is None:
            continue
        if k == "name":
            out[k] = v
            continue
        if k == "z":
            if not isinstance(v, torch.Tensor) and any(isinstance(s, str) for s in v):
                v = symbols_to_z(v)
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
    return validate(Data(**out), min_distance=min_distance)


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: str | Path, manifest: str | Path | None = None, expected: str | None = None,
                    what_to_do: str = "regenerate it (see data/README.md) or re-download it") -> str:
    """Check a file's SHA-256 against ``expected`` or against its entry in a JSON ``manifest``
    (``{"files": {"name.npz": {"sha256": ...}}}``). Raise ``ValueError`` on mismatch, with both checksums and
    ``what_to_do`` (e.g. the command that regenerates the file)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; {what_to_do}")
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
            f"checksum mismatch for {path}: expected sha256 {expected}, got {got}; "
            f"the file is corrupt or was modified: {what_to_do}"
        )
    return got
