"""Checkers of notebook 01: invariant MPNN energies in a periodic box.

Exercises:

- ``01.minimum_image``: reduce displacement vectors with the minimum-image convention.
- ``01.message_passing_step``: one message / aggregate / update step with sum aggregation, messages
  weighted by the smooth cutoff.
- ``01.invariance_error``: measure how much a model's energy changes under a symmetry of the box.

No reference solution is here: the expected outputs (of the correct solution and of the known
mistakes) come from the checker's ``expected`` provider (:mod:`course_lib.teaching.exercises.stored`).
"""

from __future__ import annotations

import torch

from course_lib import symmetry as S
from course_lib.teaching.checks import exercise
from course_lib.teaching.exercises.common import close, expect_tensor, shape_of
from course_lib.teaching.exercises.stored import provider

__all__ = ["check_minimum_image", "check_message_passing_step", "check_invariance_error"]

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
