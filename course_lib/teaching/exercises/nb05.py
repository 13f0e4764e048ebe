"""Checkers of notebook 05: SchNet energies and forces of molecules.

Exercises:

- ``05.gaussian_expansion``: expand distances in Gaussians exp(-gamma (r - mu_k)^2).
- ``05.cfconv``: the continuous-filter convolution c_i = sum_j y_j o W(r_ij).
- ``05.force_loss``: the energy+force loss rho (E - Ê)^2 + (1/N) sum_i ||F_i + dÊ/dR_i||^2.
- ``05.smooth_basis``: a design exercise. A radial basis ``[E, K]`` (``K`` <= :data:`MAX_BASIS`) for a pair
  energy ``E = sum_pairs w . b(r_ij)``. Required (a case that breaks one scores 0, the broken ones named with
  their numbers): each row depends on its own distance only, the basis is zero beyond the cutoff, the energy and
  the forces are continuous when a pair crosses the cutoff, and the autograd forces are the finite-difference
  forces. Goal: a least-squares fit of hidden pair potentials reaches a relative error below :data:`BASIS_BAR`.

No reference solution is here: the expected outputs (of the correct solution and of the known mistakes)
come from the checker's ``expected`` provider (:mod:`course_lib.teaching.exercises.stored`).
"""

from __future__ import annotations

import torch

from course_lib.teaching.checks import exercise
from course_lib.teaching.exercises.common import call_student, close, expect_tensor, rng, shape_of
from course_lib.teaching.exercises.stored import provider

__all__ = ["check_gaussian_expansion", "check_cfconv", "check_force_loss", "check_smooth_basis", "random_molecules",
           "small_schnet", "pair_targets", "MAX_BASIS", "BASIS_BAR"]

#: 05.smooth_basis: the budget (basis functions = weights of the fitted pair energy) and the accuracy bar (mean
#: absolute error of the fit on test distances, relative to the mean absolute deviation of the target)
MAX_BASIS = 16
BASIS_BAR = 0.05

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


# --------------------------------------------------------------------------------------------------- 05.smooth_basis


def _switch(x):
    """1 - 10 x^3 + 15 x^4 - 6 x^5: 1 at x = 0, 0 with zero slope (and curvature) at x = 1."""
    return 1 - 10 * x**3 + 15 * x**4 - 6 * x**5


def pair_targets() -> dict[str, tuple]:
    """The pair potentials the basis is fitted to, by name: ``(energy(r) in eV, cutoff, shortest distance)``. Each
    vanishes smoothly at its cutoff, so a good basis can represent it."""
    from course_lib.simulate.particles2d import PairPotential  # the screened Coulomb pair of notebooks 01-04

    def morse(D, a, r0, rc):
        return lambda r: D * ((1 - torch.exp(-a * (r - r0))) ** 2 - 1) * _switch((r / rc).clamp(max=1.0))

    yukawa = PairPotential(cutoff=3.0)
    return {
        "Morse bond (r0 = 1.2 Å, r_c = 5 Å)": (morse(1.0, 1.5, 1.2, 5.0), 5.0, 0.7),
        "Morse bond (r0 = 1.5 Å, r_c = 4 Å)": (morse(2.0, 2.0, 1.5, 4.0), 4.0, 0.9),
        "screened Coulomb + core of notebook 01 (r_c = 3)": (lambda r: yukawa.energy(r, -1.0), 3.0, 0.65),
    }


def _basis(fb, fn, r, cutoff, what, k=None, grad=False):
    """The student's basis on distances ``r`` as ``[E, K]``; prerequisites recorded on failure only."""
    out = call_student(fb, fn, (r, cutoff), f"smooth_basis on {what}")
    if not isinstance(out, torch.Tensor):
        expect_tensor(fb, out, "smooth_basis")
    ok = out.dim() == 2 and out.shape[0] == r.shape[0] and 0 < out.shape[1] <= MAX_BASIS
    if not ok or (k is not None and out.shape[1] != k):
        budget = f" (the budget is {MAX_BASIS} functions)" if out.dim() == 2 and out.shape[1] > MAX_BASIS else ""
        fb.expect(False, f"return one row of K basis values per distance, shape ({r.shape[0]}, K) with K <= "
                  f"{MAX_BASIS} (the same K every time); got {shape_of(out)} on {what}{budget}", fatal=True)
    if not bool(torch.isfinite(out).all()):
        fb.expect(False, f"the basis has NaN or inf on {what}", fatal=True)
    if grad and not out.requires_grad:
        fb.expect(False, "the basis is not differentiable with autograd (no gradient reaches r): the forces are "
                  "-dE/dr, so compute it with torch operations on r (no .detach(), .numpy() or .item())", fatal=True)
    return out if grad else out.detach().to(torch.float64)


def _cluster_energy(fn, fb, pos, cutoff, w, k):
    """E = sum over pairs i < j closer than the cutoff of w . b(r_ij) (the neighbour list drops the others)."""
    i, j = torch.triu_indices(len(pos), len(pos), 1)
    r = (pos[i] - pos[j]).norm(dim=-1)
    near = r < cutoff
    return (_basis(fb, fn, r[near], cutoff, "the pairs of a cluster", k, grad=pos.requires_grad) @ w).sum()


def _smoothness(fn, fb, cutoff, k, seed) -> list[str]:
    """The required properties; the names (with numbers) of those the basis breaks."""
    broken = []
    grid = torch.linspace(0.5, 2 * cutoff, 301, dtype=torch.float64)
    full = _basis(fb, fn, grid, cutoff, "distances from 0.5 to 2 r_c", k)
    scale = max(1e-12, float(full.abs().max()))
    perm = torch.randperm(len(grid), generator=rng(seed))
    err = max(float((_basis(fb, fn, grid[perm], cutoff, "the same distances shuffled", k) - full[perm]).abs().max()),
              float((_basis(fb, fn, grid[100:101], cutoff, "a single distance", k) - full[100:101]).abs().max()))
    if err > 1e-10 * scale:
        broken.append(f"each row must depend on its own distance only (the rows change by {err:.1e} when the other "
                      "distances change: no normalisation over the edges)")
    beyond = float(full[grid >= cutoff].abs().max())
    if beyond > 1e-12 * scale:
        broken.append(f"the basis is not zero beyond the cutoff (up to {beyond:.1e}, relative {beyond / scale:.1e}): "
                      "multiply by an envelope that is zero for r >= r_c (torch.where(r < cutoff, ..., 0))")
    delta = 1e-6 * cutoff
    edge = torch.tensor([cutoff - delta], dtype=torch.float64, requires_grad=True)
    inside = _basis(fb, fn, edge, cutoff, "a distance just inside the cutoff", k, grad=True)
    slope = torch.stack([torch.autograd.grad(inside[0, m], edge, retain_graph=True)[0][0] for m in range(k)])
    r = grid[grid < cutoff].clone().requires_grad_(True)
    values = _basis(fb, fn, r, cutoff, "distances inside the cutoff", k, grad=True)
    slope_scale = max(float(torch.autograd.grad(values[:, m].sum(), r, retain_graph=True)[0].abs().max())
                      for m in range(k)) / scale  # the typical slope of a basis function
    jump = float(inside.detach().abs().max()) / scale
    kink = float(slope.abs().max()) / (scale * max(slope_scale, 1e-12))
    if jump > 1e-4:
        broken.append(f"the energy jumps when a pair crosses the cutoff: the basis is {jump:.1e} (relative to its "
                      "largest value) just inside r_c and 0 beyond; it must go to zero at r_c")
    elif kink > 1e-3:
        broken.append(f"the forces jump when a pair crosses the cutoff: the slope of the basis just inside r_c is "
                      f"{kink:.1e} of its typical slope (the energy is continuous, its derivative is not); use an "
                      "envelope with zero slope at r_c (e.g. (cos(pi r / r_c) + 1) / 2, or a polynomial)")
    g = rng(seed + 1)  # 8 atoms on a jittered cube of side 0.72 r_c: none closer than 0.4 r_c, some pairs beyond
    corners = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=torch.float64)
    pos = (corners * 0.45 + (torch.rand(8, 3, generator=g, dtype=torch.float64) - 0.5) * 0.2) * cutoff * 1.6
    pos.requires_grad_(True)
    w = torch.randn(k, generator=g, dtype=torch.float64)
    forces = -torch.autograd.grad(_cluster_energy(fn, fb, pos, cutoff, w, k), pos)[0]
    h, fd = 1e-5, torch.zeros_like(forces)
    with torch.no_grad():
        for a in range(pos.shape[0]):
            for c in range(3):
                step = torch.zeros_like(pos)
                step[a, c] = h
                fd[a, c] = -(_cluster_energy(fn, fb, pos + step, cutoff, w, k)
                             - _cluster_energy(fn, fb, pos - step, cutoff, w, k)) / (2 * h)
    err = float((forces - fd).abs().max()) / max(1e-12, float(fd.abs().max()))
    if err > 1e-5:
        broken.append(f"the autograd forces of E = sum_pairs w . b(r_ij) differ from finite differences by {err:.1e} "
                      "(relative): the basis is not a smooth function of r everywhere inside the cutoff")
    return broken


@exercise("05.smooth_basis", "design: a radial basis that ends smoothly at the cutoff and fits pair energies")
def check_smooth_basis(fn, fb, seed: int = 0, targets: tuple = ("Morse bond (r0 = 1.2 Å, r_c = 5 Å)",),
                       expected=None):
    """Required properties first (a case that breaks one scores 0, naming each with its number), then the goal:
    a least-squares fit of each target pair potential on 400 distances reaches a mean absolute error on 300 other
    (random) distances below :data:`BASIS_BAR` of the target's mean absolute deviation."""
    table = pair_targets()
    cutoff = table[targets[0]][1]
    first = _basis(fb, fn, torch.linspace(0.5, cutoff, 5, dtype=torch.float64), cutoff, "five distances")
    k = first.shape[1]
    fb.expect(True, "", ok=f"{k} basis functions (budget {MAX_BASIS})", fatal=True)
    broken = _smoothness(fn, fb, cutoff, k, seed)
    fb.expect(not broken, f"the design breaks a required property ({'; '.join(broken)}): whatever its accuracy, "
              "such a basis is not a solution, and this case scores 0", fatal=True,
              ok="zero beyond r_c, energy and forces continuous at r_c, forces = finite differences")
    for name in targets:
        target, rc, r_min = table[name]
        train = torch.linspace(r_min, rc, 400, dtype=torch.float64)
        test = r_min + (rc - r_min) * torch.rand(300, generator=rng(seed + 2), dtype=torch.float64)
        B = _basis(fb, fn, train, rc, f"the fit of the {name}", k)
        w = torch.linalg.lstsq(B, target(train)[:, None], rcond=None).solution
        y = target(test)
        rel = float((_basis(fb, fn, test, rc, f"the test of the {name}", k) @ w).squeeze(1).sub(y).abs().mean()
                    / (y - y.mean()).abs().mean())
        fb.expect(rel < BASIS_BAR, f"missed the accuracy bar on the {name}: the least-squares fit with your {k} "
                  f"functions has a relative mean absolute error of {rel:.3f} on test distances, the bar is "
                  f"{BASIS_BAR} (more functions, or functions that resolve the short distances, where the potential "
                  "is steep)", ok=f"fits the {name} (relative error {rel:.3f} < {BASIS_BAR})", values=True)
