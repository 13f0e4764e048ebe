"""Calibration of the design exercise 04.nbody_design: the test MSE after the fixed training run of the checker
(:func:`course_lib.teaching.exercises.nb04.train_nbody`) for the reference solution and for weak designs, per seed,
on the public case (seed 0: the first 500 training systems, 300 validation systems) and the hidden cases of
``grading/hidden/nb04.py`` (other random subsets, the test split).

    OMP_NUM_THREADS=1 python grading/hidden/reference/calibrate_nb04.py [--steps N] [--out FILE]

Writes one row per finished run (resumable) into ``--out`` (default ``grading/hidden/reference/nb04_calibration.json``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

from course_lib.teaching.checks import Feedback
from course_lib.teaching.exercises import nb04
from course_lib.utils import machine_info

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("_course_reference_nb04", HERE / "nb04.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

#: (seed, n_train, n_test, test split): the public case and the hidden cases (grading/hidden/nb04.py)
CASES = [(0, 500, 300, "valid"), (1, 800, 500, "test"), (2, 800, 500, "test"), (3, 800, 500, "test")]


class LinearMotion(torch.nn.Module):
    """Weak design: x + t v (one parameter), the paper's Linear baseline."""

    def __init__(self):
        super().__init__()
        self.t = torch.nn.Parameter(torch.tensor(0.7))

    def forward(self, data):
        return data.pos + self.t * data.vel


class DistanceOnly(torch.nn.Module):
    """Weak design: x + t v + (1/M) sum_j phi(|x_ij|) x_ij, blind to the charges (a distance-only radial field)."""

    def __init__(self, hidden=32):
        super().__init__()
        self.t = torch.nn.Parameter(torch.tensor(0.7))
        self.phi = torch.nn.Sequential(torch.nn.Linear(1, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, 1))

    def forward(self, data):
        pos, batch = data.pos, data.batch
        pair = (batch[:, None] == batch[None, :]) & ~torch.eye(len(pos), dtype=torch.bool)
        i, j = torch.nonzero(pair, as_tuple=True)
        d = pos[i] - pos[j]
        w = self.phi(d.norm(dim=-1, keepdim=True))
        return pos + self.t * data.vel + torch.zeros_like(pos).index_add(0, i, w * d) / 5


class CoulombKick(torch.nn.Module):
    """Physics with two parameters: one Coulomb kick x + t v + c sum_j q_i q_j x_ij / |x_ij|^3 (notebook 04, sec. 1)."""

    def __init__(self):
        super().__init__()
        self.t = torch.nn.Parameter(torch.tensor(1.0))
        self.c = torch.nn.Parameter(torch.tensor(0.0))

    def forward(self, data):
        pos, q, batch = data.pos, data.charge.to(data.pos.dtype), data.batch
        pair = (batch[:, None] == batch[None, :]) & ~torch.eye(len(pos), dtype=torch.bool)
        i, j = torch.nonzero(pair, as_tuple=True)
        d = pos[i] - pos[j]
        w = (q[i] * q[j])[:, None] / d.norm(dim=-1, keepdim=True) ** 3
        return pos + self.t * data.vel + self.c * torch.zeros_like(pos).index_add(0, i, w * d)


class ChargedRadialField(torch.nn.Module):
    """A Radial Field that sees the charges (3 layers, width 32, no hidden features):
    x_i <- x_i + (1/M) sum_j tanh(phi_rf(|x_ij|^2, q_i q_j)) x_ij + phi_v(|v_i|) v_i / L."""

    def __init__(self, hidden=32, num_layers=3):
        super().__init__()

        def mlp(n_in):
            last = torch.nn.Linear(hidden, 1)
            torch.nn.init.xavier_uniform_(last.weight, gain=1e-3)
            torch.nn.init.zeros_(last.bias)
            return torch.nn.Sequential(torch.nn.Linear(n_in, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden),
                                       torch.nn.SiLU(), last)

        self.phi_rf = torch.nn.ModuleList(mlp(2) for _ in range(num_layers))
        self.phi_v = torch.nn.ModuleList(mlp(1) for _ in range(num_layers))

    def forward(self, data):
        pos, vel, q, batch = data.pos, data.vel, data.charge.to(data.pos.dtype), data.batch
        pair = (batch[:, None] == batch[None, :]) & ~torch.eye(len(pos), dtype=torch.bool)
        i, j = torch.nonzero(pair, as_tuple=True)
        speed = vel.norm(dim=-1, keepdim=True)
        x = pos
        for phi_rf, phi_v in zip(self.phi_rf, self.phi_v):
            d = x[i] - x[j]
            w = 3.0 * torch.tanh(phi_rf(torch.stack([(d * d).sum(-1), q[i] * q[j]], -1)))
            x = x + torch.zeros_like(x).index_add(0, i, w * d) / 5 + (1 + phi_v(speed)) * vel / len(self.phi_rf)
        return x


DESIGNS = {"reference": reference.NBodyModel, "linear": LinearMotion, "distance_only": DistanceOnly,
           "coulomb_kick": CoulombKick, "radial_field": ChargedRadialField}


def run(design: str, seed: int, n_train: int, n_test: int, split: str, steps: int) -> dict:
    fb = Feedback()
    start = time.process_time()
    model, params = nb04._nbody_build(DESIGNS[design], fb, seed)
    train, test = nb04._nbody_data(seed, n_train, n_test, split)
    before = nb04._test_mse(fb, model, params, test, "test")
    losses = nb04.train_nbody(model, params, train, steps=steps, seed=seed)
    mse = nb04._test_mse(fb, model, params, test, "test")
    return {"design": design, "seed": seed, "n_train": n_train, "n_test": n_test, "test_split": split,
            "steps": steps, "parameters": sum(p.numel() for p in params.values()), "mse_untrained": before,
            "test_mse": mse, "final_train_loss": losses[-1], "cpu_s": round(time.process_time() - start, 2),
            "passes": mse < nb04.NBODY_MSE_BAR}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=nb04.NBODY_STEPS)
    p.add_argument("--designs", default=",".join(DESIGNS))
    p.add_argument("--out", default=str(HERE / "nb04_calibration.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    doc.update(command="python " + " ".join(sys.argv), date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
               machine=machine_info(), bar=nb04.NBODY_MSE_BAR, steps=args.steps, batch=nb04.NBODY_BATCH,
               lr=nb04.NBODY_LR, max_parameters=nb04.NBODY_MAX_PARAMETERS)
    done = {(r["design"], r["seed"], r["steps"]) for r in doc["runs"]}
    for design in args.designs.split(","):
        for seed, n_train, n_test, split in CASES:
            if (design, seed, args.steps) in done:
                continue
            row = run(design, seed, n_train, n_test, split, args.steps)
            doc["runs"].append(row)
            out.write_text(json.dumps(doc, indent=1) + "\n")
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
