"""Calibration of the bar of 10.failure_flag: the AUROC of honest and weak designs on the public sample and the
hidden samples, and over random samples of the same make.

    python grading/hidden/reference/calibrate_nb10.py [--samples 300]

Prints one line per design (AUROC on the public sample / hidden case 1 / hidden case 2, then the mean and the
1st-99th percentiles over ``--samples`` random hidden samples, and how often it is below/above the bar). The
numbers go into INSTRUCTORS.md, section 9 (rubric of 10.failure_flag). Instructor material: it reads the hidden
frames (grading/hidden/data/nb10/).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np

from course_lib.teaching.exercises import nb10 as public


def _hidden():
    spec = importlib.util.spec_from_file_location("_calibrate_hidden_nb10", Path(__file__).parents[1] / "nb10.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _designs() -> dict:
    """Scores of a sample ``s`` (forces [M, F, N, 3], energies [M, F]) per frame [F], by design name."""
    def sigma(s):  # per-atom disagreement [F, N]
        f = s["forces"]
        return np.sqrt(((f - f.mean(0)) ** 2).sum((0, 3)) / (len(f) - 1))

    def fbar(s):  # norm of the mean force per atom [F, N]
        return np.linalg.norm(s["forces"].mean(0), axis=-1)

    return {"reference: mean sigma_a": lambda s: sigma(s).mean(-1),
            "largest sigma_a": lambda s: sigma(s).max(-1),
            "rms sigma_a": lambda s: np.sqrt((sigma(s) ** 2).mean(-1)),
            "weak: norm of the mean force (+1e-3 sigma)": lambda s: fbar(s).mean(-1) + 1e-3 * sigma(s).mean(-1),
            "weak: largest mean force (+1e-3 sigma)": lambda s: fbar(s).max(-1) + 1e-3 * sigma(s).mean(-1),
            "weak: mean sigma / (mean force + 0.5)": lambda s: sigma(s).mean(-1) / (fbar(s).mean(-1) + 0.5),
            "weak: spread of the energies": lambda s: s["energies"].std(0),
            "no committee: mean predicted energy": lambda s: s["energies"].mean(0)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=300)
    args = ap.parse_args(argv)
    hidden = _hidden()
    pools = {key: (str(path), tuple(range(public.frame_count(str(path)))))
             for key, path in hidden.HIDDEN_FRAMES.items()}
    pool = public.flag_sample(tuple(pools.values()))  # every hidden frame: the committee's predictions once
    n500 = len(pools["500K"][1])
    cases = {"public": public.flag_sample(), "hidden 1": public.flag_sample(hidden.hidden_parts(1)),
             "hidden 2": public.flag_sample(hidden.hidden_parts(2))}
    g = np.random.default_rng(12345)
    draws = [np.concatenate([g.choice(n500, public.HIDDEN_SAMPLE["500K"], replace=False),
                             n500 + g.choice(len(pools["1000K"][1]), public.HIDDEN_SAMPLE["1000K"], replace=False)])
             for _ in range(args.samples)]
    print(f"bar {public.AUROC_BAR}; hidden pools: {n500} frames at 500 K, {len(pools['1000K'][1])} at 1000 K; "
          f"{args.samples} random samples of {public.HIDDEN_SAMPLE}")
    for name, design in _designs().items():
        fixed = [public.flag_auroc(design(s), s["error"]) for s in cases.values()]
        all_scores = design(pool)
        rand = np.array([public.flag_auroc(all_scores[d], pool["error"][d]) for d in draws])
        lo, hi = np.percentile(rand, [1, 99])
        print(f"{name:45s} {' / '.join(f'{a:.3f}' for a in fixed)}   random: mean {rand.mean():.3f} "
              f"(1-99%: {lo:.3f}-{hi:.3f}), below bar {np.mean(rand < public.AUROC_BAR):.0%}")


if __name__ == "__main__":
    main()
