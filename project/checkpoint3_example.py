"""Checkpoint 3 of the replication project, worked: a synthetic verification of an equivariant potential.

    python project/checkpoint3_example.py            # about 10 s on a CPU; exit code 0 = every check passed
    python project/checkpoint3_example.py --json out.json

A first implementation of a paper is trusted only after it passes checks whose answer is known *without*
training: here the course's NequIP (``course_lib.models.nequip.NequIP``, the reference implementation of the
kit) on the course's own GFN2-xTB ethanol frames (``course_lib.datasets.load_molecules``). Students run the same
checks on their own implementation (swap ``build_model``) before any benchmark number is worth reporting.

1. **E(3) and permutations**: the energy is invariant and the forces are equivariant under a random rotation, a
   reflection, a translation and a permutation of the atoms (``course_lib.symmetry.assert_equivariant``).
2. **Forces are the gradient of the energy**: central finite differences of the energy along random
   directions match ``-F · d`` (float64).
3. **Locality (the cutoff)**: two molecules further apart than the cutoff (times the number of layers) do not
   interact: E(A + B) = E(A) + E(B), and the forces on A do not depend on B.
4. **It can learn**: a few hundred optimiser steps on 8 training frames reduce the energy+force loss by more than
   a factor of 5 (the smallest sanity check of the training loop: a model that cannot overfit 8 frames has a
   bug). Equal budget in steps, fixed seed.

Each check prints one line "name: OK (...)" or raises AssertionError with the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch_geometric.data import Batch, Data

from course_lib import symmetry as S
from course_lib.datasets import load_molecules
from course_lib.models import energy_and_forces
from course_lib.models.nequip import NequIP


def build_model(seed: int = 0) -> NequIP:
    """The implementation under test (students: return your own model here). Small, so the checks take seconds."""
    torch.manual_seed(seed)
    return NequIP(l_max=1, hidden=8, num_layers=2, cutoff=4.0, radial_hidden=(16,), species=(1, 6, 8))


def check_symmetries(model, frame) -> list[str]:
    probe = Data(z=frame.z, pos=frame.pos)
    lines = []
    for name, T in S.standard_transforms(probe, generator=0).items():
        lines.append(S.assert_equivariant(lambda d: model(d), probe, T, output="invariant", name=f"energy, {name}"))
        lines.append(S.assert_equivariant(lambda d: energy_and_forces(model, d)[1], probe, T, output="vector",
                                          name=f"forces, {name}"))
    return lines


def check_forces_are_gradients(model, frame, h: float = 1e-4, n_dirs: int = 3) -> str:
    g = torch.Generator().manual_seed(1)
    _, forces = energy_and_forces(model, Data(z=frame.z, pos=frame.pos))
    worst = 0.0
    for _ in range(n_dirs):
        d = torch.randn(frame.pos.shape, generator=g, dtype=frame.pos.dtype)
        d = d / d.norm()
        with torch.no_grad():
            e_plus = model(Data(z=frame.z, pos=frame.pos + h * d))
            e_minus = model(Data(z=frame.z, pos=frame.pos - h * d))
        fd = float((e_plus - e_minus).sum() / (2 * h))
        worst = max(worst, abs(fd + float((forces * d).sum())))
    assert worst < 1e-6, f"forces are not -dE/dx: finite-difference mismatch {worst:.2e} eV/A"
    return "forces = -dE/dx (central finite differences, 3 directions): OK (err < 1e-06)"


def check_locality(model, frame) -> str:
    far = 3 * model.config["cutoff"] * model.config["num_layers"]
    a = Data(z=frame.z, pos=frame.pos)
    b = Data(z=frame.z, pos=frame.pos + torch.tensor([far, 0.0, 0.0], dtype=frame.pos.dtype))
    both = Data(z=torch.cat([a.z, b.z]), pos=torch.cat([a.pos, b.pos]))
    e_a, f_a = energy_and_forces(model, a)
    e_ab, f_ab = energy_and_forces(model, both)
    err_e = abs(float(e_ab.sum() - 2 * e_a.sum()))
    err_f = float((f_ab[: len(a.z)] - f_a).abs().max())
    assert err_e < 1e-8 and err_f < 1e-8, f"two distant molecules interact: dE {err_e:.2e} eV, dF {err_f:.2e} eV/A"
    return "locality: E(A + B far apart) = E(A) + E(B), forces on A unchanged: OK (err < 1e-08)"


def check_can_learn(model, frames, steps: int = 300, factor: float = 5.0) -> tuple[str, dict]:
    model.fit_energy_scale(frames)
    batch = Batch.from_data_list(frames)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_fn():
        energy, forces = energy_and_forces(model, batch, create_graph=True)
        return ((energy - batch.energy) ** 2).mean() / len(frames[0].z) + ((forces - batch.forces) ** 2).mean()

    model.train()
    first = float(loss_fn())
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    model.eval()
    last = float(loss_fn())
    assert last * factor < first, f"the loss fell only from {first:.3g} to {last:.3g} in {steps} steps on 8 frames"
    return (f"training loop: the loss on 8 frames falls by more than {factor:g}x in {steps} steps: OK",
            {"loss_start": first, "loss_end": last, "steps": steps})


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--steps", type=int, default=300)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    frames = load_molecules("ethanol", "train", dtype=torch.float64)[:8]
    model = build_model().double().eval()
    lines = check_symmetries(model, frames[0])
    lines.append(check_forces_are_gradients(model, frames[0]))
    lines.append(check_locality(model, frames[0]))
    line, training = check_can_learn(model, frames, steps=args.steps)
    lines.append(line)
    for line in lines:
        print(line)
    out = {"checks": lines, "training": training, "passed": True}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    sys.exit(0 if main()["passed"] else 1)
