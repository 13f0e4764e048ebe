"""The one symmetry-check API of the course.

Library tests, notebook cells, CI and the autograder all check symmetry with this module, so a
student sees the same numbers everywhere.

Three layers:

1. **Group elements** as float64 matrices: random elements of SO(d) and O(d) (reflections are
   explicit: :func:`random_orthogonal` with ``det=-1`` always returns an improper element),
   the point group of the square/cubic lattice, cyclic and dihedral groups, permutations.
2. **Transforms** (:class:`Transform`) act on a whole graph or batch: ``x -> R x + t`` for
   positions, ``v -> R v`` for vectors, permutation of nodes for every node field, relabelling of
   ``edge_index``, and wrapping back into the periodic box when the graph has one. Each field
   transforms according to its *kind* (see :data:`FIELD_KINDS`); an unknown node field is an error,
   never a silent guess.
3. **Checks**: :func:`equivariance_error` returns the error *value* of ``fn(g.x)`` against
   ``g.fn(x)``; :func:`assert_equivariant` raises with a message naming the symmetry and the error,
   and returns a deterministic one-line summary for notebooks; :func:`find_symmetry_breaking`
   reports the first submodule of a model whose output breaks the symmetry (forward hooks).

Conventions: a transform is computed in float64 and cast back to the input dtype; the error is
``max |fn(g.x) - g.fn(x)| / max(1, max |g.fn(x)|)`` (absolute for O(1) outputs, relative for large
ones); positions in a periodic box are compared with the minimum-image convention.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from course_lib.graph import batch_of, num_graphs
from course_lib.neighbors import minimum_image, wrap_into_box

__all__ = [
    "FIELD_KINDS",
    "OUTPUT_KINDS",
    "Transform",
    "random_rotation",
    "random_rotations",
    "random_orthogonal",
    "rotation_matrix_2d",
    "rotation_matrix_3d",
    "reflection_matrix",
    "lattice_point_group",
    "cyclic_group",
    "dihedral_group",
    "permutation_matrix",
    "check_group_axioms",
    "identity",
    "rotation",
    "reflection",
    "orthogonal",
    "inversion",
    "translation",
    "periodic_translation",
    "permutation",
    "box_symmetry",
    "standard_transforms",
    "random_augmentation",
    "default_tolerance",
    "equivariance_error",
    "assert_equivariant",
    "assert_not_equivariant",
    "find_symmetry_breaking",
]

# --------------------------------------------------------------------------------------------
# Kinds of fields: how each transforms under g = (R, t, perm)
# --------------------------------------------------------------------------------------------

#: kind -> rule. "node" kinds are permuted; "edge" kinds keep the edge order (edge_index is relabelled).
OUTPUT_KINDS = {
    "position": "x -> R x + t, wrapped into the box if there is one; nodes permuted",
    "vector": "v -> R v; nodes permuted (velocities, forces)",
    "pseudovector": "v -> det(R) R v; nodes permuted (angular momenta, cross products)",
    "scalar": "unchanged; nodes permuted (charges, atomic numbers, per-atom energies)",
    "pseudoscalar": "s -> det(R) s; nodes permuted",
    "invariant": "unchanged, graph-level (energies, box)",
    "edge_index": "node labels relabelled by the permutation",
    "edge_vector": "v -> R v, edge order kept",
    "edge_scalar": "unchanged, edge order kept",
}

#: Default kind of every field used in the course. Pass ``field_kinds={...}`` for others.
FIELD_KINDS: dict[str, str] = {
    "pos": "position",
    "vel": "vector",
    "forces": "vector",
    "acc": "vector",
    "charge": "scalar",
    "z": "scalar",
    "x": "scalar",
    "h": "scalar",
    "mass": "scalar",
    "fixed": "scalar",
    "node_type": "scalar",
    "batch": "scalar",
    "energy": "invariant",
    "box": "invariant",
    "y": "invariant",
    "ptr": "invariant",
    "edge_index": "edge_index",
    "edge_vec": "edge_vector",
    "edge_attr": "edge_scalar",
    "edge_weight": "edge_scalar",
    "frame_dt": "invariant",
    "dt": "invariant",
    "traj_pos": "position",
    "traj_vel": "vector",
    "target_pos": "position",
    "target_vel": "vector",
}

_NODE_KINDS = {"position", "vector", "pseudovector", "scalar", "pseudoscalar"}
_ALIASES = {"graph": "invariant", "energy": "invariant", "forces": "vector", "velocity": "vector"}


def _kind(kind: str) -> str:
    kind = _ALIASES.get(kind, kind)
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {sorted(OUTPUT_KINDS)}")
    return kind


# --------------------------------------------------------------------------------------------
# Group elements (float64 matrices)
# --------------------------------------------------------------------------------------------


def _gen(generator: torch.Generator | int | None) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    return torch.Generator().manual_seed(0 if generator is None else int(generator))


def random_orthogonal(d: int, det: int | None = None, generator=None) -> torch.Tensor:
    """A Haar-random element of O(d) as a float64 ``[d, d]`` matrix.

    ``det=+1`` gives a rotation (SO(d)), ``det=-1`` an improper element (a rotation followed by a
    reflection, always), ``None`` either with probability 1/2.
    """
    g = _gen(generator)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r))  # Haar measure: fix the sign ambiguity of QR
    if det is None:
        det = 1 if torch.rand((), generator=g).item() < 0.5 else -1
    if det not in (1, -1):
        raise ValueError(f"det must be +1, -1 or None, got {det}")
    if torch.linalg.det(q).item() * det < 0:
        q[:, 0] = -q[:, 0]  # flip one axis: an explicit reflection
    return q


def random_rotation(d: int, generator=None) -> torch.Tensor:
    """A Haar-random rotation of SO(d) (det = +1), float64 ``[d, d]``."""
    return random_orthogonal(d, det=1, generator=generator)


def random_rotations(n: int, generator=None, dtype=torch.float64) -> torch.Tensor:
    """``n`` independent Haar-random rotations of SO(3), ``[n, 3, 3]`` (batched QR).

    Same construction as :func:`random_orthogonal`, for many matrices at once (data augmentation
    draws one rotation per training sample).
    """
    g = _gen(generator)
    a = torch.randn(n, 3, 3, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    flip = torch.linalg.det(q) < 0
    q[flip, :, 0] = -q[flip, :, 0]
    return q.to(dtype)


def rotation_matrix_2d(theta: float) -> torch.Tensor:
    """Counter-clockwise rotation by ``theta`` radians, float64 ``[2, 2]``."""
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


def rotation_matrix_3d(axis: Sequence[float], angle: float) -> torch.Tensor:
    """Rotation by ``angle`` about ``axis`` (Rodrigues' formula), float64 ``[3, 3]``."""
    n = torch.as_tensor(axis, dtype=torch.float64)
    n = n / n.norm()
    K = torch.tensor([[0, -n[2], n[1]], [n[2], 0, -n[0]], [-n[1], n[0], 0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def reflection_matrix(normal: Sequence[float]) -> torch.Tensor:
    """Mirror through the hyperplane orthogonal to ``normal``: ``I - 2 n n^T`` (det = -1)."""
    n = torch.as_tensor(normal, dtype=torch.float64)
    n = n / n.norm()
    return torch.eye(len(n), dtype=torch.float64) - 2 * torch.outer(n, n)


def lattice_point_group(d: int) -> list[torch.Tensor]:
    """All signed permutation matrices of size d: the point group of the square (d=2, 8 elements:
    4 rotations by multiples of 90 degrees and 4 reflections) or of the cube (d=3, 48 elements).

    These are the rotations/reflections that map a square/cubic periodic box onto itself.
    """
    out = []
    for perm in itertools.permutations(range(d)):
        for signs in itertools.product((1.0, -1.0), repeat=d):
            m = torch.zeros(d, d, dtype=torch.float64)
            for row, (col, s) in enumerate(zip(perm, signs)):
                m[row, col] = s
            out.append(m)
    return out


def cyclic_group(n: int) -> list[torch.Tensor]:
    """C_n: the n rotations of the plane by multiples of 360/n degrees (C_2 ~ Z_2, C_4: square)."""
    return [rotation_matrix_2d(2 * math.pi * k / n) for k in range(n)]


def dihedral_group(n: int) -> list[torch.Tensor]:
    """D_n: the 2n symmetries of a regular n-gon (n rotations, n reflections)."""
    mirror = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    rots = cyclic_group(n)
    return rots + [r @ mirror for r in rots]


def permutation_matrix(perm: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """``P`` with ``(P @ x)[k] = x[perm[k]]``, float64 ``[n, n]``."""
    perm = torch.as_tensor(perm, dtype=torch.long)
    return torch.eye(len(perm), dtype=torch.float64)[perm]


def check_group_axioms(elements: Sequence[torch.Tensor], atol: float = 1e-9) -> dict[str, bool]:
    """Check numerically that a finite set of matrices is a group under matrix multiplication.

    Returns ``{"closure", "identity", "inverses", "associativity"}`` -> bool.
    """
    els = [torch.as_tensor(e, dtype=torch.float64) for e in elements]

    def index(m):
        for k, e in enumerate(els):
            if torch.allclose(m, e, atol=atol):
                return k
        return None

    eye = torch.eye(els[0].shape[0], dtype=torch.float64)
    closure = all(index(a @ b) is not None for a in els for b in els)
    has_identity = index(eye) is not None
    inverses = all(any(torch.allclose(a @ b, eye, atol=atol) for b in els) for a in els)
    assoc = all(torch.allclose((a @ b) @ c, a @ (b @ c), atol=atol) for a in els[:6] for b in els[:6] for c in els[:6])
    return {"closure": closure, "identity": has_identity, "inverses": inverses, "associativity": assoc}


# --------------------------------------------------------------------------------------------
# Transforms acting on graphs
# --------------------------------------------------------------------------------------------


def _per_node(values: torch.Tensor, batch: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast per-graph rows ``values [G, d]`` to a node field ``like [N, ..., d]``."""
    v = values[batch]
    return v.view(v.shape[0], *([1] * (like.dim() - 2)), v.shape[-1])


@dataclass
class Transform:
    """A group element acting on graphs: ``x -> R x + t`` then a permutation of the nodes.

    ``R``: float64 ``[d, d]`` orthogonal matrix or None (identity). ``t``: float64 ``[d]`` or
    ``[num_graphs, d]`` or None. ``perm``: long ``[N]`` with new node ``k`` = old node ``perm[k]``
    (nodes stay within their graph), or None. ``wrap``: wrap positions back into the periodic box
    of graphs that have a ``box`` field.
    """

    name: str
    R: torch.Tensor | None = None
    t: torch.Tensor | None = None
    perm: torch.Tensor | None = None
    wrap: bool = True
    field_kinds: dict[str, str] = field(default_factory=dict)

    # -- algebra ------------------------------------------------------------------------------
    @property
    def det(self) -> float:
        return 1.0 if self.R is None else float(torch.linalg.det(self.R))

    def then(self, other: Transform) -> Transform:
        """The composition 'first self, then other' (a permutation may appear in one of the two)."""
        if self.perm is not None and other.perm is not None:
            raise ValueError("compose at most one permutation; permute in a single step")
        R1 = self.R
        R2 = other.R
        R = R2 if R1 is None else (R1 if R2 is None else R2 @ R1)
        t = self.t
        if t is not None and R2 is not None:
            t = t @ R2.T
        if other.t is not None:
            t = other.t if t is None else t + other.t
        perm = self.perm if self.perm is not None else other.perm
        return Transform(f"{self.name} then {other.name}", R, t, perm, self.wrap and other.wrap,
                         {**self.field_kinds, **other.field_kinds})

    def is_box_symmetry(self, box: torch.Tensor, atol: float = 1e-9) -> bool:
        """True when R maps the periodic lattice of ``box`` (``[G, d]`` or ``[d]``) onto itself."""
        if self.R is None:
            return True
        box = torch.as_tensor(box, dtype=torch.float64).reshape(-1, self.R.shape[0])
        for L in box:
            M = torch.diag(1 / L) @ self.R @ torch.diag(L)  # R in lattice coordinates
            if not torch.allclose(M, torch.round(M), atol=atol):
                return False
        return True

    # -- action on one field ------------------------------------------------------------------
    def apply(self, value: torch.Tensor, kind: str, data=None) -> torch.Tensor:
        """Transform one tensor of a given kind (see :data:`OUTPUT_KINDS`) in float64.

        ``data`` supplies ``batch`` and ``box`` for translations, wrapping and per-graph shifts.
        Returns a float64 tensor for float inputs, the same dtype otherwise.
        """
        kind = _kind(kind)
        if kind == "edge_index":
            if self.perm is None:
                return value
            inv = torch.empty_like(self.perm)
            inv[self.perm] = torch.arange(len(self.perm), device=self.perm.device)
            return inv.to(value.device)[value]
        out = value.to(torch.float64) if value.is_floating_point() else value
        if kind in ("position", "vector", "pseudovector", "edge_vector") and self.R is not None:
            out = out @ self.R.to(out.device).T
            if kind == "pseudovector":
                out = out * self.det
        if kind == "pseudoscalar" and self.R is not None:
            out = out * self.det
        if kind == "position":
            batch = batch_of(data) if data is not None else torch.zeros(len(out), dtype=torch.long)
            if self.t is not None:
                t = self.t.to(out.device).reshape(-1, out.shape[-1])
                if t.shape[0] == 1:
                    t = t.expand(num_graphs(data) if data is not None else 1, -1)
                out = out + _per_node(t, batch, out)
            box = getattr(data, "box", None) if data is not None else None
            if self.wrap and box is not None:
                L = _per_node(box.to(torch.float64).reshape(-1, out.shape[-1]), batch, out)
                out = wrap_into_box(out, L)
        if kind in _NODE_KINDS and self.perm is not None:
            out = out[self.perm.to(out.device)]
        return out

    # -- action on a whole graph ----------------------------------------------------------------
    def kinds_for(self, data, field_kinds: dict[str, str] | None = None) -> dict[str, str]:
        """The kind of every tensor field of ``data``; raises for a node field of unknown kind."""
        kinds = {**FIELD_KINDS, **self.field_kinds, **(field_kinds or {})}
        n, G = data.num_nodes, num_graphs(data)
        out = {}
        for key in data.keys():
            val = data[key]
            if not isinstance(val, torch.Tensor):
                continue
            if key in kinds:
                out[key] = _kind(kinds[key])
            elif val.dim() >= 1 and val.shape[0] == n and n != G:
                raise ValueError(
                    f"field '{key}' (shape {tuple(val.shape)}) has one row per node but no known kind: "
                    f"pass field_kinds={{'{key}': 'scalar' | 'vector' | 'position' | ...}} "
                    f"(kinds: {', '.join(OUTPUT_KINDS)})"
                )
            else:
                out[key] = "invariant"
        return out

    def __call__(self, data, field_kinds: dict[str, str] | None = None):
        """Return a transformed copy of a PyG ``Data``/``Batch`` (input dtypes are kept)."""
        kinds = self.kinds_for(data, field_kinds)
        new = data.clone()
        for key, kind in kinds.items():
            val = data[key]
            res = self.apply(val, kind, data)
            new[key] = res.to(val.dtype) if val.is_floating_point() else res
        return new

    def __repr__(self) -> str:
        parts = [self.name]
        if self.R is not None:
            parts.append(f"det={self.det:+.0f}")
        if self.perm is not None:
            parts.append(f"perm of {len(self.perm)} nodes")
        return f"Transform({', '.join(parts)})"


def identity() -> Transform:
    return Transform("identity")


def rotation(d: int, generator=None, R: torch.Tensor | None = None) -> Transform:
    """A random proper rotation in SO(d) (or the given matrix ``R``)."""
    R = random_rotation(d, generator) if R is None else torch.as_tensor(R, dtype=torch.float64)
    return Transform(f"SO({d}) rotation", R=R)


def reflection(d: int, generator=None) -> Transform:
    """A random improper element of O(d) (det = -1): a rotation composed with a mirror."""
    return Transform(f"O({d}) reflection", R=random_orthogonal(d, det=-1, generator=generator))


def orthogonal(R: torch.Tensor, name: str | None = None) -> Transform:
    """The transform of a given orthogonal matrix (checked)."""
    R = torch.as_tensor(R, dtype=torch.float64)
    eye = torch.eye(R.shape[0], dtype=torch.float64)
    if not torch.allclose(R @ R.T, eye, atol=1e-9):
        raise ValueError("R is not orthogonal (R R^T != I); build it with random_orthogonal or rotation_matrix_*")
    det = float(torch.linalg.det(R))
    return Transform(name or f"O({R.shape[0]}) element (det {det:+.0f})", R=R)


def inversion(d: int) -> Transform:
    """Point inversion x -> -x (parity)."""
    return Transform("inversion", R=-torch.eye(d, dtype=torch.float64))


def translation(d: int, scale: float = 3.0, generator=None, t=None) -> Transform:
    """A random translation by a vector with entries ~ N(0, scale^2) (or the given ``t``)."""
    if t is None:
        t = scale * torch.randn(d, generator=_gen(generator), dtype=torch.float64)
    return Transform("translation", t=torch.as_tensor(t, dtype=torch.float64), wrap=False)


def periodic_translation(box: torch.Tensor, generator=None) -> Transform:
    """A random shift uniform in each graph's box, followed by wrapping into the box.

    ``box``: ``[G, d]`` or ``[d]`` side lengths; each graph gets its own shift.
    """
    box = torch.as_tensor(box, dtype=torch.float64)
    box2 = box.reshape(-1, box.shape[-1])
    t = torch.rand(box2.shape, generator=_gen(generator), dtype=torch.float64) * box2
    return Transform("periodic translation", t=t, wrap=True)


def permutation(data, generator=None) -> Transform:
    """A random permutation of the nodes within each graph of ``data`` (a Data or a Batch)."""
    g = _gen(generator)
    batch = batch_of(data).cpu()
    perm = torch.empty(data.num_nodes, dtype=torch.long)
    for b in torch.unique(batch):
        idx = torch.nonzero(batch == b).flatten()
        perm[idx] = idx[torch.randperm(len(idx), generator=g)]
    return Transform("permutation", perm=perm.to(data.pos.device))


def box_symmetry(d: int, which: int | str | None = None, generator=None) -> Transform:
    """An element of the square/cubic box's point group (:func:`lattice_point_group`), with wrapping.

    ``which``: an index, ``"rot90"`` (90-degree rotation in the xy plane), ``"mirror"`` (x -> -x),
    or None for a random non-identity element.
    """
    els = lattice_point_group(d)
    if which == "rot90":
        R = torch.eye(d, dtype=torch.float64)
        R[:2, :2] = rotation_matrix_2d(math.pi / 2).round()
        name = "box rotation by 90 deg"
    elif which == "mirror":
        R = torch.eye(d, dtype=torch.float64)
        R[0, 0] = -1.0
        name = "box reflection x -> -x"
    else:
        k = int(torch.randint(1, len(els), (), generator=_gen(generator))) if which is None else int(which)
        R = els[k]
        name = f"box point-group element #{k} (det {float(torch.linalg.det(R)):+.0f})"
    return Transform(name, R=R, wrap=True)


def standard_transforms(data, periodic: bool | None = None, generator=None) -> dict[str, Transform]:
    """The transforms every model of the course is checked against, by name.

    Open systems: permutation, translation, rotation (SO(d)) and reflection (det -1).
    Periodic systems (``data.box`` present): permutation, periodic translation, the box's 90-degree
    rotation and its mirror reflection (the symmetries that map the periodic lattice onto itself).
    """
    g = _gen(generator)
    d = data.pos.shape[1]
    if periodic is None:
        periodic = getattr(data, "box", None) is not None
    out = {"permutation": permutation(data, g)}
    if periodic:
        out["periodic translation"] = periodic_translation(data.box, g)
        out["box rotation 90"] = box_symmetry(d, "rot90")
        out["box reflection"] = box_symmetry(d, "mirror")
    else:
        out["translation"] = translation(d, generator=g)
        out["rotation"] = rotation(d, g)
        out["reflection"] = reflection(d, g)
    return out


def random_augmentation(data, generator=None, field_kinds: dict[str, str] | None = None):
    """Data augmentation with a random symmetry of the system, applied to a graph or a batch.

    Periodic graphs (with ``box``): a random periodic translation per graph, then a random element
    of the box's point group (8 in 2D: rotations by 90 degrees and reflections). Open graphs: a
    random O(d) element (rotation or reflection) and a random translation. Labels transform with
    their kinds (energies unchanged, forces rotated).
    """
    g = _gen(generator)
    d = data.pos.shape[1]
    if getattr(data, "box", None) is not None:
        els = lattice_point_group(d)
        k = int(torch.randint(0, len(els), (), generator=g))
        T = periodic_translation(data.box, g).then(Transform("box symmetry", R=els[k]))
    else:
        T = Transform("O(d)", R=random_orthogonal(d, generator=g)).then(translation(d, generator=g))
    return T(data, field_kinds)


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def default_tolerance(dtype: torch.dtype) -> float:
    """Default error tolerance for computations in ``dtype`` (scaled error, see module docstring)."""
    if dtype == torch.float64:
        return 1e-9
    if dtype == torch.float32:
        return 1e-4
    return 5e-2  # float16 / bfloat16


def _eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def _flatten(out, kinds, prefix="output"):
    """Yield (label, tensor, kind) for each tensor of a structured output."""
    from torch_geometric.data import Data

    if isinstance(out, Data):
        for key in out.keys():
            val = out[key]
            if isinstance(val, torch.Tensor):
                yield key, val, None  # resolved with field kinds later
    elif isinstance(out, (tuple, list)):
        if isinstance(kinds, str) or kinds is None or len(kinds) != len(out):
            raise ValueError(
                f"fn returned {len(out)} outputs: pass output=(kind, ...) with one kind per output, "
                f"e.g. output=('invariant', 'vector') for (energy, forces)"
            )
        for k, (o, kd) in enumerate(zip(out, kinds)):
            yield f"{prefix}[{k}]", o, kd
    elif isinstance(out, dict):
        for key, o in out.items():
            kd = kinds.get(key) if isinstance(kinds, dict) else None
            yield key, o, kd
    elif isinstance(out, torch.Tensor):
        yield prefix, out, kinds
    else:
        raise TypeError(f"fn must return a tensor, a tuple of tensors, a dict or a Data, got {type(out).__name__}")


@dataclass
class EquivarianceReport:
    """Detailed result of :func:`equivariance_error` (``return_details=True``)."""

    error: float
    per_output: dict[str, float]
    dtype: torch.dtype
    transform: str


def equivariance_error(
    fn: Callable,
    data,
    transform: Transform,
    output=None,
    field_kinds: dict[str, str] | None = None,
    return_details: bool = False,
):
    """The symmetry error of ``fn`` under ``transform``: compare ``fn(g.data)`` with ``g.fn(data)``.

    ``output`` says how the output transforms: a kind (``"invariant"`` for energies,
    ``"vector"`` for forces, ``"position"``, ``"scalar"`` for per-node invariants, ...), a tuple of
    kinds for a tuple output, or None: a ``Data`` output uses the field kinds, and a tensor of
    shape ``[num_graphs]`` is taken as invariant. Returns the scaled error (a float) or an
    :class:`EquivarianceReport`.
    """
    x = data
    gx = transform(x, field_kinds)
    f_x = fn(x)  # gradients stay enabled: fn may compute forces by autograd
    f_gx = fn(gx)
    if output is None and isinstance(f_x, torch.Tensor):
        if f_x.dim() == 1 and f_x.shape[0] == num_graphs(x):
            output = "invariant"
        else:
            raise ValueError(
                f"fn returned a tensor of shape {tuple(f_x.shape)}: say how it transforms with "
                f"output='vector' | 'position' | 'scalar' | 'invariant' | ..."
            )
    fk = {**FIELD_KINDS, **transform.field_kinds, **(field_kinds or {})}
    per_output: dict[str, float] = {}
    ref_items = list(_flatten(f_x, output))
    got_items = list(_flatten(f_gx, output))
    if [r[0] for r in ref_items] != [g[0] for g in got_items]:
        raise ValueError("fn returned differently structured outputs for the original and transformed input")
    dtype = None
    for (label, ref, kind), (_, got, _) in zip(ref_items, got_items):
        if kind is None:
            if label not in fk:
                raise ValueError(f"output field '{label}' has no known kind: pass field_kinds={{'{label}': ...}}")
            kind = fk[label]
        kind = _kind(kind)
        if kind == "edge_index" or not ref.is_floating_point():
            continue
        if isinstance(f_x, torch.Tensor) or kind not in ("scalar", "invariant", "pseudoscalar"):
            # the tolerance follows the least precise computed output (pass-through fields such as
            # charges or boxes copied into a Data output do not count)
            dtype = ref.dtype if dtype is None or _eps(ref.dtype) > _eps(dtype) else dtype
        expected = transform.apply(ref.detach(), kind, x)
        diff = got.detach().to(torch.float64) - expected
        box = getattr(x, "box", None)
        if kind == "position" and box is not None:
            batch = batch_of(x)
            if transform.perm is not None:
                batch = batch[transform.perm]
            diff = minimum_image(diff, _per_node(box.to(torch.float64).reshape(-1, diff.shape[-1]), batch, diff))
        scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
        per_output[label] = float(diff.abs().max()) / scale if diff.numel() else 0.0
    err = max(per_output.values()) if per_output else 0.0
    dtype = dtype or x.pos.dtype
    if return_details:
        return EquivarianceReport(err, per_output, dtype, transform.name)
    return err


def _fmt_tol(tol: float) -> str:
    return f"{tol:.0e}"


def assert_equivariant(
    fn: Callable,
    data,
    transform: Transform,
    output=None,
    tol: float | None = None,
    name: str | None = None,
    field_kinds: dict[str, str] | None = None,
) -> str:
    """Assert that ``fn`` commutes with ``transform``; return a deterministic summary line.

    The message of the ``AssertionError`` names the symmetry, the output that broke it, the error
    and the tolerance. The returned line shows only the tolerance, so notebook output is stable:
    ``"rotation: OK (err < 1e-04)"``.
    """
    rep = equivariance_error(fn, data, transform, output, field_kinds, return_details=True)
    tol = default_tolerance(rep.dtype) if tol is None else tol
    label = name or transform.name
    if not rep.error < tol:  # also catches NaN
        worst = max(rep.per_output, key=lambda k: rep.per_output[k]) if rep.per_output else "?"
        raise AssertionError(
            f"{label}: symmetry broken: error {rep.error:.3e} > tolerance {tol:.0e} "
            f"(worst output: {worst}; transform: {transform!r})"
        )
    return f"{label}: OK (err < {_fmt_tol(tol)})"


def assert_not_equivariant(
    fn: Callable,
    data,
    transform: Transform,
    output=None,
    min_error: float = 1e-3,
    name: str | None = None,
    field_kinds: dict[str, str] | None = None,
) -> str:
    """Assert that ``fn`` does *not* commute with ``transform`` (error above ``min_error``).

    Used to show that baselines and conditioned models break a symmetry. Returns a deterministic
    line, e.g. ``"rotation: broken as expected (err > 1e-03)"``; print the value of
    :func:`equivariance_error` separately to see by how much.
    """
    err = equivariance_error(fn, data, transform, output, field_kinds)
    label = name or transform.name
    if not err > min_error:
        raise AssertionError(f"{label}: expected the symmetry to be broken, but the error is only {err:.3e}")
    return f"{label}: broken as expected (err > {_fmt_tol(min_error)})"


# --------------------------------------------------------------------------------------------
# Which submodule breaks equivariance?
# --------------------------------------------------------------------------------------------


@dataclass
class BreakingReport:
    """The first submodule (in execution order) whose output fits no symmetry hypothesis."""

    module: str
    error: float
    checked: list[tuple[str, str, float]]  # (module name, best hypothesis, its error)

    def __str__(self) -> str:
        return f"first symmetry-breaking submodule: '{self.module}' (best-hypothesis error {self.error:.2e})"


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


def find_symmetry_breaking(
    model: torch.nn.Module,
    data,
    transform: Transform,
    tol: float | None = None,
    field_kinds: dict[str, str] | None = None,
) -> BreakingReport | None:
    """Find the first submodule whose output breaks the symmetry ``transform``, with forward hooks.

    The model is run on ``data`` and on ``transform(data)``; for every submodule call (in the order
    the calls finish, so inner modules come before the modules that contain them) the two outputs
    are compared under each hypothesis that fits the output's shape: *invariant* (unchanged, or
    permuted if it has one row per node), *vector* (last axis of size d rotated by R), and, when the
    module declares ``irreps_out`` (e3nn), the Wigner-D representation of those irreps. A module
    whose output fits no hypothesis within ``tol`` is reported; None means every submodule passed.

    Use a transform without permutation to compare per-edge tensors (their order then stays fixed).
    """
    records: list[list] = [[], []]
    hooks = []
    for name, mod in model.named_modules():
        if name == "":
            continue

        def hook(m, inp, out, name=name):
            t = _first_tensor(out)
            if t is not None and t.is_floating_point():
                records[phase[0]].append((name, m, t.detach().to(torch.float64)))

        hooks.append(mod.register_forward_hook(hook))
    phase = [0]
    try:
        with torch.enable_grad():
            model(data)
            phase[0] = 1
            model(transform(data, field_kinds))
    finally:
        for h in hooks:
            h.remove()
    tol = default_tolerance(data.pos.dtype) if tol is None else tol
    n, d = data.num_nodes, data.pos.shape[1]
    checked = []
    for (name, mod, a), (_, _, b) in zip(*records):
        if a.shape != b.shape:
            checked.append((name, "shape changed", math.inf))
            continue
        scale = max(1.0, float(a.abs().max()))
        hyps = {}
        node = a.dim() >= 1 and a.shape[0] == n
        perm = transform.perm if (node and transform.perm is not None) else None
        ap = a[perm] if perm is not None else a
        if transform.perm is None or node or a.shape[0] == num_graphs(data):
            hyps["invariant"] = float((b - ap).abs().max()) / scale
        if a.shape[-1] == d and transform.R is not None:
            hyps["vector"] = float((b - ap @ transform.R.T).abs().max()) / scale
        irreps = getattr(mod, "irreps_out", None)
        if irreps is not None and transform.R is not None and a.shape[-1] == getattr(irreps, "dim", -1):
            D = irreps.D_from_matrix(transform.R.to(torch.get_default_dtype())).to(torch.float64)
            hyps[f"irreps {irreps}"] = float((b - ap @ D.T).abs().max()) / scale
        if not hyps:
            continue
        best = min(hyps, key=hyps.get)
        checked.append((name, best, hyps[best]))
        if not hyps[best] < tol:
            return BreakingReport(name, hyps[best], checked)
    return None
