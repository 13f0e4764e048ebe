"""Hidden tests of notebook 01 (invariant MPNN energies in a periodic box).

Same contract as ``nb00.py``: ``HIDDEN[exercise_id](obj, fb)`` runs the public checker of
:mod:`course_lib.teaching.exercises.nb01` first (exactly the notebook's self-check, on its stored expected
outputs), then the same checker with other seeds and sizes (expected outputs computed by the reference
solutions of ``reference/nb01.py``, never stored in the package), then extra cases (3D boxes, batch
dimensions, float32, box symmetries measured with ``course_lib.symmetry``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from course_lib import symmetry as S
from course_lib.teaching.exercises import nb01 as public
from course_lib.teaching.grading import run_cases

_spec = importlib.util.spec_from_file_location("_course_reference_nb01",
                                               Path(__file__).with_name("reference") / "nb01.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)
REF = {"expected": reference.compute}


def _minimum_image_extra(fn, fb, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(40_000 + seed)
    L = torch.tensor([4.0, 9.0, 6.5], dtype=torch.float64)
    dx = (torch.rand(5, 7, 3, generator=g, dtype=torch.float64) - 0.5) * 6 * L  # batch dims, 3D box
    out = fn(dx.clone(), L)
    fb.expect(isinstance(out, torch.Tensor) and out.shape == dx.shape,
              f"3D box with input of shape {list(dx.shape)}: expected the same shape back (work on the last axis "
              "only)", fatal=True)
    ref = reference.minimum_image(dx, L)
    err = float((out - ref).abs().max())
    fb.expect(err < 1e-9, f"3D box L = (4, 9, 6.5), input [5, 7, 3]: max error {err:.2e} against the closest image")
    # the result does not depend on which periodic image of the displacement is given
    shift = torch.randint(-3, 4, dx.shape, generator=g).double() * L
    err = float((fn(dx + shift, L) - out).abs().max())
    fb.expect(err < 1e-9, f"adding whole box lengths to the input changes the output (max change {err:.2e}): "
              "the minimum image must be the same for every periodic image")
    # box symmetry (90-degree rotation of a square box): reducing commutes with the rotation
    Lsq = torch.tensor([5.0, 5.0], dtype=torch.float64)
    d2 = (torch.rand(40, 2, generator=g, dtype=torch.float64) - 0.5) * 3 * Lsq
    R = S.box_symmetry(2, "rot90").R
    err = float((fn(d2 @ R.T, Lsq) - fn(d2, Lsq) @ R.T).abs().max())
    fb.expect(err < 1e-9, f"square box: reducing then rotating by 90 degrees differs from rotating then reducing "
              f"(error {err:.2e})")
    d32 = dx.float()
    out32 = fn(d32, L.float())
    fb.expect(isinstance(out32, torch.Tensor) and out32.dtype == torch.float32,
              "float32 input: keep the dtype (no .double() or torch.tensor(..., dtype=float64) inside)")


def hidden_minimum_image(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_minimum_image, {}),
        ("hidden: seed=1, n=1000", public.check_minimum_image, {"seed": 1, "n": 1000, **REF}),
        ("hidden: seed=2, n=3", public.check_minimum_image, {"seed": 2, "n": 3, **REF}),
        ("hidden: 3D box, batch axes, float32", _minimum_image_extra, {}),
    ])


def hidden_message_passing_step(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_message_passing_step, {}),
        ("hidden: seed=1", public.check_message_passing_step, {"seed": 1, **REF}),
        ("hidden: seed=2", public.check_message_passing_step, {"seed": 2, **REF}),
    ])


def hidden_invariance_error(fn, fb) -> None:
    run_cases(fb, fn, [
        ("public check", public.check_invariance_error, {}),
        ("hidden: seed=1", public.check_invariance_error, {"seed": 1, **REF}),
        ("hidden: seed=2", public.check_invariance_error, {"seed": 2, **REF}),
    ])


def hidden_energy_features(fn, fb) -> None:
    """The design exercise: its properties on other configurations, and the accuracy bar on the test split (held
    out of the notebook's check) after fits on other random training subsets."""
    run_cases(fb, fn, [
        ("public check", public.check_energy_features, {}),
        ("hidden: seed=1, 200 random training configurations, 150 of the test split", public.check_energy_features,
         {"seed": 1, "n_train": 200, "n_test": 150, "test_split": "test"}),
        ("hidden: seed=2, 150 random training configurations, 150 of the test split", public.check_energy_features,
         {"seed": 2, "n_train": 150, "n_test": 150, "test_split": "test"}),
    ])


HIDDEN = {
    "01.minimum_image": hidden_minimum_image,
    "01.message_passing_step": hidden_message_passing_step,
    "01.invariance_error": hidden_invariance_error,
    "01.energy_features": hidden_energy_features,
}
