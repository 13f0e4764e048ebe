"""Committee (ensemble) uncertainty for learned potentials: the disagreement of models that differ only in their seed.

Train K models with the same data, architecture and budget, differing only in the random seed (initial weights,
order of the batches). Where the training data pin the energy surface down, they agree; away from it they
disagree. The spread of their force predictions is a cheap *error estimate* that needs no reference calculation,
which is what makes it useful: it can flag configurations to label (active learning) or an MD run that leaves the
training distribution. Whether it is a *good* estimate is an empirical question, answered by a calibration plot:
disagreement against the true error on held-out frames.

:func:`committee_forces` evaluates the members; :func:`force_disagreement` is the per-atom standard deviation of
the force vectors over the members, ``σ_a = sqrt( 1/(K-1) Σ_k |F_a^k - F̄_a|² )`` (eV/Å); :func:`per_frame_mean`
averages per-atom values over each frame; :func:`spearman` ranks the agreement of two per-frame quantities.

Using the disagreement during molecular dynamics and for active learning:

- :class:`CommitteeCalculator` drives ASE dynamics with the committee's *mean* energy and forces and leaves the
  per-atom disagreement of every step in ``calc.results["force_sigma"]``;
- :func:`per_replica_max` turns per-atom values of several independent copies of a molecule (replicas) into one
  value per replica (the largest over its atoms: one atom far from the data is enough to flag a frame, the
  criterion of DP-GEN, Zhang et al., *Phys. Rev. Materials* 3, 023804, 2019);
- :func:`first_crossing` and :func:`warning_lead_time` ask *when* a disagreement trace first exceeds a threshold,
  and how long before a failure that was;
- :func:`select_decorrelated` picks frames to label: the highest-scoring frames, at least ``min_separation``
  apart in time within a trajectory (frames 5 fs apart carry nearly the same information).
"""

from __future__ import annotations

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from torch_geometric.loader import DataLoader

from course_lib.ase_calculator import ModelCalculator
from course_lib.models import energy_and_forces

__all__ = ["committee_forces", "force_disagreement", "per_frame_mean", "spearman", "CommitteeCalculator",
           "per_replica_max", "first_crossing", "warning_lead_time", "select_decorrelated"]


def committee_forces(models, frames, batch_size: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energies ``[K, F]`` (eV), forces ``[K, A, 3]`` (eV/Å) of K models (eval mode) on F frames with A atoms in
    all, and the frame index of every atom ``[A]``. Each model is evaluated on the device of its parameters (the
    frames are moved there); the arrays come back on the CPU."""
    if len(models) < 2:
        raise ValueError(f"a committee needs at least 2 models, got {len(models)}")
    energies, forces = [], []
    for model in models:
        if model.training:
            raise ValueError("a committee member is in training mode: call model.eval()")
        e_k, f_k, idx = [], [], []
        offset = 0
        device = next(model.parameters()).device
        for batch in DataLoader(list(frames), batch_size=batch_size):
            e, f = energy_and_forces(model, batch.to(device))
            e_k.append(e.detach().double().cpu().numpy())
            f_k.append(f.detach().double().cpu().numpy())
            idx.append(batch.batch.cpu().numpy() + offset)
            offset += batch.num_graphs
        energies.append(np.concatenate(e_k))
        forces.append(np.concatenate(f_k))
    return np.stack(energies), np.stack(forces), np.concatenate(idx)


def force_disagreement(forces) -> np.ndarray:
    """Per-atom committee spread ``[A]`` of forces ``[K, A, 3]``: ``sqrt(Σ_k |F^k - F̄|² / (K - 1))``."""
    f = np.asarray(forces, dtype=np.float64)
    if f.ndim != 3 or f.shape[0] < 2 or f.shape[2] != 3:
        raise ValueError(f"forces must be [K >= 2, A, 3], got {f.shape}")
    dev = f - f.mean(axis=0, keepdims=True)
    return np.sqrt((dev ** 2).sum(axis=(0, 2)) / (f.shape[0] - 1))


def per_frame_mean(values, frame_index) -> np.ndarray:
    """Mean of per-atom ``values [A]`` over the atoms of each frame (``frame_index [A]``, 0..F-1) -> ``[F]``."""
    v, idx = np.asarray(values, dtype=np.float64), np.asarray(frame_index)
    return np.bincount(idx, weights=v) / np.bincount(idx)


def spearman(x, y) -> float:
    """Spearman rank correlation of two 1-D arrays (ties get average ranks)."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(x), np.asarray(y)).statistic)


class CommitteeCalculator(Calculator):
    """ASE calculator for a committee of energy models: the **mean** energy and forces of the members (what drives
    the dynamics), and ``results["force_sigma"] [N]``, the per-atom disagreement (:func:`force_disagreement`, eV/Å)
    and ``results["member_forces"] [K, N, 3]`` of the same call. Molecules only (eV, Å). Each member is wrapped in a
    :class:`~course_lib.ase_calculator.ModelCalculator` (copied, in ``dtype`` on ``device``; the same checks: eval
    mode, trained species). The mean of the members' energies is a potential whose gradient is the mean force, so
    the dynamics it drives are conservative like those of a single model."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, models, device="cpu", dtype: torch.dtype = torch.float64, **kwargs):
        super().__init__(**kwargs)
        if len(models) < 2:
            raise ValueError(f"a committee needs at least 2 models, got {len(models)}")
        self.members = [ModelCalculator(m, device=device, dtype=dtype, system="molecule") for m in models]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        energies, forces = [], []
        for member in self.members:
            e, f = energy_and_forces(member.model, member.batch(self.atoms), create_graph=False)
            energies.append(float(e.detach().sum()))
            forces.append(f.detach().cpu().double().numpy())
        f = np.stack(forces)
        e = float(np.mean(energies))
        self.results = {"energy": e, "free_energy": e, "forces": f.mean(axis=0),
                        "force_sigma": force_disagreement(f), "member_forces": f}


def per_replica_max(values, n_atoms: int) -> np.ndarray:
    """Largest per-atom value of each replica: ``values [R * n_atoms]`` (replicas one after the other, as in a
    system of R copies of a molecule) -> ``[R]``."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or n_atoms < 1 or len(v) % n_atoms:
        raise ValueError(f"values must be 1-D with a multiple of n_atoms = {n_atoms} entries, got shape {v.shape}")
    return v.reshape(-1, n_atoms).max(axis=1)


def first_crossing(times, values, threshold: float) -> float | None:
    """The first time at which ``values [T]`` (sampled at ``times [T]``, increasing) exceeds ``threshold``;
    ``None`` if it never does."""
    t, v = np.asarray(times, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if t.shape != v.shape or t.ndim != 1:
        raise ValueError(f"times and values must be matching 1-D arrays, got {t.shape} and {v.shape}")
    if len(t) > 1 and np.any(np.diff(t) < 0):
        raise ValueError("times must be increasing")
    above = np.flatnonzero(v > threshold)
    return float(t[above[0]]) if len(above) else None


def warning_lead_time(times, values, threshold: float, failure_time: float | None) -> float | None:
    """How long before ``failure_time`` the trace first crossed ``threshold``: ``failure_time - first crossing``
    (>= 0), using only samples before the failure. ``None`` when the run did not fail (``failure_time is None``)
    or was not warned before it failed."""
    if failure_time is None:
        return None
    t = np.asarray(times, dtype=np.float64)
    before = t <= failure_time
    crossed = first_crossing(t[before], np.asarray(values, dtype=np.float64)[before], threshold)
    return None if crossed is None else float(failure_time - crossed)


def select_decorrelated(times, trajectory, scores, n: int, min_separation: float) -> np.ndarray:
    """Indices of up to ``n`` frames in decreasing order of ``scores [F]``, skipping any frame closer than
    ``min_separation`` in time (``times [F]``) to a frame already taken from the same ``trajectory [F]`` (an id
    per frame). Greedy: the highest score first. Random selection with the same rule: random ``scores``."""
    t = np.asarray(times, dtype=np.float64)
    traj, s = np.asarray(trajectory), np.asarray(scores, dtype=np.float64)
    if not (t.shape == traj.shape == s.shape and t.ndim == 1):
        raise ValueError(f"times, trajectory and scores must be matching 1-D arrays, got {t.shape}, {traj.shape}, "
                         f"{s.shape}")
    if n < 0 or min_separation < 0:
        raise ValueError("need n >= 0 and min_separation >= 0")
    taken: list[int] = []
    for i in np.argsort(-s, kind="stable"):
        if len(taken) == n:
            break
        if all(traj[j] != traj[i] or abs(t[j] - t[i]) >= min_separation for j in taken):
            taken.append(int(i))
    return np.array(taken, dtype=np.int64)
