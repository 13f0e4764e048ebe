"""Checkers of notebook 01: invariant MPNN energies in a periodic box.

Exercises:

- ``01.minimum_image``: reduce displacement vectors with the minimum-image convention.
- ``01.message_passing_step``: one message / aggregate / update step with sum aggregation, messages
  weighted by the smooth cutoff.
- ``01.invariance_error``: measure how much a model's energy changes under a symmetry of the box.
- ``01.energy_features``: a design exercise. A feature vector ``[F]`` of a whole configuration (``F`` <= 64)
  for a linear energy model. Required (a case that breaks one scores 0, the broken ones named with their errors):
  invariance under the box's symmetries (translations through the boundaries, the square's rotations and mirrors)
  and under renumbering the particles. Must *not* have: invariance under a 30 degree rotation (no symmetry of the
  periodic box: a feature that does not see the periodic images is blind to it). Goal: the linear model fitted by
  ridge regression on training configurations reaches a mean absolute error below :data:`ENERGY_MAE_BAR` on other
  configurations; budget :data:`MAX_FEATURES` features and :data:`FEATURE_SECONDS` seconds for all of them.

No reference solution is here: the expected outputs (of the correct solution and of the known
mistakes) come from the checker's ``expected`` provider (:mod:`course_lib.teaching.exercises.stored`).
"""

from __future__ import annotations

import math
import time
from functools import cache

import numpy as np
import torch

from course_lib import symmetry as S
from course_lib.teaching.checks import exercise
from course_lib.teaching.exercises.common import (
    call_student,
    close,
    expect_tensor,
    rng,
    shape_of,
    square_box_operations,
    wrap_into_box,
)
from course_lib.teaching.exercises.stored import provider

__all__ = ["check_minimum_image", "check_message_passing_step", "check_invariance_error", "check_energy_features",
           "fit_linear_energy", "ENERGY_MAE_BAR", "MAX_FEATURES", "FEATURE_SECONDS"]

#: 01.energy_features: the accuracy bar (mean absolute energy error on the test configurations; predicting the
#: mean energy gives about 2)
ENERGY_MAE_BAR = 0.3
#: 01.energy_features: the budget, in features (= weights of the linear model) and in seconds for the features
#: of every configuration of a case (a few hundred at most)
MAX_FEATURES = 64
FEATURE_SECONDS = 15.0

_MINIMUM_IMAGE_MISTAKES = {
    "floor": "you rounded down (floor): the closest image needs the nearest whole number of boxes, "
             "dx - L * round(dx / L)",
    "trunc": "int() / trunc rounds towards zero: use round, dx - L * round(dx / L)",
    "shift added": "sign error: you added L * round(dx / L); subtract it, dx - L * round(dx / L)",
    "negated": "the result has the opposite sign: return dx - L * round(dx / L), not L * round(dx / L) - dx",
}

_MESSAGE_MISTAKES = {
    "summed at the source": "you summed the messages into the source node j (edge_index[0]) instead of the "
                            "target node i (edge_index[1]): aggregate with index i, m_i = sum over edges "
                            "whose target is i",
    "target-source swapped": "messages went to the wrong node: in the PyG convention edge_index[0] is the "
                             "source j and edge_index[1] the target i (j, i = edge_index), and m_ij is summed "
                             "over edges with the same target i",
    "no residual": "the residual connection is missing: return h + phi_h([h, m_i])",
    "mean": "you averaged the messages; this exercise uses sum aggregation (m_i = sum_j m_ij)",
    "h_j first": "the message input is in the wrong order: phi_e takes [h_i, h_j, e_ij] (target first), "
                 "you gave [h_j, h_i, e_ij]",
    "m_i first": "the update input is in the wrong order: phi_h takes [h_i, m_i], you gave [m_i, h_i]",
    "weight ignored": "the messages are not weighted by the cutoff: every message must be multiplied by the "
                      "weight of its edge, w_ij = f_c(r_ij), so that a pair at the cutoff (w_ij = 0) contributes "
                      "nothing and the energy stays continuous when a pair enters or leaves the neighbour list",
    "weight on the edge features": "you weighted the edge features e_ij, not the message: phi_e(h_i, h_j, 0) is "
                                   "not zero, so an edge at the cutoff still sends a message; multiply the "
                                   "output of phi_e by w_ij",
}


@exercise("01.minimum_image", "minimum-image displacement in a periodic box")
def check_minimum_image(fn, fb, seed: int = 0, n: int = 200, expected=None):
    want = provider(expected)
    g = torch.Generator().manual_seed(seed)
    L = torch.tensor([10.0, 7.0], dtype=torch.float64)
    dx = (torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5) * 4 * L  # up to two boxes away
    ref = want("01.minimum_image", "values", dx, L)
    mistakes = {name: want("01.minimum_image", name, dx, L) for name in _MINIMUM_IMAGE_MISTAKES}
    out = fn(dx.clone(), L)
    expect_tensor(fb, out)
    fb.expect(out.shape == dx.shape, f"the output has shape {shape_of(out)}; expected {tuple(dx.shape)} "
              "(one reduced vector per input vector)", fatal=True)
    fb.expect(bool((out.abs() <= L / 2 + 1e-9).all()),
              "some components are longer than L/2: the minimum image of a displacement has every component "
              "in [-L/2, L/2]; subtract L * round(dx / L)")
    shift = (dx - out) / L
    fb.expect(torch.allclose(shift, shift.round(), atol=1e-9),
              "the output differs from the input by something that is not a whole number of box lengths: "
              "you may only add or subtract multiples of L (per component)")
    same = [name for name, value in mistakes.items() if close(out, value, atol=1e-9, rtol=1e-5)]
    fb.expect(close(out, ref, atol=1e-9, rtol=1e-5), _MINIMUM_IMAGE_MISTAKES[same[0]] if same else
              "the result is not the closest periodic image: expected dx - L * round(dx / L), component by "
              "component", values=True)
    # per-component box lengths must be respected
    dx2 = torch.tensor([[6.0, 6.0]], dtype=torch.float64)
    fb.expect(close(fn(dx2, L), torch.tensor([[-4.0, -1.0]], dtype=torch.float64), atol=1e-9, rtol=1e-5),
              "with L = (10, 7) the vector (6, 6) must become (-4, -1): use each component's own box length",
              values=True)
    # the input must not be modified in place
    before = dx.clone()
    fn(dx, L)
    fb.expect(torch.equal(dx, before), "your function modified its input in place; return a new tensor")
    # gradients must flow (forces are computed through this function later)
    x = dx[:5].clone().requires_grad_(True)
    y = fn(x, L)
    fb.expect(y.requires_grad, "the output is detached from the input (no gradient): avoid .detach(), .numpy() "
              "and torch.tensor(...) on the result; forces are derivatives through this function")


@exercise("01.message_passing_step", "one message / aggregate / update step, messages weighted by the cutoff")
def check_message_passing_step(fn, fb, seed: int = 0, expected=None):
    want = provider(expected)
    g = torch.Generator().manual_seed(seed)
    N, H, K = 6, 8, 5
    h = torch.randn(N, H, generator=g, dtype=torch.float64)
    src = torch.tensor([1, 2, 0, 3, 4, 5, 2, 0])
    dst = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4])
    edge_index = torch.stack([src, dst])
    e = torch.randn(edge_index.shape[1], K, generator=g, dtype=torch.float64)
    w = torch.rand(edge_index.shape[1], generator=g, dtype=torch.float64)
    w[6] = 0.0  # the only edge into node 3 sits at the cutoff
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        phi_e = torch.nn.Sequential(torch.nn.Linear(2 * H + K, H), torch.nn.SiLU(), torch.nn.Linear(H, H)).double()
        phi_h = torch.nn.Sequential(torch.nn.Linear(2 * H, H), torch.nn.SiLU(), torch.nn.Linear(H, H)).double()
    inputs = (h, e, edge_index, phi_e, phi_h, w)
    ref = want("01.message_passing_step", "values", *inputs)
    mistakes = {name: want("01.message_passing_step", name, *inputs) for name in _MESSAGE_MISTAKES}
    out = fn(h.clone(), e.clone(), edge_index.clone(), phi_e, phi_h, w.clone())
    fb.expect(isinstance(out, torch.Tensor) and out.shape == (N, H),
              f"the output has shape {shape_of(out)}; expected {(N, H)}: one updated feature vector per node",
              fatal=True)
    same = [name for name, value in mistakes.items() if close(out, value, atol=1e-6, rtol=1e-5)]
    fb.expect(close(out, ref, atol=1e-6, rtol=1e-5), _MESSAGE_MISTAKES[same[0]] if same else
              "the output differs from m_ij = w_ij phi_e([h_i, h_j, e_ij]), m_i = sum_j m_ij over the edges with "
              "target i, h_i + phi_h([h_i, m_i])", ok="matches the expected values", values=True)
    # permutation equivariance of the step itself
    perm = torch.randperm(N, generator=g)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(N)
    out_p = fn(h[perm], e, inv[edge_index], phi_e, phi_h, w)
    fb.expect(close(out_p, out[perm], atol=1e-6, rtol=1e-5),
              "relabelling the nodes does not just relabel your output: the step is not permutation "
              "equivariant (do not use the node order, e.g. cumulative sums or fixed positions)")
    if same:  # a named mistake is diagnosed once, not again by its consequences
        return
    # a node without incoming edges, or whose only edge is at the cutoff, only gets phi_h(h, 0)
    for node, why in ((N - 1, "a node with no incoming edges"), (3, "a node whose only edge has w_ij = 0")):
        with torch.no_grad():
            expected_node = h[node] + phi_h(torch.cat([h[node], torch.zeros(H, dtype=h.dtype)]))
        fb.expect(close(out[node], expected_node, atol=1e-6, rtol=1e-5),
                  f"{why} must receive m_i = 0", values=True)


@exercise("01.invariance_error", "measure the invariance error of an energy model")
def check_invariance_error(fn, fb, seed: int = 0, expected=None):
    from torch_geometric.data import Batch

    from course_lib.data import make_graph
    from course_lib.models.baselines import AbsolutePositionGNN
    from course_lib.models.mpnn import InvariantMPNN

    g = torch.Generator().manual_seed(seed)
    graphs = []
    for n in (5, 9):
        pos = torch.rand(n, 2, generator=g, dtype=torch.float64) * 10
        charge = (torch.randint(0, 2, (n,), generator=g) * 2 - 1).double()
        graphs.append(make_graph(pos, dtype=torch.float64, charge=charge, box=[10.0, 10.0]))
    batch = Batch.from_data_list(graphs)
    want = provider(expected)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        good = InvariantMPNN(hidden=16, num_layers=2).double().eval()
        bad = AbsolutePositionGNN(hidden=16, num_layers=2).double().eval()
    Ts = S.standard_transforms(batch, generator=seed)
    for name in ("periodic translation", "box rotation 90"):
        T = Ts[name]
        ref_bad = float(want("01.invariance_error", "values", bad, batch, T))
        got_good = fn(good, batch, T)
        fb.expect(isinstance(got_good, (float, int)) or (isinstance(got_good, torch.Tensor) and got_good.numel() == 1),
                  f"return a single number (a float), got {shape_of(got_good)}", fatal=True)
        got_good = float(got_good)
        got_bad = float(fn(bad, batch, T))
        fb.expect(got_good < 1e-9, f"{name}: for the invariant MPNN your error is {got_good:.2e}, expected ~0: "
                  "compare the model's energies on the transformed batch and on the original batch")
        fb.expect(got_bad > 1e-6, f"{name}: for a model that is NOT invariant your error is {got_bad:.2e}: "
                  "did you apply the transform (transform(data)) before calling the model?")
        fb.expect(abs(got_bad - ref_bad) <= 1e-6 * max(1.0, ref_bad),
                  f"{name}: for the non-invariant model you report {got_bad:.4e}, expected {ref_bad:.4e} "
                  "(the largest absolute energy difference over the graphs of the batch)", values=True)


# --------------------------------------------------------------------------------------------------- 01.energy_features


@cache
def _energy_split(split: str) -> tuple:
    """``(pos, charge, L, energy)`` per configuration of a split of the energy dataset, float64 (read from the
    arrays directly: building and validating thousands of graphs would cost the grader's time limit seconds)."""
    from course_lib.datasets import load_arrays  # the data are loaded when the exercise is checked

    arrays = load_arrays("energy")
    ptr = np.concatenate([[0], np.cumsum(arrays["num_nodes"])])
    pos, charge = torch.from_numpy(arrays["pos"]).double(), torch.from_numpy(arrays["charge"]).double()
    return tuple((pos[ptr[g]:ptr[g + 1]], charge[ptr[g]:ptr[g + 1]], float(arrays["box"][g].reshape(-1)[0]),
                  float(arrays["energy"][g])) for g in arrays[f"{split}_idx"])


def _features(fb, fn, config, what: str, n_features: int | None = None) -> torch.Tensor:
    pos, charge, L, _ = config
    out = call_student(fb, fn, (pos.clone(), charge.clone(), L), f"energy_features on {what}")
    if not isinstance(out, torch.Tensor):
        expect_tensor(fb, out, "energy_features")
    ok = out.dim() == 1 and 0 < out.numel() <= MAX_FEATURES and (n_features is None or out.numel() == n_features)
    if not ok:
        want = f"({n_features},) as on the first configuration" if n_features else f"(F,) with 1 <= F <= {MAX_FEATURES}"
        fb.expect(False, f"return one feature vector per configuration, shape {want}; got {shape_of(out)} on {what}"
                  + (f" (the budget is {MAX_FEATURES} features: one weight of the linear model each)"
                     if out.dim() == 1 and out.numel() > MAX_FEATURES else ""), fatal=True)
    out = out.detach().to(torch.float64)
    if not bool(torch.isfinite(out).all()):
        fb.expect(False, f"the features have NaN or inf on {what} (a division by a zero distance? a particle's "
                  "distance to itself is 0: leave the pairs i = i out)", fatal=True)
    return out


def fit_linear_energy(X: torch.Tensor, y: torch.Tensor, X_test: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """The fixed training run of 01.energy_features: standardise the features on the training set, fit
    ``E = w . f + b`` by ridge regression (closed form), predict the test energies. X [S, F], y [S] -> [S_test]."""
    mean, std = X.mean(0), X.std(0)
    std = torch.where(std > 1e-12 * max(1.0, float(std.max())), std, torch.ones_like(std))
    Z = torch.cat([(X - mean) / std, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    Z_test = torch.cat([(X_test - mean) / std, torch.ones(len(X_test), 1, dtype=X.dtype)], 1)
    A = Z.T @ Z + ridge * len(Z) * torch.eye(Z.shape[1], dtype=Z.dtype)
    return Z_test @ torch.linalg.solve(A, Z.T @ y)


def _energy_symmetries(fn, fb, configs, seed: int, n_features: int) -> list[str]:
    """The required symmetries on a few configurations; the names (with errors) of those the features break."""
    broken = []
    base = [_features(fb, fn, c, f"configuration {k}", n_features) for k, c in enumerate(configs)]
    scale = max(1.0, max(float(f.abs().max()) for f in base))
    errors = {}
    for k, (pos, charge, L, e) in enumerate(configs):
        for name, (R, t) in square_box_operations(L, seed + k).items():
            moved = (wrap_into_box(pos @ R.T + t, L), charge, L, e)
            key = name.split(" by (")[0] if name.startswith("translation") else name
            err = float((_features(fb, fn, moved, f"configuration {k} after the {key}", n_features) - base[k])
                        .abs().max())
            errors[key] = max(errors.get(key, 0.0), err)
        g = rng(seed + 10 + k)
        for perm in (torch.randperm(len(pos), generator=g) for _ in range(3)):
            err = float((_features(fb, fn, (pos[perm], charge[perm], L, e), f"configuration {k} renumbered",
                                   n_features) - base[k]).abs().max())
            errors["renumbering of the particles"] = max(errors.get("renumbering of the particles", 0.0), err)
    for key, err in errors.items():
        ok = err <= 1e-8 * scale
        if not ok:
            broken.append(f"{key} (the features change by {err:.1e})")
        fb.expect(ok, f"not invariant under the {key}: the features change by {err:.1e}"
                  + (" (use minimum-image displacements between particles, never positions)" if "translation" in key
                     else " (sum over particles or pairs: no particle may have a special place in the list)"
                     if "renumbering" in key else " (use lengths of displacements, not their components)"),
                  ok=f"invariant under the {key}")
    return broken


@exercise("01.energy_features", "design: invariant features for a linear energy model that reaches the bar")
def check_energy_features(fn, fb, seed: int = 0, n_train: int = 200, n_test: int = 100, test_split: str = "val",
                          expected=None):
    """Required symmetries first (a case that breaks one scores 0, naming each with its error), then the
    symmetry it must not have (a 30 degree rotation), the budget, and the goal: a linear model fitted on
    ``n_train`` training configurations reaches a test MAE below :data:`ENERGY_MAE_BAR`."""
    train, test = _energy_split("train"), _energy_split(test_split)
    g = rng(seed)
    train = [train[int(k)] for k in (torch.arange(n_train) if seed == 0 else torch.randperm(len(train), generator=g)
                                     [:n_train])]
    test = [test[int(k)] for k in torch.randperm(len(test), generator=g)[:n_test]]
    first = _features(fb, fn, train[0], "the first configuration")
    fb.expect(True, "", ok=f"{first.numel()} features per configuration (budget {MAX_FEATURES})", fatal=True)
    n_features = first.numel()
    probes = sorted(train[:40], key=lambda c: -len(c[0]))[:4]  # the most crowded: pairs through the boundaries
    broken = _energy_symmetries(fn, fb, probes, seed, n_features)
    fb.expect(not broken, f"the design breaks a required symmetry ({'; '.join(broken)}): whatever its accuracy, "
              "a feature set without them is not a solution, and this case scores 0", fatal=True,
              ok="has every required symmetry")

    start = time.perf_counter()
    X = torch.stack([_features(fb, fn, c, f"training configuration {k}", n_features) for k, c in enumerate(train)])
    X_test = torch.stack([_features(fb, fn, c, f"test configuration {k}", n_features) for k, c in enumerate(test)])
    seconds = time.perf_counter() - start
    fb.expect(seconds <= FEATURE_SECONDS, f"too slow: the features of {len(train) + len(test)} configurations took "
              f"{seconds:.0f} s, the budget is {FEATURE_SECONDS:.0f} s (vectorise the loops over pairs)", fatal=True,
              ok=f"within the time budget ({len(train) + len(test)} configurations)")

    turned = 0.0
    R = S.rotation_matrix_2d(math.radians(30)).to(torch.float64)
    for pos, charge, L, e in probes:
        c = torch.full((2,), L / 2, dtype=torch.float64)
        moved = (wrap_into_box((pos - c) @ R.T + c, L), charge, L, e)
        turned = max(turned, float((_features(fb, fn, moved, "a configuration rotated by 30 deg", n_features)
                                    - _features(fb, fn, (pos, charge, L, e), "a configuration", n_features))
                                   .abs().max()))
    fb.expect(turned > 1e-6 * max(1.0, float(X.abs().max())), "the features do not change under a rotation by 30 deg "
              "about the box centre, which is NOT a symmetry of the periodic box (pairs that are neighbours through "
              "the boundary are torn apart): they are blind to the periodic images, or to the positions altogether",
              ok="changes under a 30 deg rotation (not a symmetry of the box)")

    y = torch.tensor([c[3] for c in train], dtype=torch.float64)
    y_test = torch.tensor([c[3] for c in test], dtype=torch.float64)
    mae = float((fit_linear_energy(X, y, X_test) - y_test).abs().mean())
    baseline = float((y_test - y.mean()).abs().mean())
    fb.expect(mae < ENERGY_MAE_BAR, f"missed the accuracy bar: the linear model on your {n_features} features has a "
              f"test MAE of {mae:.3f} on {len(test)} configurations, the bar is {ENERGY_MAE_BAR} (predicting the mean "
              f"energy: {baseline:.2f}). The energy is a sum over pairs of a function of the distance that depends "
              "on the charges: resolve the distance (several radial functions) and the sign of q_i q_j",
              ok=f"test MAE {mae:.3f} < {ENERGY_MAE_BAR} on {len(test)} configurations (predicting the mean: "
                 f"{baseline:.2f})", values=True)
