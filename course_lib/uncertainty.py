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
"""

from __future__ import annotations

import numpy as np
from torch_geometric.loader import DataLoader

from course_lib.models import energy_and_forces

__all__ = ["committee_forces", "force_disagreement", "per_frame_mean", "spearman"]


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
