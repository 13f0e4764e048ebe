"""Checkers of notebook 10: from a potential to physics you can trust (vibrations).

Exercises:

- ``10.harmonic_wavenumbers``: mass-weight a Hessian ``[3N, 3N]`` (eV/Å²) with the masses ``[N]`` (amu),
  diagonalise it and convert its eigenvalues to wavenumbers (cm⁻¹), imaginary frequencies as negative numbers.
- ``10.failure_flag``: a design exercise. A score ``failure_score(z, forces, energies)`` -> one number per frame,
  from the predictions of a committee (``forces [M, N, 3]``, ``energies [M]`` of the M members of
  ``benchmarks/results/committee_s*.pt`` on a frame of atoms ``z [N]``), that flags frames whose committee-mean
  force is far from GFN2-xTB's. The positions are not given: the score is a function of the committee's outputs
  (with the positions, GFN2-xTB itself, importable in the student's sandbox, would give the true error in a few
  ms). Required (a case that breaks one scores 0, each named with its size): invariance under rotations and
  reflections of the members' forces (all turned alike), renumbering the atoms (``z`` and the forces alike) and
  renumbering the members; the score must *rise* when the members disagree more (their deviations from the
  committee mean doubled, the mean kept: a score that ignores the disagreement is no committee score); budget
  :data:`SCORE_SECONDS`. Goal: the AUROC of the score for the worst :data:`WORST_FRACTION` of the frames (by the
  true force error, the mean over atoms of ``|F̄_a - F_xTB,a|``) reaches :data:`AUROC_BAR` on a mix of 500 K and
  1000 K frames, each turned and renumbered at random. There is no single expected output, so no stored output is
  needed. The hidden samples are frames of their own GFN2-xTB runs, stored beside the hidden test (not in
  ``data/``, which the student's sandbox can read): no frame can be looked up.

No reference solution is here: the expected outputs (of the correct solution and of the known mistakes)
come from the checker's ``expected`` provider (:mod:`course_lib.teaching.exercises.stored`).
"""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path

import numpy as np
import torch

from course_lib.teaching.checks import exercise
from course_lib.teaching.exercises.common import (
    call_student,
    close_arrays,
    random_rotation_and_reflection,
    rng,
    shape_of,
    type_name,
)
from course_lib.teaching.exercises.stored import provider

__all__ = ["check_harmonic_wavenumbers", "check_failure_flag", "flag_auroc", "flag_sample", "frame_count",
           "public_parts", "AUROC_BAR", "WORST_FRACTION", "SCORE_SECONDS", "COMMITTEE", "PUBLIC_SAMPLE",
           "HIDDEN_SAMPLE"]

#: 10.failure_flag: the accuracy bar, the AUROC of the score for the worst frames (0.5: chance, 1: every bad frame
#: scored above every good one). Set by measurement (INSTRUCTORS.md, section 9; grading/hidden/reference/
#: calibrate_nb10.py): the committee's plain disagreement 0.92-0.93 on the hidden samples, the norm of the mean
#: force 0.80
AUROC_BAR = 0.83
#: 10.failure_flag: the frames to flag: the worst fifth of a sample by the true force error
WORST_FRACTION = 0.2
#: 10.failure_flag: the budget, in seconds for the scores of every frame of a sample (a few hundred)
SCORE_SECONDS = 10.0
#: 10.failure_flag: the committee (benchmarks/committee.py: 3 SchNet models differing only in their seed)
COMMITTEE = tuple(f"benchmarks/results/committee_s{k}.pt" for k in range(3))
#: 10.failure_flag: the public sample (the notebook's self-check): the 100 test frames at 500 K (the notebook's
#: own) and every 4th frame of the independent 1000 K run (50 frames)
PUBLIC_SAMPLE = {"500K test": "all", "1000K": "every 4th"}
#: 10.failure_flag: the size of a hidden sample: frames of a fresh 500 K run and of a fresh 1000 K run, stored with the
#: hidden test only (grading/hidden/data/nb10/; other frames in each hidden case)
HIDDEN_SAMPLE = {"500K": 200, "1000K": 100}

_MISTAKES = {
    "no mass weighting": "you diagonalised the Hessian itself: divide H_ij by sqrt(m_i m_j) first (each mass repeated "
                         "for its three coordinates, np.repeat(masses, 3))",
    "mass product": "divide H_ij by sqrt(m_i m_j), not by m_i m_j",
    "masses tiled": "the masses must be repeated per atom, x1 y1 z1 x2 ... (np.repeat(masses, 3)), not tiled "
                    "(np.tile gives m1 m2 ... m1 m2 ...)",
    "angular frequency": "you returned omega / c: the wavenumber is omega / (2 pi c), divide by 2 pi",
    "no sqrt": "the eigenvalues are omega^2: take the square root before converting",
    "imaginary as positive": "negative eigenvalues (imaginary frequencies) must come out negative: "
                             "sign(lam) * sqrt(|lam|), not sqrt(|lam|)",
    "unsorted": "return the wavenumbers sorted in increasing order (np.linalg.eigvalsh does that)",
}


def _case(seed: int, n: int):
    """A symmetric Hessian [3n, 3n] (eV/Å²) with one negative eigenvalue and masses [n] (amu)."""
    g = np.random.default_rng(seed)
    a = g.standard_normal((3 * n, 3 * n))
    h = a @ a.T * 5.0 / n
    lam, vec = np.linalg.eigh(h)
    lam[0] = -2.0  # one saddle direction
    h = (vec * lam) @ vec.T
    masses = np.round(1.0 + 15.0 * g.random(n), 3)
    return 0.5 * (h + h.T), masses


def _diatomic(k: float = 30.0):
    u = np.array([0.0, 0.0, 1.0])
    b = k * np.outer(u, u)
    return np.block([[b, -b], [-b, b]]), np.array([1.008, 35.45])


@exercise("10.harmonic_wavenumbers", "Hessian -> mass-weighted -> wavenumbers in cm^-1")
def check_harmonic_wavenumbers(fn, fb, seed: int = 0, n: int = 4, expected=None):
    want = provider(expected)
    h, masses = _case(seed, n)
    ref = np.asarray(want("10.harmonic_wavenumbers", "values", h, masses))
    mistakes = {k: np.asarray(want("10.harmonic_wavenumbers", k, h, masses)) for k in _MISTAKES}
    out = fn(h.copy(), masses.copy())
    fb.expect(np.shape(out) == ref.shape, f"return one wavenumber per coordinate: shape {ref.shape} for "
              f"{n} atoms, got {shape_of(out, arrays=True)}", fatal=True)
    out = np.asarray(out, dtype=np.float64)
    fb.expect(bool(np.all(np.isfinite(out))), "your wavenumbers contain NaN: np.sqrt of a negative eigenvalue. "
              "Report an imaginary frequency as a negative number, sign(lam) * sqrt(|lam|)", fatal=True)
    ok = close_arrays(out, ref, atol=1e-6, rtol=1e-8)
    named = next((_MISTAKES[k] for k, v in mistakes.items() if close_arrays(out, v, atol=1e-6, rtol=1e-8)), None)
    why = named or ("the wavenumbers differ from sign(lam) sqrt(|lam|) / (2 pi c) in cm^-1, lam the eigenvalues of "
               "H_ij / sqrt(m_i m_j): check the unit conversion (eV, Å, amu to SI; c in cm/s)")
    fb.expect(ok, why, ok="matches the expected wavenumbers", values=True)
    if named is not None:  # a named mistake is not reported again through its consequences
        return
    # physics: a harmonic diatomic, nu = sqrt(k / mu) / (2 pi c), and five zero modes
    hd, md = _diatomic()
    nu = np.asarray(fn(hd, md), dtype=np.float64)
    mu = md[0] * md[1] / md.sum()
    exact = np.sqrt(30.0 * 1.602176634e-19 / (mu * 1.66053906660e-27 * 1e-20)) / (2 * np.pi * 2.99792458e10)
    fb.expect(np.shape(nu) == (6,) and abs(nu[-1] - exact) < 1e-3 * exact and np.all(np.abs(nu[:5]) < 1e-3),
              f"a harmonic diatomic (k = 30 eV/Å², H and Cl) must give five zero modes and one stretch at "
              f"sqrt(k/mu)/(2 pi c) = {exact:.1f} cm^-1; you gave {np.round(nu, 1).tolist()}", values=True)


# ---------------------------------------------------------------------------------------------------- 10.failure_flag


@cache
def _source(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(z [N], pos [F, N, 3], forces [F, N, 3])`` of a frame source, float64: ``"500K test"``, ``"500K train"``
    (the training split of the 500 K data), ``"1000K"`` (the independent run, :func:`load_molecules_ood`), or the
    path of a trajectory file written by :mod:`course_lib.simulate.molecules` (arrays ``z``, ``pos``, ``forces``:
    the hidden samples, stored beside the hidden test; a file whose name holds ``1000K`` counts as a 1000 K one)."""
    from course_lib.datasets import load_molecules, load_molecules_ood  # loaded when the exercise is checked

    if name.endswith(".npz"):
        with np.load(name) as f:
            return (f["z"].astype(np.int64), f["pos"].astype(np.float64), f["forces"].astype(np.float64))
    frames = {"500K test": lambda: load_molecules("ethanol", "test", dtype=torch.float64),
              "500K train": lambda: load_molecules("ethanol", "train", dtype=torch.float64),
              "1000K": lambda: load_molecules_ood("ethanol", dtype=torch.float64)}[name]()
    return (frames[0].z.numpy(), np.stack([g.pos.numpy() for g in frames]),
            np.stack([g.forces.numpy() for g in frames]))


def _hot(name: str) -> bool:
    """True for a source of 1000 K frames."""
    return name == "1000K" or (name.endswith(".npz") and "1000K" in Path(name).name)


@cache
def _committee() -> tuple:
    from course_lib.train import load_shipped_model

    return tuple(load_shipped_model(path, how_to_make="python benchmarks/committee.py")[0].double().eval()
                 for path in COMMITTEE)


@cache
def _predicted(name: str, idx: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The committee's energies ``[M, F]`` and forces ``[M, F, N, 3]`` on frames ``idx`` of a source, and the true
    error of the committee-mean force per frame ``[F]`` (mean over atoms of ``|F̄_a - F_xTB,a|``, eV/Å)."""
    from torch_geometric.data import Data

    from course_lib import uncertainty as U

    z, pos, ref = _source(name)
    idx = np.asarray(idx)
    frames = [Data(z=torch.as_tensor(z), pos=torch.as_tensor(p)) for p in pos[idx]]
    energies, forces, _ = U.committee_forces(_committee(), frames)
    forces = forces.reshape(len(energies), len(idx), len(z), 3)
    error = np.linalg.norm(forces.mean(0) - ref[idx], axis=-1).mean(-1)
    return {"z": z, "pos": pos[idx], "energies": energies, "forces": forces, "error": error}


def frame_count(name: str) -> int:
    """The number of frames of a source (``"500K test"``, ``"500K train"``, ``"1000K"`` or a trajectory file)."""
    return len(_source(name)[1])


def public_parts() -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The public sample (:data:`PUBLIC_SAMPLE`) as ``(source, indices)`` pairs."""
    return (("500K test", tuple(range(frame_count("500K test")))), ("1000K", tuple(range(0, frame_count("1000K"), 4))))


def flag_sample(parts: tuple[tuple[str, tuple[int, ...]], ...] | None = None) -> dict[str, np.ndarray]:
    """A sample of frames with the committee's predictions and the true errors, ``parts``: ``(source, indices)``
    pairs (default: :data:`PUBLIC_SAMPLE`; a source is a name of :func:`_source` or a trajectory file). Returns
    ``z [N]``, ``pos [F, N, 3]``, ``energies [M, F]``, ``forces [M, F, N, 3]``, ``error [F]`` (eV/Å) and ``hot [F]``
    (True for the 1000 K frames). The positions are for plots; the score never receives them."""
    parts = public_parts() if parts is None else parts
    got = [_predicted(name, tuple(int(k) for k in idx)) for name, idx in parts]
    out = {"z": got[0]["z"], "pos": np.concatenate([g["pos"] for g in got]),
           "energies": np.concatenate([g["energies"] for g in got], 1),
           "forces": np.concatenate([g["forces"] for g in got], 1), "error": np.concatenate([g["error"] for g in got])}
    out["hot"] = np.concatenate([np.full(len(g["error"]), _hot(name)) for (name, _), g in zip(parts, got)])
    return out


def flag_auroc(scores, errors, worst: float = WORST_FRACTION) -> float:
    """The AUROC of ``scores [F]`` for the ``worst`` fraction of the frames by ``errors [F]``: the probability that a
    frame of the worst fraction scores above one of the others (ties count one half)."""
    from scipy.stats import rankdata

    s, e = np.asarray(scores, dtype=np.float64), np.asarray(errors, dtype=np.float64)
    bad = e >= np.quantile(e, 1.0 - worst)
    ranks = rankdata(s)
    n_bad, n_good = int(bad.sum()), int((~bad).sum())
    return float((ranks[bad].sum() - n_bad * (n_bad + 1) / 2) / (n_bad * n_good))


def _score(fb, fn, frame: tuple, what: str) -> float:
    """The student's score of one frame ``(z, forces, energies)`` (tensors) as a float."""
    out = call_student(fb, fn, tuple(x.clone() for x in frame), f"failure_score on {what}",
                       "failure_score is called as failure_score(z, forces, energies), without the positions: the "
                       "score is a function of the committee's predictions")
    try:
        value = float(out.reshape(()) if isinstance(out, (torch.Tensor, np.ndarray)) else out)
    except (TypeError, ValueError, RuntimeError):
        fb.expect(False, f"return one number per frame (a float or a tensor with one element); got "
                  f"{shape_of(out, arrays=True) if hasattr(out, 'shape') else type_name(out)} on {what}", fatal=True)
    if not np.isfinite(value):
        fb.expect(False, f"the score is {value} on {what} (a division by a zero disagreement or force? the members "
                  "can agree exactly, and a force can vanish)", fatal=True)
    return value


def _frame(sample: dict, k: int) -> tuple[torch.Tensor, ...]:
    """What the score receives of frame ``k``: ``(z [N], forces [M, N, 3], energies [M])``, never the positions."""
    return (torch.as_tensor(sample["z"]), torch.as_tensor(sample["forces"][:, k]),
            torch.as_tensor(sample["energies"][:, k]))


def _moved(frame, seed: int) -> dict[str, tuple]:
    """The frame under each required symmetry, by name."""
    z, forces, energies = frame
    R, M = random_rotation_and_reflection(seed, seed)
    atoms = torch.randperm(len(z), generator=rng(seed + 5))
    members = torch.roll(torch.arange(len(energies)), 1)
    return {"rotation of the frame (every member's forces turned alike)": (z, forces @ R.T, energies),
            "reflection of the frame (every member's forces reflected alike)": (z, forces @ M.T, energies),
            "renumbering of the atoms (z and forces alike)": (z[atoms], forces[:, atoms], energies),
            "renumbering of the committee members": (z, forces[members], energies[members])}


def _flag_symmetries(fn, fb, probes: list, seed: int) -> list[str]:
    """The required symmetries on a few frames; the names (with the change) of those the score breaks."""
    base = [_score(fb, fn, f, f"frame {k}") for k, f in enumerate(probes)]
    tol = 1e-6 * max(1e-6, max(abs(b) for b in base))
    errors: dict[str, float] = {}
    for k, frame in enumerate(probes):
        for name, moved in _moved(frame, seed + k).items():
            err = abs(_score(fb, fn, moved, f"frame {k} after the {name.split(' (')[0]}") - base[k])
            errors[name] = max(errors.get(name, 0.0), err)
    broken = []
    for name, err in errors.items():
        short = name.split(" (")[0]
        if err > tol:
            broken.append(f"{short} (the score changes by {err:.1e})")
        fb.expect(err <= tol, f"not invariant under the {name}: the score changes by {err:.1e}"
                  + (" (use lengths of force vectors or of their differences, never their components)"
                     if "rotation" in name or "reflection" in name
                     else " (sum, average or take the largest over the atoms or members: none may have a special "
                     "place in the list)"), ok=f"invariant under the {short}")
    return broken


def _disagreement_response(fn, fb, probes: list) -> None:
    """Required: the score rises when the members disagree more (deviations from the mean doubled, mean kept)."""
    worse = []
    for k, (z, forces, energies) in enumerate(probes):
        doubled = (z, 2 * forces - forces.mean(0), 2 * energies - energies.mean())
        worse.append(_score(fb, fn, doubled, f"frame {k} with the members' disagreement doubled")
                     - _score(fb, fn, (z, forces, energies), f"frame {k}"))
    scale = 1e-9 * max(1.0, max(abs(_score(fb, fn, f, f"frame {k}")) for k, f in enumerate(probes)))
    if all(abs(d) <= scale for d in worse):
        fb.expect(False, "the score does not change when the members disagree twice as much (each member's deviation "
                  "from the committee mean doubled, the mean kept): it ignores the committee's disagreement, and this "
                  "exercise is about a committee score (a score of the mean prediction alone, "
                  "however good, is not one); this case scores 0", fatal=True)
    fb.expect(all(d > scale for d in worse), "the score does not rise on every frame when the members disagree twice "
              f"as much (changes {', '.join(f'{d:+.1e}' for d in worse)}): a frame on which the committee disagrees "
              "more must not look safer; this case scores 0", fatal=True,
              ok="rises when the committee disagrees more")


@exercise("10.failure_flag", "design: a committee score that flags frames with large force errors")
def check_failure_flag(fn, fb, seed: int = 0, parts=None, expected=None):
    """Required properties first (a case that breaks one scores 0, naming each with its size), then the budget and
    the goal: the AUROC of the score for the worst :data:`WORST_FRACTION` of the sample's frames (by the true force
    error) reaches :data:`AUROC_BAR`. ``parts``: the sample (:func:`flag_sample`; default the public one)."""
    sample = flag_sample(parts)
    n = len(sample["error"])
    hot = np.flatnonzero(sample["hot"])
    cool = np.flatnonzero(~sample["hot"])
    pick = torch.randperm(min(len(cool), len(hot)), generator=rng(seed))[:2].numpy()
    probes = [_frame(sample, int(k)) for k in (*cool[pick], *hot[pick])]
    _score(fb, fn, probes[0], "the first frame")
    fb.expect(True, "", ok="one finite number per frame", fatal=True)
    broken = _flag_symmetries(fn, fb, probes, seed)
    fb.expect(not broken, f"the design breaks a required symmetry ({'; '.join(broken)}): whatever its accuracy, a "
              "score without them is not a solution, and this case scores 0", fatal=True,
              ok="has every required symmetry")
    _disagreement_response(fn, fb, probes)

    start = time.perf_counter()
    scores = []
    for k in range(n):  # every frame turned and renumbered at random: the score may not depend on how
        z, forces, energies = _frame(sample, k)
        R, _ = random_rotation_and_reflection(rng(1000 * seed + k), None)
        order = torch.randperm(len(z), generator=rng(1000 * seed + k))
        scores.append(_score(fb, fn, (z[order], forces[:, order] @ R.T, energies), f"sample frame {k}"))
    seconds = time.perf_counter() - start
    fb.expect(seconds <= SCORE_SECONDS, f"too slow: the scores of {n} frames took {seconds:.0f} s, the budget is "
              f"{SCORE_SECONDS:.0f} s (vectorise: the members and the atoms of a frame at once)", fatal=True,
              ok=f"within the time budget ({n} frames)")
    auroc = flag_auroc(scores, sample["error"])
    where = f"{n} frames ({len(cool)} at 500 K, {len(hot)} at 1000 K)"
    fb.expect(auroc >= AUROC_BAR, f"missed the bar: the AUROC of your score for the worst {WORST_FRACTION:.0%} of the "
              f"frames by force error is {auroc:.3f} on {where}, the bar is {AUROC_BAR} (chance: 0.5). The error to "
              "flag is that of the committee's mean force, atom by atom: which quantity of the members' forces grows "
              "with it (section 7)?", ok=f"AUROC {auroc:.3f} >= {AUROC_BAR} for the worst {WORST_FRACTION:.0%} of "
              f"{where}", values=True)
