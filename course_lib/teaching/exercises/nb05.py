"""Checkers of notebook 05: SchNet energies and forces of molecules.

Exercises:

- ``05.gaussian_expansion``: expand distances in Gaussians exp(-gamma (r - mu_k)^2).
- ``05.cfconv``: the continuous-filter convolution c_i = sum_j y_j o W(r_ij).
- ``05.force_loss``: the energy+force loss rho (E - Ê)^2 + (1/N) sum_i ||F_i + dÊ/dR_i||^2.

No reference solution is here: the expected outputs (of the correct solution and of the known mistakes)
come from the checker's ``expected`` provider (:mod:`course_lib.teaching.exercises.stored`).
"""

from __future__ import annotations

import torch

from course_lib.teaching.checks import exercise
from course_lib.teaching.exercises.common import close, expect_tensor, shape_of
from course_lib.teaching.exercises.stored import provider

__all__ = ["check_gaussian_expansion", "check_cfconv", "check_force_loss", "random_molecules", "small_schnet"]

_GAUSSIAN_MISTAKES = {
    "not squared": "the distance to the centre must be squared: exp(-gamma (r - mu_k)^2)",
    "positive exponent": "the sign of the exponent is wrong: exp(-gamma (r - mu_k)^2) decays away from mu_k",
    "divided by gamma": "gamma multiplies the squared distance (exp(-gamma d^2)); you divided by it",
}
_CFCONV_MISTAKES = {
    "flipped": "messages went to the wrong atom: edge_index[0] is the source j (whose features y_j are filtered) "
               "and edge_index[1] the target i that sums them",
    "target features": "you filtered the target's own features y_i; the message of edge (j -> i) is y_j o W_ij",
    "dot product": "o is the elementwise product (one filter per feature), not a dot product",
    "mean": "you averaged over neighbours; SchNet sums (the energy is extensive)",
}
_LOSS_MISTAKES = {
    "force sign": "the predicted forces are MINUS the gradient of the energy: F = -dE/dR; compare F with -dÊ/dR "
                  "(or F + dÊ/dR with zero)",
    "no 1/N": "the force term must be divided by the number of atoms N of each molecule ((1/N) sum_i ||...||^2)",
    "mean over components": "sum the squared error over the 3 components of each force (||.||^2); you averaged "
                            "over them",
    "rho on forces": "rho multiplies the energy term, not the force term",
    "global N": "normalise the force term per molecule (its own N), then average over molecules",
    "no force term": "the force term is missing",
    "no energy term": "the energy term rho (E - Ê)^2 is missing",
}


def _diagnose(out, want, exercise_id: str, inputs: tuple, mistakes: dict, default: str) -> str:
    """The text of the first known mistake whose output ``out`` matches, else ``default`` (every mistake's
    output is asked for, so that the stored file holds them all)."""
    outputs = {name: want(exercise_id, name, *inputs) for name in mistakes}
    return next((mistakes[name] for name, v in outputs.items() if close(out, v, atol=1e-8, rtol=1e-6)), default)


# ------------------------------------------------------------------------- helpers


def random_molecules(seed: int, sizes=(3, 5, 4), dtype=torch.float64):
    """A batch of random small 'molecules' (atoms at least 0.9 apart) with random reference labels.

    Public (no leading underscore) because the hidden tests build their batches with it too.
    """
    from torch_geometric.data import Batch

    from course_lib.data import make_graph

    g = torch.Generator().manual_seed(seed)
    graphs = []
    for n in sizes:
        pos = torch.zeros(0, 3, dtype=torch.float64)
        while pos.shape[0] < n:  # rejection sampling keeps atoms apart (no overlapping atoms)
            p = (torch.rand(1, 3, generator=g, dtype=torch.float64) - 0.5) * 3.0
            if pos.shape[0] == 0 or float(torch.cdist(p, pos).min()) > 0.9:
                pos = torch.cat([pos, p])
        z = torch.tensor([1, 6, 8, 7])[torch.randint(0, 4, (n,), generator=g)]
        graphs.append(make_graph(pos, dtype=dtype, z=z, energy=torch.randn(1, generator=g, dtype=dtype),
                                 forces=torch.randn(n, 3, generator=g, dtype=dtype)))
    return Batch.from_data_list(graphs)


def small_schnet(seed: int, dtype=torch.float64):
    """A small seeded SchNet (the model of the checks of 05.force_loss, also used by the hidden tests)."""
    from course_lib.models.schnet import SchNet

    torch.manual_seed(seed)
    return SchNet(hidden=16, filters=16, num_layers=2, num_basis=12, cutoff=4.0, max_z=10).to(dtype)


# ------------------------------------------------------------------------- checkers


@exercise("05.gaussian_expansion", "expand distances in Gaussians")
def check_gaussian_expansion(fn, fb, seed: int = 0, n: int = 50, k: int = 20, expected=None):
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(n, generator=g, dtype=torch.float64) * 5.0
    mu = torch.linspace(0.0, 5.0, k, dtype=torch.float64)
    gamma = 0.5 / float(mu[1] - mu[0]) ** 2
    out = fn(r.clone(), mu.clone(), gamma)
    expect_tensor(fb, out)
    if out.shape == (k, n):
        fb.expect(False, f"the output has shape {shape_of(out)}, the transpose of the expected {(n, k)}: one row per "
                  "distance, one column per Gaussian (use r[:, None] - mu[None, :])", fatal=True)
    fb.expect(out.shape == (n, k), f"the output has shape {shape_of(out)}; expected {(n, k)}: one row per distance "
              "r_ij, one column per centre mu_k", fatal=True)
    want = provider(expected)
    inputs = (r, mu, gamma)
    msg = _diagnose(out, want, "05.gaussian_expansion", inputs, _GAUSSIAN_MISTAKES,
                    "the values differ from exp(-gamma (r_ij - mu_k)^2)")
    fb.expect(close(out, want("05.gaussian_expansion", "values", *inputs), atol=1e-8, rtol=1e-6), msg,
              ok="matches the reference", values=True)
    fb.expect(bool((out <= 1 + 1e-12).all()) and bool((out >= 0).all()),
              "a Gaussian exp(-gamma d^2) lies in [0, 1]; some of your values do not")
    # the largest entry of each row sits at the nearest centre
    nearest = (r[:, None] - mu[None, :]).abs().argmin(1)
    fb.expect(torch.equal(out.argmax(1), nearest), "each distance should light up the Gaussian whose centre is "
              "nearest to it")
    # differentiable (forces flow through the expansion)
    rr = r[:4].clone().requires_grad_(True)
    fb.expect(fn(rr, mu, gamma).requires_grad, "the output is detached from r (no gradient): forces are "
              "derivatives through this expansion; avoid .detach(), numpy and torch.tensor(...) on results")
    out32 = fn(r.float(), mu.float(), gamma)
    fb.expect(isinstance(out32, torch.Tensor) and out32.dtype == torch.float32,
              "float32 input: keep the dtype of r (no .double() inside)")


@exercise("05.cfconv", "the continuous-filter convolution")
def check_cfconv(fn, fb, seed: int = 0, expected=None):
    g = torch.Generator().manual_seed(seed)
    N, F = 6, 5
    y = torch.randn(N, F, generator=g, dtype=torch.float64)
    src = torch.tensor([1, 2, 0, 3, 4, 0, 2, 1])
    dst = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4])  # node 5 receives nothing
    edge_index = torch.stack([src, dst])
    W = torch.randn(edge_index.shape[1], F, generator=g, dtype=torch.float64)
    out = fn(y, W, edge_index)
    fb.expect(isinstance(out, torch.Tensor) and out.shape == (N, F),
              f"the output has shape {shape_of(out)}; expected {(N, F)}: one filtered feature vector per atom "
              "(use scatter_sum(..., index, num_nodes) with num_nodes = y.shape[0])", fatal=True)
    want = provider(expected)
    inputs = (y, W, edge_index)
    msg = _diagnose(out, want, "05.cfconv", inputs, _CFCONV_MISTAKES,
                    "the output differs from c_i = sum over edges (j -> i) of y_j * W_ij")
    fb.expect(close(out, want("05.cfconv", "values", *inputs), atol=1e-8, rtol=1e-6), msg, ok="matches the reference",
              values=True)
    fb.expect(close(out[5], torch.zeros(F, dtype=torch.float64), atol=1e-8, rtol=1e-6),
              "an atom without neighbours must get c_i = 0 (the empty sum)")
    # the order of the edges does not matter
    perm = torch.randperm(edge_index.shape[1], generator=g)
    fb.expect(close(fn(y, W[perm], edge_index[:, perm]), out, atol=1e-8, rtol=1e-6),
              "shuffling the list of edges (and their filters together) changed your output: do not rely on the "
              "edge order")
    # a zero filter kills the message, a filter of ones passes the neighbour's features through
    ones = torch.ones_like(W)
    fb.expect(close(fn(y, ones, edge_index)[3], y[2], atol=1e-8, rtol=1e-6),
              "with all filters equal to 1, atom 3 (whose only neighbour is atom 2) should receive exactly y_2")


@exercise("05.force_loss", "the energy + force loss")
def check_force_loss(fn, fb, seed: int = 0, expected=None):
    batch = random_molecules(seed)
    model = small_schnet(seed)
    model.train()
    rho = 0.01
    out = fn(model, batch, rho)
    fb.expect(isinstance(out, torch.Tensor) and out.dim() == 0,
              f"return one scalar tensor (the mean over the molecules of the batch), got {shape_of(out)}", fatal=True)
    fb.expect(out.requires_grad, "the loss is detached: return a tensor that depends on the model's parameters "
              "(do not call .item(), float() or .detach())", fatal=True)
    want = provider(expected)
    msg = _diagnose(out, want, "05.force_loss", (model, batch, rho), _LOSS_MISTAKES,
                    "the value differs from the mean over molecules of rho (E - Ê)^2 + (1/N) sum_i ||F_i + dÊ/dR_i||^2")
    fb.expect(close(out, want("05.force_loss", "values", model, batch, rho), atol=1e-8, rtol=1e-6), msg,
              ok="matches the reference", values=True)
    # training needs the second derivative: the loss must back-propagate into the parameters through the forces
    model.zero_grad()
    torch.manual_seed(seed)
    out = fn(model, batch, 0.0)
    try:
        out.backward()
        ok = all(p.grad is not None for p in model.interactions[0].filter_net.parameters())
        nonzero = any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())
    except RuntimeError:
        ok = nonzero = False
    fb.expect(ok and nonzero, "with rho = 0 the loss is the force term only, and backward() must reach the model's "
              "weights: compute the gradient with torch.autograd.grad(..., create_graph=True) (or "
              "course_lib.models.energy_and_forces with the model in training mode)")
    # rho must scale only the energy term
    l1, l0 = (float(torch.as_tensor(fn(model, batch, r)).detach()) for r in (1.0, 0.0))
    ref1, ref0 = (float(want("05.force_loss", "values", model, batch, r)) for r in (1.0, 0.0))
    fb.expect(abs((l1 - l0) - (ref1 - ref0)) < 1e-8 * max(1.0, abs(ref1 - ref0)),
              "changing rho changes the loss by the wrong amount: rho multiplies (E - Ê)^2 only")
    # the batch is not modified (positions are still a leaf without gradient tracking)
    fb.expect(not batch.pos.requires_grad, "your loss left batch.pos requiring gradients: differentiate a copy "
              "(pos = batch.pos.detach().requires_grad_(True) on a cloned batch) so the data set stays untouched")
