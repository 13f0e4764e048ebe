"""Reference solutions of notebook 08 and the outputs of the known mistakes the checkers diagnose.

Instructor material: not part of the installed package (see ``nb01.py`` here for the contract of ``compute``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["velocity_verlet_step", "distance_histogram", "compute", "SOLUTIONS"]


def velocity_verlet_step(pos, vel, forces, masses, dt, force_fn):
    """Reference solution of 08.velocity_verlet_step: ``(new_pos, new_vel, new_forces)``, one force call."""
    acc = forces / masses[:, None]
    new_pos = pos + dt * vel + 0.5 * dt ** 2 * acc
    new_forces = force_fn(new_pos)
    new_vel = vel + 0.5 * dt * (acc + new_forces / masses[:, None])
    return new_pos, new_vel, new_forces


def distance_histogram(positions, edges):
    """Reference solution of 08.distance_histogram: positions ``[F, N, d]``, edges ``[B + 1]`` -> ``h [B]``."""
    positions = np.asarray(positions, dtype=np.float64)
    i, j = np.triu_indices(positions.shape[1], k=1)
    counts = np.histogram(np.linalg.norm(positions[:, j] - positions[:, i], axis=-1).ravel(), bins=edges)[0]
    return counts / (positions.shape[0] * np.diff(edges))


def md_setup():
    """Reference solution of the design exercise 08.md_setup: dt = 0.8 fs (375 force calls for 300 fs, within the
    budget of 400; NVE energy error about 2 meV per atom against the bar of 4), Langevin with 1/friction = 100 fs.
    Checked by running MD, no stored output."""
    return {"timestep_fs": 0.8, "thermostat": "langevin", "friction_per_fs": 0.01}


SOLUTIONS = {"08.velocity_verlet_step": velocity_verlet_step, "08.distance_histogram": distance_histogram,
             "08.md_setup": md_setup}


def _verlet(variant, pos, vel, forces, masses, dt, force_fn):
    acc = forces / masses[:, None]
    new_pos, new_vel, new_forces = velocity_verlet_step(pos, vel, forces, masses, dt, force_fn)
    acc_new = new_forces / masses[:, None]
    return {
        "values": lambda: (new_pos, new_vel, new_forces),
        "pos: no acceleration": lambda: pos + dt * vel,
        "pos: no 1/2": lambda: pos + dt * vel + dt ** 2 * acc,
        "pos: no mass": lambda: pos + dt * vel + 0.5 * dt ** 2 * forces,
        "pos: times mass": lambda: pos + dt * vel + 0.5 * dt ** 2 * forces * masses[:, None],
        "pos: new velocity": lambda: pos + dt * new_vel,
        "vel: old forces only": lambda: vel + dt * acc,
        "vel: new forces only": lambda: vel + dt * acc_new,
        "vel: no 1/2": lambda: vel + dt * (acc + acc_new),
        "vel: no mass": lambda: vel + 0.5 * dt * (forces + new_forces),
    }[variant]()


def _histogram(variant, positions, edges):
    frames, n = positions.shape[:2]
    width = np.diff(edges)
    i, j = np.triu_indices(n, k=1)
    dist = np.linalg.norm(positions[:, j] - positions[:, i], axis=-1).ravel()
    counts = np.histogram(dist, bins=edges)[0]
    self_counts = counts.copy()
    self_counts[0] += frames * n
    return {
        "values": lambda: distance_histogram(positions, edges),
        "pairs twice": lambda: 2 * distance_histogram(positions, edges),
        "all entries": lambda: (2 * counts + np.eye(len(counts))[0] * frames * n) / (frames * width),
        "self pairs": lambda: self_counts / (frames * width),
        "no frames": lambda: counts / width,
        "no width": lambda: counts / frames,
        "first width": lambda: counts / (frames * width[0]),
        "mean width": lambda: counts / (frames * width.mean()),
        "normalised": lambda: counts / (counts.sum() * width),
        "probability": lambda: counts / counts.sum(),
        "per distance": lambda: counts / dist.size,
    }[variant]()


def compute(exercise_id: str, variant: str, *inputs):
    """The expected output of ``variant`` ("values": the correct one; else a named mistake) on ``inputs``."""
    if exercise_id == "08.velocity_verlet_step":
        return _verlet(variant, *inputs)
    if exercise_id == "08.distance_histogram":
        return _histogram(variant, *inputs)
    raise KeyError(exercise_id)
