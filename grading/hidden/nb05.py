"""Hidden tests of notebook 05 (SchNet energies and forces of molecules).

Same contract as ``nb00.py``: ``HIDDEN[exercise_id](obj, fb)`` runs the public checker of
:mod:`course_lib.teaching.exercises.nb05` first (exactly the notebook's self-check, on its stored expected
outputs), then the same checker with other seeds and sizes (expected outputs from ``reference/nb05.py``), then
extra cases (float32, other molecule sizes, invariance of the loss).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from course_lib import symmetry as S
from course_lib.teaching.exercises import nb05 as public
from course_lib.teaching.exercises.common import close
from course_lib.teaching.grading import run_cases

_spec = importlib.util.spec_from_file_location("_course_reference_nb05",
                                               Path(__file__).with_name("reference") / "nb05.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)
REF = {"expected": reference.compute}


def _force_loss_extra(fn, fb, seed: int = 7) -> None:
    batch = public.random_molecules(seed, sizes=(2, 7, 3, 6))
    model = public.small_schnet(seed).train()
    got = fn(model, batch, 0.05)
    ref = reference.force_loss(model, batch, 0.05)
    fb.expect(isinstance(got, torch.Tensor) and got.dim() == 0 and close(got, ref, atol=1e-8, rtol=1e-6),
              "four molecules of 2, 7, 3 and 6 atoms: your loss differs from the reference (normalise each "
              "molecule's force term by its own number of atoms)")
    # the loss of a rotated + translated + permuted batch (with rotated reference forces) is the same
    for name, T in S.standard_transforms(batch, generator=seed).items():
        moved = T(batch)
        fb.expect(close(fn(model, moved, 0.05), ref, atol=1e-8, rtol=1e-6),
                  f"{name}: transforming the molecules and their reference forces together changed your loss: "
                  "the loss must only depend on invariant energies and equivariant forces")
    b32 = public.random_molecules(seed, dtype=torch.float32)
    m32 = public.small_schnet(seed, dtype=torch.float32).train()
    got32 = fn(m32, b32, 0.01)
    fb.expect(isinstance(got32, torch.Tensor) and got32.dtype == torch.float32,
              "float32 model and data: keep float32 (no .double() inside the loss)")


def hidden_gaussian_expansion(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_gaussian_expansion, {}),
        ("hidden: seed=1, n=3, k=50", public.check_gaussian_expansion, {"seed": 1, "n": 3, "k": 50, **REF}),
        ("hidden: seed=2, n=400, k=8", public.check_gaussian_expansion, {"seed": 2, "n": 400, "k": 8, **REF}),
    ])


def hidden_cfconv(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_cfconv, {}),
        ("hidden: seed=1", public.check_cfconv, {"seed": 1, **REF}),
        ("hidden: seed=2", public.check_cfconv, {"seed": 2, **REF}),
    ])


def hidden_force_loss(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_force_loss, {}),
        ("hidden: seed=1", public.check_force_loss, {"seed": 1, **REF}),
        ("hidden: other sizes, symmetries, float32", _force_loss_extra, {}),
    ])


def hidden_smooth_basis(fn, fb) -> None:
    """The design exercise: its properties at other cutoffs, and the accuracy bar on pair potentials the notebook
    does not show."""
    targets = list(public.pair_targets())
    run_cases(fb, fn, [
        ("public check", public.check_smooth_basis, {}),
        ("hidden: seed=1, another Morse bond, r_c = 4", public.check_smooth_basis,
         {"seed": 1, "targets": (targets[1],)}),
        ("hidden: seed=2, the screened Coulomb pair with its core, r_c = 3", public.check_smooth_basis,
         {"seed": 2, "targets": (targets[2],)}),
    ])


HIDDEN = {
    "05.gaussian_expansion": hidden_gaussian_expansion,
    "05.cfconv": hidden_cfconv,
    "05.force_loss": hidden_force_loss,
    "05.smooth_basis": hidden_smooth_basis,
}
