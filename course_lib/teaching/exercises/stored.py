"""Expected outputs of the public self-checks, stored as package data: no reference solution ships.

A checker asks for the value a correct solution (or a known mistake) gives on the checker's own inputs
with ``want(exercise_id, variant, *inputs)``, where ``want`` is the checker's ``expected`` argument:

- in the student's notebook (``expected=None``) it is :data:`STORED`, which looks the answer up in
  ``expected/nbNN.npz`` (made by ``python grading/hidden/reference/make_expected.py`` from the reference
  solutions, which live with the hidden tests and are not part of the installed package);
- the hidden tests pass the reference's own ``compute`` (other seeds and sizes: their answers are
  not stored here, so the package holds no answer to a hidden case);
- the generation script passes a :class:`Recorder`, which calls the reference and keeps the results.

Variants are named (``"values"``, ``"swapped endpoints"``, ...): the outputs of known mistakes are
stored too, so the checkers diagnose them by comparison. A stored entry is found by a fingerprint of the
inputs (values rounded to 2^-20, so that round-off of another CPU does not change it); inputs that the
file does not know (another torch draws other random numbers) raise
:class:`~course_lib.teaching.checks.CheckerError`, which the notebook reports as the check's fault.
The files hold arrays only (``allow_pickle=False``): no code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from course_lib.teaching.checks import CheckerError

__all__ = ["EXPECTED_DIR", "STORED", "Live", "Recorder", "StoredOutputs", "fingerprint", "provider"]

EXPECTED_DIR = Path(__file__).with_name("expected")
_QUANTUM = 2.0**20


def _feed(h, x) -> None:
    """Hash ``x`` into ``h``: tensors by their rounded values, modules by their parameters, objects by fields."""
    if isinstance(x, torch.Tensor):
        a = x.detach().cpu()
        h.update(f"T{a.dtype}{tuple(a.shape)}".encode())
        if a.is_floating_point():
            h.update(np.round(a.double().numpy() * _QUANTUM).astype(np.int64).tobytes())
        else:
            h.update(a.to(torch.int64).numpy().tobytes())
    elif isinstance(x, np.ndarray):
        _feed(h, torch.from_numpy(np.ascontiguousarray(x)))
    elif isinstance(x, torch.nn.Module):
        h.update(type(x).__qualname__.encode())
        _feed(h, dict(x.state_dict()))
    elif isinstance(x, dict):
        for k in sorted(x, key=str):
            h.update(str(k).encode())
            _feed(h, x[k])
    elif isinstance(x, (list, tuple)):
        h.update(f"L{len(x)}".encode())
        for item in x:
            _feed(h, item)
    elif x is None or isinstance(x, (bool, int, str, np.integer)):
        h.update(repr(x).encode())
    elif isinstance(x, (float, np.floating)):
        h.update(repr(round(x * _QUANTUM)).encode())
    elif hasattr(x, "to_dict"):  # torch_geometric Data / Batch
        _feed(h, x.to_dict())
    elif callable(x) and hasattr(x, "__qualname__"):
        h.update(x.__qualname__.encode())
    elif hasattr(x, "__dict__"):
        h.update(type(x).__qualname__.encode())
        _feed(h, vars(x))
    else:
        raise TypeError(f"cannot fingerprint a {type(x).__name__}")


def fingerprint(*inputs) -> str:
    """A short digest of the inputs of a checker's case (stable under last-bit round-off)."""
    h = hashlib.sha256()
    _feed(h, inputs)
    return h.hexdigest()[:16]


def _key(exercise_id: str, variant: str, inputs: tuple) -> str:
    return f"{exercise_id}|{variant}|{fingerprint(*inputs)}"


def _notebook_of(exercise_id: str) -> str:
    return "nb" + exercise_id.split(".", 1)[0]


class StoredOutputs:
    """The public provider: expected outputs read from ``expected/nbNN.npz`` (arrays only)."""

    def __init__(self, folder: Path = EXPECTED_DIR):
        self.folder = Path(folder)
        self._files: dict[str, dict[str, np.ndarray]] = {}

    def _table(self, notebook: str) -> dict[str, np.ndarray]:
        if notebook not in self._files:
            path = self.folder / f"{notebook}.npz"
            if not path.is_file():
                raise CheckerError(f"the stored expected outputs {path.name} are missing from course_lib "
                                   "(reinstall course_lib)")
            with np.load(path, allow_pickle=False) as z:
                self._files[notebook] = {k: z[k] for k in z.files}
        return self._files[notebook]

    def __call__(self, exercise_id: str, variant: str, *inputs):
        table = self._table(_notebook_of(exercise_id))
        key = _key(exercise_id, variant, inputs)
        if f"{key}#n" in table:
            return tuple(torch.from_numpy(table[f"{key}#{k}"].copy()) for k in range(int(table[f"{key}#n"])))
        if key not in table:
            raise CheckerError(
                f"no stored expected output for this case of {exercise_id} ({variant}): your torch "
                f"{torch.__version__} may draw other random numbers than the one that made the file; the "
                "checks above this line are still valid")
        return torch.from_numpy(table[key].copy())


#: the provider used by the public checks
STORED = StoredOutputs()


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return x.to(torch.float64) if x.is_floating_point() else x.clone()
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


class Live:
    """A provider that calls a reference ``compute(exercise_id, variant, *inputs)`` (the hidden tests use it);
    its answers come back as the stored ones would (float64 tensors, or tuples of them)."""

    def __init__(self, compute: Callable):
        self.compute = compute

    def __call__(self, exercise_id: str, variant: str, *inputs):
        out = self.compute(exercise_id, variant, *inputs)  # with autograd: a reference may differentiate
        return tuple(_as_tensor(o) for o in out) if isinstance(out, (tuple, list)) else _as_tensor(out)


class Recorder(Live):
    """A :class:`Live` provider that also records its answers in :attr:`table` (the generation script)."""

    def __init__(self, compute: Callable):
        super().__init__(compute)
        self.table: dict[str, np.ndarray] = {}

    def __call__(self, exercise_id: str, variant: str, *inputs):
        key = _key(exercise_id, variant, inputs)  # before the reference runs (it may change a counter)
        out = super().__call__(exercise_id, variant, *inputs)
        if isinstance(out, tuple):
            self.table[f"{key}#n"] = np.asarray(len(out))
            for k, item in enumerate(out):
                self.table[f"{key}#{k}"] = item.numpy()
        else:
            self.table[key] = out.numpy()
        return out


def provider(expected: Callable | None) -> Callable:
    """The checker's ``expected`` argument: None gives :data:`STORED`; a plain ``compute`` function is
    wrapped in :class:`Live`; a provider (:class:`StoredOutputs`, :class:`Live`) is used as it is."""
    if expected is None:
        return STORED
    return expected if isinstance(expected, (StoredOutputs, Live)) else Live(expected)
