"""Hidden tests of notebook 07 (NequIP from its parts).

Same contract as ``nb00.py``: ``HIDDEN[exercise_id](obj, fb)`` runs the public checker of
:mod:`course_lib.teaching.exercises.nb07` first (exactly the notebook's self-check, on its stored expected
outputs), then the same checker with other seeds and sizes (other cutoffs, numbers of basis functions and
envelope exponents; features up to l = 2; other multiplicities of the gated irreps; expected outputs from
``reference/nb07.py``), then extra cases (float32 models, a larger molecule).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from course_lib.teaching.exercises import nb07 as public
from course_lib.teaching.grading import run_cases

_spec = importlib.util.spec_from_file_location("_course_reference_nb07",
                                               Path(__file__).with_name("reference") / "nb07.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)
REF = {"expected": reference.compute}


def _radial_basis_extra(fn, fb, cutoff: float = 5.0) -> None:
    """Distances of a real geometry (ethanol-like spread), float32, the envelope's smoothness."""
    r = torch.linspace(0.7, 1.2 * cutoff, 101)
    out = fn(r.clone(), cutoff, 8, 6)
    ref = reference.radial_basis(r.double(), cutoff, 8, 6)
    fb.expect(isinstance(out, torch.Tensor) and out.shape == ref.shape and out.dtype == torch.float32
              and torch.allclose(out.double(), ref, atol=1e-5),
              "float32 distances from 0.7 to 6 A with r_c = 5: your values differ from the reference (or the dtype "
              "is not float32)")
    # the basis is smooth: no jump between two distances 1e-3 apart anywhere (in particular at r_c)
    r64 = torch.linspace(0.5, cutoff + 0.5, 2001, dtype=torch.float64)
    b = fn(r64, cutoff, 8, 6)
    jump = float((b[1:] - b[:-1]).abs().max()) if isinstance(b, torch.Tensor) else float("inf")
    fb.expect(jump < 0.05, f"the basis jumps by {jump:.2e} between neighbouring distances: it must be smooth")


def hidden_radial_basis(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_radial_basis, {}),
        ("hidden: seed=1, r_c=5, 4 functions, p=3", public.check_radial_basis,
         {"seed": 1, "cutoff": 5.0, "num_basis": 4, "p": 3, **REF}),
        ("hidden: seed=2, r_c=3, 16 functions, n=500", public.check_radial_basis,
         {"seed": 2, "cutoff": 3.0, "num_basis": 16, "n": 500, **REF}),
        ("hidden: float32 geometry, smoothness", _radial_basis_extra, {}),
    ])


def hidden_convolution(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_convolution, {}),
        ("hidden: seed=1, l_max=2", public.check_convolution, {"seed": 1, "l_max": 2, "mul": 2, **REF}),
        ("hidden: seed=2, 14 atoms, r_max=3", public.check_convolution,
         {"seed": 2, "n_atoms": 14, "r_max": 3.0, "mul": 4, **REF}),
        ("hidden: seed=3, scalars only (l_max=0)", public.check_convolution, {"seed": 3, "l_max": 0, **REF}),
    ])


def hidden_gate(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_gate, {}),
        ("hidden: seed=1, other multiplicities", public.check_gate,
         {"seed": 1, "muls": (1, 3, 1, 2, 2), "n": 3, **REF}),
        ("hidden: seed=2, many channels", public.check_gate, {"seed": 2, "muls": (8, 1, 8, 1, 8), "n": 20, **REF}),
    ])


def hidden_nequip_variant(cls, fb) -> None:
    """A design exercise: the public check, then other frames, seeds (weights) and rotations."""
    run_cases(fb, cls, [
        ("public check", public.check_nequip_variant, {}),
        ("hidden: seed=3, three frames", public.check_nequip_variant, {"seed": 3, "frames": 3}),
    ])


HIDDEN = {
    "07.radial_basis": hidden_radial_basis,
    "07.convolution": hidden_convolution,
    "07.gate": hidden_gate,
    "07.nequip_variant": hidden_nequip_variant,
}
