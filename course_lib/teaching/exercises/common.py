"""Helpers shared by the checkers of every notebook (``nb00.py`` ... ``nb08.py``) and by the hidden tests.

Comparisons take their tolerances as explicit arguments: each notebook's checks were tuned with their
own tolerances, and a checker states the ones it uses at each call. Messages about shapes keep the
notation of the notebook (``[6, 3]`` in notebooks 00 and 06, ``(6, 3)`` elsewhere).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from course_lib import symmetry as S
from course_lib.teaching.checks import Feedback, describe_exception

__all__ = [
    "call_student",
    "close",
    "close_arrays",
    "close_scaled",
    "expect_tensor",
    "functional_call",
    "random_rotation_and_reflection",
    "rng",
    "square_box_operations",
    "wrap_into_box",
    "shape_of",
    "source_of",
    "type_name",
]


# --------------------------------------------------------------------------------------------
# calling the student's code
# --------------------------------------------------------------------------------------------


def call_student(fb: Feedback, fn, args: tuple, what: str, hint: str = ""):
    """Call the student's function; an exception becomes a fatal, specific failure."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise
    except Exception as exc:  # noqa: BLE001 - the student's error becomes feedback
        fb.expect(False, f"{what} raised {describe_exception(exc)}" + (f". {hint}" if hint else ""), fatal=True)


def expect_tensor(fb: Feedback, out, what: str | None = None) -> bool:
    """A fatal check that ``out`` is a tensor: "``what`` must return a torch.Tensor" (or "return a torch.Tensor")."""
    head = f"{what} must return" if what else "return"
    return fb.expect(isinstance(out, torch.Tensor), f"{head} a torch.Tensor, got {type_name(out)}", fatal=True)


def _remote(obj) -> bool:
    """True for the grader's view of an object that lives in the student's process (see grading.bridge)."""
    return type(obj).__name__ == "Remote" and type(obj).__module__.endswith("grading.bridge")


def type_name(obj) -> str:
    """``type(obj).__name__``, also for an object the grader sees through its channel to the student's process."""
    return obj.remote_type_name() if _remote(obj) else type(obj).__name__


def functional_call(module, params: dict, args: tuple):
    """``module(*args)`` with its parameters replaced by ``params`` (name -> tensor), as
    ``torch.func.functional_call``: how a checker trains the student's module with its own optimiser. Works on the
    grader's view of a module in the student's process too (the outputs are attached to ``params`` for backward)."""
    if _remote(module):
        return module.remote_functional_call(params, tuple(args))
    return torch.func.functional_call(module, params, tuple(args))


def source_of(fn) -> str:
    """The source code of the student's function ("" where Python cannot find it)."""
    if _remote(fn):
        return fn.remote_source()
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return ""


def shape_of(x, brackets: str = "()", arrays: bool = False) -> str:
    """The shape of ``x`` for a message, ``(6, 3)`` (``brackets="[]"``: ``[6, 3]``), else its type name.

    Only tensors have a shape, unless ``arrays=True`` (anything with a ``.shape``: numpy arrays too).
    """
    if isinstance(x, torch.Tensor) or (arrays and hasattr(x, "shape")):
        dims = tuple(np.shape(x)) if arrays else tuple(x.shape)
        return str(list(dims)) if brackets == "[]" else str(dims)
    return type_name(x)


# --------------------------------------------------------------------------------------------
# comparisons
# --------------------------------------------------------------------------------------------


def close(a, b: torch.Tensor, *, atol: float, rtol: float) -> bool:
    """``a`` is a tensor of the shape of ``b`` and ``|a - b| <= atol + rtol |b|`` elementwise, in float64."""
    return (isinstance(a, torch.Tensor) and a.shape == b.shape
            and bool(torch.allclose(a.to(torch.float64), b.to(torch.float64), atol=atol, rtol=rtol)))


def close_scaled(a, b: torch.Tensor, tol: float) -> bool:
    """Scaled closeness: ``a`` is a tensor of the shape of ``b`` and ``max |a - b| <= tol * max(1, max |b|)``."""
    if not isinstance(a, torch.Tensor) or a.shape != b.shape:
        return False
    a, b = a.detach().to(torch.float64), b.detach().to(torch.float64)
    return bool((a - b).abs().max() <= tol * max(1.0, float(b.abs().max()))) if b.numel() else True


def close_arrays(a, b, *, atol: float, rtol: float) -> bool:
    """:func:`close` for anything numpy reads as a float64 array (False when it cannot)."""
    try:
        a = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return a.shape == np.shape(b) and bool(np.allclose(a, b, atol=atol, rtol=rtol))


# --------------------------------------------------------------------------------------------
# seeded randomness
# --------------------------------------------------------------------------------------------


def rng(seed: torch.Generator | int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (``None``: 0); a ``torch.Generator`` is returned as it is.

    Seeded generators leave the global RNG state of the notebook untouched.
    """
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(0 if seed is None else int(seed))


def random_rotation_and_reflection(rotation_generator, reflection_generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random rotation (det +1) and a random reflection (det -1) of R^3, float64, drawn in that order.

    Each generator is a seed or a ``torch.Generator`` (pass the same one twice to draw both from it).
    """
    rotation = S.random_orthogonal(3, det=1, generator=rotation_generator)
    reflection = S.random_orthogonal(3, det=-1, generator=reflection_generator)
    return rotation, reflection


def square_box_operations(L: float, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Symmetries of a periodic square box of side ``L`` as ``x -> R x + t`` (positions then wrapped into
    ``[0, L)``), float64, by name: a random translation (by any real vector: the particles wrap around) and the
    three generators of the square's point group D4 about the origin (they map the lattice of images onto itself).
    """
    t = torch.rand(2, generator=rng(seed), dtype=torch.float64) * L
    eye = torch.eye(2, dtype=torch.float64)
    zero = torch.zeros(2, dtype=torch.float64)
    return {
        f"translation by ({float(t[0]):.2f}, {float(t[1]):.2f}) through the boundaries": (eye, t),
        "90 deg rotation of the box": (torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64), zero),
        "mirror x -> -x of the box": (torch.tensor([[-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64), zero),
        "diagonal mirror x <-> y of the box": (torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64), zero),
    }


def wrap_into_box(x: torch.Tensor, L: float) -> torch.Tensor:
    """Positions wrapped into ``[0, L)``."""
    return x - L * torch.floor(x / L)
